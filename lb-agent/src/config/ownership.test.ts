import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type AddressBlock, parseAddressBlock } from '../net/pool.ts';
import { PoolRegistry } from './ownership.ts';

const block = (text: string) => parseAddressBlock(text) as AddressBlock;
const pool = (name: string, ...blocks: string[]) => ({ name, blocks: blocks.map(block) });

test('ownership follows the pools in force: a pool added owns at once, a removed one until the process ends', () => {
  const r = new PoolRegistry([pool('a', '203.0.113.0/28')]);
  assert.equal(r.owns('203.0.113.5'), true);
  assert.equal(r.owns('198.51.100.7'), false);
  // Asked again after the change: an answer remembered from before must not stand.
  assert.equal(r.set([pool('a', '203.0.113.0/28'), pool('b', '198.51.100.0/24')]), true);
  assert.equal(r.owns('198.51.100.7'), true);
  assert.equal(r.set([pool('b', '198.51.100.0/24')]), true);
  assert.equal(r.owns('203.0.113.5'), true, 'retired, still owned: the data plane removes what it put there');
  assert.equal(r.owns('203.0.113.99'), false);
  assert.equal(r.owns('fd00::1'), false);
});
