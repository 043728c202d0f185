import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TimeSlicer } from './slicer.ts';

test('a time slicer yields to the event loop only once its budget is used, and then lets timers run', async () => {
  let t = 0;
  const slicer = new TimeSlicer(8, () => t);
  let fired = false;
  setImmediate(() => (fired = true));
  t = 7;
  await slicer.pause();
  assert.equal(slicer.yields, 0);
  assert.equal(fired, false, 'within the budget: no yield');
  t = 9;
  await slicer.pause();
  assert.equal(slicer.yields, 1);
  assert.equal(fired, true, 'the event loop ran');
  t = 16;
  await slicer.pause();
  assert.equal(slicer.yields, 1, 'the budget restarts at the yield');
  const never = new TimeSlicer(Number.POSITIVE_INFINITY, () => t);
  t = 1e9;
  await never.pause();
  assert.equal(never.yields, 0);
});
