import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseAgentConfig } from '../config/agent-config.ts';
import { leanConfigObject, resolveObjects } from './config-objects.ts';
import { peerRules } from './peer-objects.ts';

const config = parseAgentConfig(
  {
    pools: [{ name: 'default', addresses: ['203.0.113.0/28'] }],
    bgp: { asn: 65001, peers: [{ address: '192.0.2.1', asn: 65000 }] },
  },
  'test',
);
const obj = (name: string, spec: unknown, generation = 1) =>
  leanConfigObject({
    metadata: { name, uid: `uid-${name}`, generation, creationTimestamp: '2026-12-02T00:00:00Z' },
    spec,
  });
const rules = peerRules({ bgp: true, bfdSection: false });
const resolve = (objects: ReturnType<typeof obj>[], lastValid = new Map()) =>
  resolveObjects(config.bgp!.peers, objects, lastValid, rules);

test('peers from objects join the file’s, with the file’s schema and defaults', () => {
  const r = resolve([obj('core-b', { address: '192.0.2.2', asn: 65000, holdTime: 30 })]);
  assert.deepEqual(
    r.values.map((p) => [p.address, p.asn, p.port, p.holdTime, p.bfd]),
    [
      ['192.0.2.1', 65000, 179, 9, undefined],
      ['192.0.2.2', 65000, 179, 30, false],
    ],
  );
  assert.deepEqual(r.verdicts[0]!.message, 'in force: 192.0.2.2 AS65000');
});

test('refused, named: a bad field, a keepalive not below the hold time, an address taken, MD5, BFD; the last valid one kept', () => {
  const r = resolve([
    obj('bad-asn', { address: '192.0.2.3', asn: 0 }),
    obj('keepalive', { address: '192.0.2.4', asn: 65000, holdTime: 9, keepaliveInterval: 9 }),
    obj('taken', { address: '192.0.2.1', asn: 65000 }),
    obj('md5', { address: '192.0.2.5', asn: 65000, passwordFile: '/etc/secret' }),
    obj('bfd', { address: '192.0.2.6', asn: 65000, bfd: true }),
  ]);
  const why = Object.fromEntries(r.verdicts.map((v) => [v.name, `${v.reason}: ${v.message}`]));
  assert.match(why['bad-asn']!, /^Invalid: spec\.asn: must be an AS number/);
  assert.match(why.keepalive!, /^Invalid: spec\.keepaliveInterval: must be below holdTime 9 \(got 9\)/);
  assert.match(why.taken!, /^Conflict: spec\.address: 192\.0\.2\.1 is already a peer/);
  assert.match(why.md5!, /^Invalid: spec\.passwordFile: a TCP MD5 peer goes in the agent configuration/);
  assert.match(why.bfd!, /^Invalid: spec\.bfd: BFD toward a peer from an object is not supported/);
  assert.deepEqual(
    r.values.map((p) => p.address),
    ['192.0.2.1'],
  );
  const good = resolve([obj('b', { address: '192.0.2.2', asn: 65000 })]);
  const broken = resolve([obj('b', { address: '192.0.2.2', asn: 0 }, 2)], good.lastValid);
  assert.deepEqual(
    broken.values.map((p) => p.address),
    ['192.0.2.1', '192.0.2.2'],
  );
  assert.equal(broken.verdicts[0]!.kept, true);
});

test('without a bgp section, a peer object is refused saying what is missing', () => {
  const r = resolveObjects(
    [],
    [obj('b', { address: '192.0.2.2', asn: 65000 })],
    new Map(),
    peerRules({ bgp: false, bfdSection: false }),
  );
  assert.match(r.verdicts[0]!.message, /no bgp section/);
});
