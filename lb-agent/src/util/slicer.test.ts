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

test('cheap items: the clock is read a few times per budget, not once per item', async () => {
  let t = 0;
  let reads = 0;
  const slicer = new TimeSlicer(8, () => {
    reads++;
    return t;
  });
  // 10,000 items of 1 µs: 10 ms in all, one yield.
  for (let i = 0; i < 10_000; i++) {
    t += 0.001;
    await slicer.pause();
  }
  assert.equal(slicer.yields, 1);
  assert.ok(reads < 60, `${reads} reads of the clock for 10,000 items`);
});

test('items of 1 ms: it still yields about once per budget', async () => {
  let t = 0;
  const slicer = new TimeSlicer(8, () => t);
  for (let i = 0; i < 80; i++) {
    t += 1;
    await slicer.pause();
  }
  // 80 ms of work in 8 ms budgets: 10 slices at best; a late read of the clock may merge two.
  assert.ok(slicer.yields >= 7 && slicer.yields <= 10, `${slicer.yields} yields`);
});

test('check(): yields once the budget is used, however few items passed (between steps of different kinds)', async () => {
  let t = 0;
  const slicer = new TimeSlicer(8, () => t);
  await slicer.check();
  assert.equal(slicer.yields, 0);
  t = 8;
  await slicer.check();
  assert.equal(slicer.yields, 1);
  t = 15;
  await slicer.check();
  assert.equal(slicer.yields, 1, 'the budget restarts at the yield');
});

test('background work rests between slices as long as it worked: half the event loop stays free', async () => {
  let t = 0;
  const slicer = new TimeSlicer(8, () => t, 1);
  t = 20;
  const started = performance.now();
  let immediates = 0;
  const spin = () => {
    if (performance.now() - started < 100) {
      immediates++;
      setImmediate(spin);
    }
  };
  setImmediate(spin);
  await slicer.pause();
  const rested = performance.now() - started;
  assert.equal(slicer.yields, 1);
  assert.ok(rested >= 19, `rested ${rested.toFixed(1)} ms after a 20 ms slice`);
  assert.ok(immediates > 1, 'other work ran meanwhile');
});

test("check() starts learning the items' cost again: dear items after cheap ones are not counted as cheap", async () => {
  let t = 0;
  const slicer = new TimeSlicer(8, () => t);
  // 4,000 services looked up in a map, 1 µs each: the clock is read every few hundred.
  for (let i = 0; i < 4000; i++) {
    t += 0.001;
    await slicer.pause();
  }
  const before = slicer.yields;
  await slicer.check();
  // Then chunks of a metrics exposition, 3 ms each: a yield within the budget's worth of them.
  for (let i = 0; i < 4; i++) {
    t += 3;
    await slicer.pause();
  }
  assert.ok(slicer.yields > before, 'yielded within 12 ms of dear items');
});
