import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ApiLane, type LaneWork } from './lane.ts';

/** Work that finishes when told to; records that it ran. */
function gated(key: string, droppable: boolean, ran: string[], what = key) {
  let open!: () => void;
  const gate = new Promise<void>((r) => {
    open = r;
  });
  const work: LaneWork = {
    key,
    what,
    droppable,
    run: async () => {
      ran.push(what);
      await gate;
    },
  };
  return { work, open };
}

test('the lane: bounded concurrency, one call per key, the latest queued work of a key wins', async () => {
  const ran: string[] = [];
  const lane = new ApiLane({ concurrency: 2 });
  const a = gated('a', false, ran, 'a1');
  const b = gated('b', false, ran);
  const c = gated('c', false, ran);
  lane.submit(a.work);
  lane.submit(b.work);
  lane.submit(c.work);
  assert.deepEqual(ran, ['a1', 'b']);
  // A second status of a: waits for the running one (one call per key), and a third replaces it.
  const a2 = gated('a', false, ran, 'a2');
  const a3 = gated('a', false, ran, 'a3');
  lane.submit(a2.work);
  lane.submit(a3.work);
  a.open();
  await new Promise((r) => setImmediate(r));
  // c was queued first; a3 waits for a free call, and a2 never runs.
  assert.deepEqual(ran, ['a1', 'b', 'c']);
  b.open();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(ran, ['a1', 'b', 'c', 'a3']);
  c.open();
  a3.open();
  await lane.idle();
  assert.equal(lane.stats.done, 4);
});

test('the lane: a full queue drops Events first (counted), never a status write', async () => {
  const ran: string[] = [];
  const lane = new ApiLane({ concurrency: 1, maxQueue: 3 });
  const busy = gated('busy', false, ran);
  lane.submit(busy.work);
  const opens: (() => void)[] = [busy.open];
  const submit = (key: string, droppable: boolean) => {
    const g = gated(key, droppable, ran);
    opens.push(g.open);
    lane.submit(g.work);
  };
  submit('status-1', false);
  submit('event-1', true);
  submit('status-2', false);
  // Full: the queued Event goes for the new status write.
  submit('status-3', false);
  // Full of status writes: a new Event is the one dropped.
  submit('event-2', true);
  assert.equal(lane.stats.dropped, 2);
  assert.equal(lane.pending, 4);
  // At 10,000 Events (a first pass at 10,000 Services) the lane stays bounded.
  for (let i = 0; i < 10_000; i++) submit(`event-x${i}`, true);
  assert.equal(lane.pending, 4);
  assert.equal(lane.stats.dropped, 10_002);
  for (let i = 0; i < 4; i++) {
    for (const open of opens) open();
    await new Promise((r) => setImmediate(r));
  }
  await lane.idle();
  assert.deepEqual(ran, ['busy', 'status-1', 'status-2', 'status-3']);
});

test('the lane: a call past its deadline is aborted and counted', async () => {
  const lane = new ApiLane({ deadlineMs: 20 });
  lane.submit({
    key: 'slow',
    what: 'slow',
    droppable: false,
    run: (signal) =>
      new Promise((_, reject) => signal.addEventListener('abort', () => reject(new Error('aborted')))),
  });
  await lane.idle();
  assert.deepEqual(lane.stats, { done: 0, failed: 1, timedOut: 1, dropped: 0 });
});
