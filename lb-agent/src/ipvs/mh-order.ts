// One destination order for every mh service, whatever its history. The kernel's Maglev
// table depends on the order of the service's destination list (maglev.ts), and the
// kernel puts each added destination at the head of that list: replicas that added the
// same backends in different orders (one while running, one after a restart, drains and
// restores in between) build different tables and send a flow that ECMP moves between
// them to different backends. Here, the list is kept in a canonical order: sorted by
// address and port from head to tail. A destination is moved by deleting it and adding it
// again in the same batch: the kernel finds it in its trash and keeps its connections.
import { ipToBigInt } from '../net/ip.ts';
import { canonicalDestinationId as destinationId } from './normalize.ts';
import type { DestinationKey } from './types.ts';

/** The canonical position key: family, address (fixed-width hex), port. */
const orderKey = (d: DestinationKey): string =>
  `${d.family}|${ipToBigInt(d.address).toString(16).padStart(32, '0')}|${d.port.toString(16).padStart(4, '0')}`;

/**
 * Desired destination lists are kept from pass to pass while their service is unchanged:
 * each is sorted once, not on every full pass (half of a converged plan's time at 10,000
 * services was this sort and its keys).
 */
const sorted = new WeakMap<readonly DestinationKey[], readonly DestinationKey[]>();

/** The canonical list order (head first). The result is shared: never modify it. */
export function canonicalOrder<T extends DestinationKey>(dests: readonly T[]): readonly T[] {
  const known = sorted.get(dests);
  if (known) return known as readonly T[];
  const keyed = dests.map((d) => [orderKey(d), d] as const);
  keyed.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const order = keyed.map(([, d]) => d);
  sorted.set(dests, order);
  return order;
}

export interface MhOrderPlan<T> {
  /**
   * What to insert, in this order (each insert goes to the head of the list): destinations
   * not in the kernel are added; those already there are moved (deleted, then added).
   */
  inserts: { destination: T; move: boolean }[];
}

/**
 * The fewest moves that leave the list in canonical order. Destinations that stay in
 * place keep their relative order and end up at the tail, so they must be the longest
 * suffix of the canonical order found, in order, in the current list; everything before
 * that suffix is inserted again, last first.
 *
 * `current` is the kernel's list (head first) without the destinations about to be
 * deleted; `pinned` ids (draining at weight 0, soon gone) are left where they are.
 */
export function planMhOrder<T extends DestinationKey>(
  desired: readonly T[],
  current: readonly DestinationKey[],
  pinned: ReadonlySet<string> = new Set(),
): MhOrderPlan<T> {
  const target = canonicalOrder(desired);
  const present = current.map((d) => destinationId(d)).filter((id) => !pinned.has(id));
  const here = new Set(present);
  let j = present.length - 1;
  let k = target.length;
  while (k > 0) {
    const id = destinationId(target[k - 1]!);
    if (!here.has(id)) break;
    while (j >= 0 && present[j] !== id) j--;
    if (j < 0) break;
    j--;
    k--;
  }
  const inserts: MhOrderPlan<T>['inserts'] = [];
  for (let i = k - 1; i >= 0; i--) {
    inserts.push({ destination: target[i]!, move: here.has(destinationId(target[i]!)) });
  }
  return { inserts };
}
