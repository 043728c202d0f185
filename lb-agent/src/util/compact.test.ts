import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compact } from './compact.ts';

test('compact: the same elements in a new array, which the caller may change without touching the old', () => {
  const grown: string[] = [];
  grown.push('a');
  const c = compact(grown);
  assert.deepEqual(c, ['a']);
  assert.notEqual(c, grown);
  c.push('b');
  assert.deepEqual(grown, ['a']);
  assert.deepEqual(compact([]), []);
});
