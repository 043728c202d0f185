// Ownership (DESIGN.md decision 1), in one place: portlb programs, and ever deletes, only
// IPVS services and VIP addresses inside the pools of the agent's configuration. Nothing
// else widens it: not a services file, not a Service's annotation.
import type { Family } from '../net/ip.ts';
import { type AddressBlock, blockContains } from '../net/pool.ts';

export interface PoolLike {
  name: string;
  blocks: readonly AddressBlock[];
}

export type Ownership = (address: string) => boolean;

export function poolOwnership(pools: readonly PoolLike[]): Ownership {
  const blocks = pools.flatMap((p) => p.blocks);
  return (address) => blocks.some((b) => blockContains(b, address));
}

/** The pool an address belongs to. */
export function poolOf<P extends PoolLike>(pools: readonly P[], address: string): P | undefined {
  return pools.find((p) => p.blocks.some((b) => blockContains(b, address)));
}

/** Whether a block lies entirely inside the pools (a services file may not widen them). */
export function blockInsidePools(pools: readonly PoolLike[], block: AddressBlock): boolean {
  return pools.some((p) =>
    p.blocks.some((b) => b.family === block.family && b.first <= block.first && block.last <= b.last),
  );
}

export function poolFamilies(pools: readonly PoolLike[]): Set<Family> {
  return new Set(pools.flatMap((p) => p.blocks.map((b) => b.family)));
}
