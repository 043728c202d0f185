// Address pools as Kubernetes objects (PortlbAddressPool, cluster-scoped), applied while
// the agent runs. The decision is pure: the configuration file's pools, then the objects
// in creation order, each checked with the file's rules (the same schema, overlaps, names
// taken). An object that fails is refused with the reason; one that was valid before
// keeps its last valid spec in force (a typo never takes addresses away from Services).
import { checkPool, type Pool, parsePoolFields } from '../config/agent-config.ts';
import { ConfigError } from '../config/validate.ts';
import type { Json } from './client.ts';

export const ADDRESS_POOLS = {
  group: 'portlb.io',
  version: 'v1alpha1',
  plural: 'portlbaddresspools',
  kind: 'PortlbAddressPool',
} as const;
export const ADDRESS_POOLS_PATH = `/apis/${ADDRESS_POOLS.group}/${ADDRESS_POOLS.version}/${ADDRESS_POOLS.plural}`;

/** What the agent keeps of a PortlbAddressPool. */
export interface LeanPoolObject {
  name: string;
  uid: string;
  generation: number;
  createdAt: string;
  spec: Json;
  /** Its Accepted condition as last written (so that an unchanged verdict is not rewritten). */
  accepted:
    | { status: string; reason: string; message: string; observedGeneration: number; since: string }
    | undefined;
}

export function leanPoolObject(raw: Json): LeanPoolObject {
  const m = raw?.metadata ?? {};
  const c = (Array.isArray(raw?.status?.conditions) ? raw.status.conditions : []).find(
    (x: Json) => x?.type === 'Accepted',
  );
  return {
    name: String(m.name ?? ''),
    uid: String(m.uid ?? ''),
    generation: Number(m.generation ?? 0),
    createdAt: String(m.creationTimestamp ?? ''),
    spec: raw?.spec && typeof raw.spec === 'object' ? raw.spec : {},
    accepted: c
      ? {
          status: String(c.status),
          reason: String(c.reason ?? ''),
          message: String(c.message ?? ''),
          observedGeneration: Number(c.observedGeneration ?? 0),
          since: String(c.lastTransitionTime ?? ''),
        }
      : undefined,
  };
}

export interface PoolVerdict {
  name: string;
  uid: string;
  generation: number;
  accepted: boolean;
  /** Accepted, Invalid (the spec), Conflict (a name taken, an overlap). */
  reason: 'Accepted' | 'Invalid' | 'Conflict';
  message: string;
  /** Refused, but its last valid spec stays in force. */
  kept: boolean;
}

/** The last valid pool of each object (by uid), carried from one resolution to the next. */
export type LastValidPools = ReadonlyMap<string, { generation: number; pool: Pool }>;

export interface PoolResolution {
  pools: Pool[];
  verdicts: PoolVerdict[];
  lastValid: Map<string, { generation: number; pool: Pool }>;
}

export function resolvePools(
  filePools: readonly Pool[],
  objects: readonly LeanPoolObject[],
  lastValid: LastValidPools,
): PoolResolution {
  const pools: Pool[] = [...filePools];
  const verdicts: PoolVerdict[] = [];
  const next = new Map<string, { generation: number; pool: Pool }>();
  const ordered = [...objects].sort((a, b) =>
    a.createdAt === b.createdAt ? a.name.localeCompare(b.name) : a.createdAt < b.createdAt ? -1 : 1,
  );
  for (const o of ordered) {
    const where = `PortlbAddressPool ${o.name}`;
    let problems: string[];
    let reason: PoolVerdict['reason'] = 'Invalid';
    let pool: Pool | undefined;
    try {
      const fields = parsePoolFields({ ...o.spec, name: o.name }, where);
      const checked = checkPool(fields, pools, ['spec']);
      problems = [...checked.problems, ...checked.conflicts];
      pool = checked.pool;
      if (!checked.problems.length && checked.conflicts.length) reason = 'Conflict';
    } catch (err) {
      problems = err instanceof ConfigError ? err.problems : [String(err)];
    }
    const base = { name: o.name, uid: o.uid, generation: o.generation };
    if (pool && !problems.length) {
      pools.push(pool);
      next.set(o.uid, { generation: o.generation, pool });
      verdicts.push({
        ...base,
        accepted: true,
        reason: 'Accepted',
        message: `in force: ${pool.blocks.map((b) => b.text).join(', ')}`,
        kept: false,
      });
      continue;
    }
    // The last valid spec stays, unless it now clashes itself (with a pool that came first).
    const last = lastValid.get(o.uid);
    const lastOk =
      last &&
      !checkPool({ ...last.pool, addresses: last.pool.blocks.map((b) => b.text) }, pools, []).conflicts
        .length;
    if (last && lastOk) {
      pools.push(last.pool);
      next.set(o.uid, last);
    }
    verdicts.push({
      ...base,
      accepted: false,
      reason,
      message: `${problems.join('; ')}${last && lastOk ? `: the last valid spec (generation ${last.generation}) stays in force` : ''}`,
      kept: !!(last && lastOk),
    });
  }
  return { pools, verdicts, lastValid: next };
}

/** The status write for a verdict, or undefined when the object already says it. */
export function acceptedCondition(o: LeanPoolObject, v: PoolVerdict, now: string): Json | undefined {
  const status = v.accepted ? 'True' : 'False';
  const cur = o.accepted;
  if (
    cur &&
    cur.status === status &&
    cur.reason === v.reason &&
    cur.message === v.message &&
    cur.observedGeneration === v.generation
  )
    return undefined;
  return {
    status: {
      conditions: [
        {
          type: 'Accepted',
          status,
          reason: v.reason,
          message: v.message,
          observedGeneration: v.generation,
          lastTransitionTime: cur?.status === status && cur.since ? cur.since : now,
        },
      ],
    },
  };
}
