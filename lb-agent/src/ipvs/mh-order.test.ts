import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { canonicalOrder, planMhOrder } from './mh-order.ts';
import { type DestinationKey, destinationId } from './types.ts';

const d = (address: string, port = 80): DestinationKey => ({
  family: address.includes(':') ? 'ipv6' : 'ipv4',
  address,
  port,
});
const ids = (list: readonly DestinationKey[]) => list.map(destinationId);

/** What the kernel's list becomes: moved ones leave their place, every insert goes to the head. */
function apply(
  current: DestinationKey[],
  plan: ReturnType<typeof planMhOrder<DestinationKey>>,
): DestinationKey[] {
  let list = [...current];
  for (const { destination, move } of plan.inserts) {
    if (move) list = list.filter((x) => destinationId(x) !== destinationId(destination));
    list.unshift(destination);
  }
  return list;
}

test('canonical order: numeric by address, then port; IPv4 before IPv6', () => {
  assert.deepEqual(ids(canonicalOrder([d('10.0.0.10'), d('fd00::1'), d('10.0.0.9', 81), d('10.0.0.9')])), [
    '10.0.0.9:80',
    '10.0.0.9:81',
    '10.0.0.10:80',
    '[fd00::1]:80',
  ]);
});

test('a list already in canonical order needs nothing', () => {
  const all = [d('10.0.0.1'), d('10.0.0.2'), d('10.0.0.3')];
  assert.deepEqual(planMhOrder(all, all).inserts, []);
});

test('a new backend costs as many moves as there are backends before it', () => {
  const have = [d('10.0.0.2'), d('10.0.0.4'), d('10.0.0.6')];
  const first = planMhOrder([...have, d('10.0.0.1')], have);
  assert.deepEqual(
    first.inserts.map((i) => [destinationId(i.destination), i.move]),
    [['10.0.0.1:80', false]],
  );
  const middle = planMhOrder([...have, d('10.0.0.5')], have);
  assert.deepEqual(
    middle.inserts.map((i) => [destinationId(i.destination), i.move]),
    [
      ['10.0.0.5:80', false],
      ['10.0.0.4:80', true],
      ['10.0.0.2:80', true],
    ],
  );
});

test('any history, any desired set: the list ends in canonical order; pinned (draining) ones stay put', () => {
  const pool = Array.from({ length: 12 }, (_, i) => d(`10.0.${i % 3}.${i}`));
  fc.assert(
    fc.property(
      fc.shuffledSubarray(pool),
      fc.subarray(pool),
      fc.subarray(pool, { maxLength: 2 }),
      (current, desiredRaw, pinnedRaw) => {
        const pinnedIds = new Set(
          ids(pinnedRaw.filter((p) => current.includes(p) && !desiredRaw.includes(p))),
        );
        const desired = desiredRaw;
        const plan = planMhOrder(desired, current, pinnedIds);
        const result = apply(current, plan);
        const unpinned = result.filter((x) => !pinnedIds.has(destinationId(x)) && desired.includes(x));
        assert.deepEqual(ids(unpinned), ids(canonicalOrder(desired)));
        // Nothing moved that did not have to: a second plan is empty.
        assert.deepEqual(planMhOrder(desired, unpinned).inserts, []);
      },
    ),
    { numRuns: Number(process.env.PORTLB_FUZZ_RUNS ?? 2000) },
  );
});
