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

/**
 * The pools in force, which PortlbAddressPool objects change while the agent runs. What
 * a removed pool held stays owned until the process ends, so that the data plane still
 * removes what it programmed there (the leader renumbers its Services first); a restart
 * forgets it (`portlb cleanup` takes what is left).
 */
export class PoolRegistry<P extends PoolLike = PoolLike> {
  private current: readonly P[];
  private retired: AddressBlock[] = [];
  private version_ = 0;
  /**
   * Answers of `owns` for the pools in force: every pass asks for every VIP, and a block's
   * test parses the address (BigInt). Forgotten when the pools change, or when it grows
   * past OWNS_MEMO (addresses asked about once, e.g. from a bad annotation).
   */
  private answers = new Map<string, boolean>();

  constructor(pools: readonly P[]) {
    this.current = pools;
  }

  get pools(): readonly P[] {
    return this.current;
  }

  /** Changes with every change of the pools (memos key on it). */
  get version(): number {
    return this.version_;
  }

  /** Replaces the pools; returns whether anything changed. */
  set(pools: readonly P[]): boolean {
    const text = (ps: readonly P[]) =>
      JSON.stringify(ps, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));
    if (text(pools) === text(this.current)) return false;
    const kept = pools.flatMap((p) => p.blocks);
    for (const b of this.current.flatMap((p) => p.blocks))
      if (!kept.some((k) => k.text === b.text) && !this.retired.some((r) => r.text === b.text))
        this.retired.push(b);
    this.current = pools;
    this.version_++;
    this.answers = new Map();
    return true;
  }

  /** Inside a pool in force, or one removed while this process ran. */
  readonly owns: Ownership = (address) => {
    const known = this.answers.get(address);
    if (known !== undefined) return known;
    const owned =
      this.current.some((p) => p.blocks.some((b) => blockContains(b, address))) ||
      this.retired.some((b) => blockContains(b, address));
    if (this.answers.size >= OWNS_MEMO) this.answers = new Map();
    this.answers.set(address, owned);
    return owned;
  };
}

const OWNS_MEMO = 200_000;
