// Configuration as Kubernetes objects (PortlbAddressPool, PortlbBgpPeer), applied while
// the agents run. One rule for every kind: the configuration file's entries first, then
// the objects in creation order (the older wins a conflict), each checked with the
// file's own rules; a refused object that was valid keeps its last valid spec in force
// (a typo never takes away what live traffic uses); the leader writes each verdict as
// the object's Accepted condition, with an Event when one is refused or recovers.
import { ConfigError } from '../config/validate.ts';
import type { Clock } from '../util/clock.ts';
import { type Logger, silentLogger } from '../util/log.ts';
import type { KubeEvent } from './allocator.ts';
import type { Json, KubeClient } from './client.ts';
import type { LaneWork } from './lane.ts';
import { Reflector } from './reflector.ts';
import type { KubeWriter } from './writer.ts';

export interface ConfigKind {
  kind: 'PortlbAddressPool' | 'PortlbBgpPeer';
  plural: string;
  /** The option that turns watching it off. */
  option: string;
}

export const CONFIG_GROUP_VERSION = 'portlb.io/v1alpha1';
export const configKindPath = (k: ConfigKind) => `/apis/${CONFIG_GROUP_VERSION}/${k.plural}`;

/** What the agent keeps of such an object. */
export interface LeanConfigObject {
  name: string;
  uid: string;
  generation: number;
  createdAt: string;
  spec: Json;
  /** Its Accepted condition as last written (an unchanged verdict is not rewritten). */
  accepted:
    | { status: string; reason: string; message: string; observedGeneration: number; since: string }
    | undefined;
}

export function leanConfigObject(raw: Json): LeanConfigObject {
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

export interface Verdict {
  name: string;
  uid: string;
  generation: number;
  accepted: boolean;
  /** Accepted, Invalid (the spec itself), Conflict (with what came before it). */
  reason: 'Accepted' | 'Invalid' | 'Conflict';
  message: string;
  /** Refused, but its last valid spec stays in force. */
  kept: boolean;
}

/** One kind's rules, the configuration file's own. */
export interface ObjectRules<T> {
  /** An object checked alone (`invalid`) and against what is in force before it (`conflicts`). */
  check(
    o: LeanConfigObject,
    before: readonly T[],
  ): { value: T | undefined; invalid: string[]; conflicts: string[] };
  /** The conflicts a last valid value has now with what came before it. */
  conflicts(value: T, before: readonly T[]): string[];
  describe(value: T): string;
}

export type LastValid<T> = ReadonlyMap<string, { generation: number; value: T }>;

export interface Resolution<T> {
  values: T[];
  verdicts: Verdict[];
  lastValid: Map<string, { generation: number; value: T }>;
}

export function resolveObjects<T>(
  base: readonly T[],
  objects: readonly LeanConfigObject[],
  lastValid: LastValid<T>,
  rules: ObjectRules<T>,
): Resolution<T> {
  const values: T[] = [...base];
  const verdicts: Verdict[] = [];
  const next = new Map<string, { generation: number; value: T }>();
  const ordered = [...objects].sort((a, b) =>
    a.createdAt === b.createdAt ? a.name.localeCompare(b.name) : a.createdAt < b.createdAt ? -1 : 1,
  );
  for (const o of ordered) {
    let checked: { value: T | undefined; invalid: string[]; conflicts: string[] };
    try {
      checked = rules.check(o, values);
    } catch (err) {
      // The schema's paths are the spec's own: said as the object's fields.
      const invalid =
        err instanceof ConfigError
          ? err.problems.map((p) => (p.startsWith('(top level)') ? `spec${p.slice(11)}` : `spec.${p}`))
          : [String(err)];
      checked = { value: undefined, invalid, conflicts: [] };
    }
    const base = { name: o.name, uid: o.uid, generation: o.generation };
    const problems = [...checked.invalid, ...checked.conflicts];
    if (checked.value !== undefined && !problems.length) {
      values.push(checked.value);
      next.set(o.uid, { generation: o.generation, value: checked.value });
      verdicts.push({
        ...base,
        accepted: true,
        reason: 'Accepted',
        message: `in force: ${rules.describe(checked.value)}`,
        kept: false,
      });
      continue;
    }
    // The last valid spec stays, unless it now conflicts itself with what came first.
    const last = lastValid.get(o.uid);
    const keep = last !== undefined && !rules.conflicts(last.value, values).length;
    if (keep) {
      values.push(last.value);
      next.set(o.uid, last);
    }
    verdicts.push({
      ...base,
      accepted: false,
      reason: checked.invalid.length ? 'Invalid' : 'Conflict',
      message: `${problems.join('; ')}${keep ? `: the last valid spec (generation ${last.generation}) stays in force` : ''}`,
      kept: keep,
    });
  }
  return { values, verdicts, lastValid: next };
}

/** The status write for a verdict, or undefined when the object already says it. */
export function acceptedCondition(o: LeanConfigObject, v: Verdict, now: string): Json | undefined {
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

export interface ConfigObjectsOptions<T> {
  kind: ConfigKind;
  client: KubeClient;
  /** The reflector's timing and logging, as the controller's other informers. */
  reflector: { clock: Clock; backoffInitialMs?: number; backoffMaxMs?: number };
  /** The configuration file's entries, in force before any object. */
  base: readonly T[];
  rules: ObjectRules<T>;
  onChange: () => void;
  logger?: Logger;
}

/** One kind's objects: watched, resolved when they change, their verdicts written by the leader. */
export class ConfigObjects<T> {
  readonly kind: ConfigKind;
  readonly reflector: Reflector<LeanConfigObject>;
  private readonly o: ConfigObjectsOptions<T>;
  private readonly log: Logger;
  private generation = 0;
  private resolvedGeneration = -1;
  private lastValid: LastValid<T> = new Map();
  private verdicts_: Verdict[] = [];
  private readonly logged = new Set<string>();

  constructor(o: ConfigObjectsOptions<T>) {
    this.o = o;
    this.kind = o.kind;
    this.log = o.logger ?? silentLogger;
    this.reflector = new Reflector<LeanConfigObject>({
      ...o.reflector,
      client: o.client,
      logger: this.log,
      name: o.kind.plural,
      path: configKindPath(o.kind),
      transform: leanConfigObject,
      key: (x) => x.name,
      onChange: () => {
        this.generation++;
        o.onChange();
      },
    });
  }

  get verdicts(): readonly Verdict[] {
    return this.verdicts_;
  }

  /** Why the objects cannot be listed, with what to do when the CRD is missing. */
  lastError(): string | undefined {
    const e = this.reflector.lastError;
    if (!e) return undefined;
    return /404|NotFound/.test(e)
      ? `${e} (the ${this.kind.kind} CRD is not installed: apply the chart, or set ${this.kind.option}: false)`
      : e;
  }

  /** The values in force when the objects changed since the last call; undefined otherwise. */
  resolve(): T[] | undefined {
    if (this.resolvedGeneration === this.generation) return undefined;
    this.resolvedGeneration = this.generation;
    const r = resolveObjects(this.o.base, this.reflector.list(), this.lastValid, this.o.rules);
    this.lastValid = r.lastValid;
    this.verdicts_ = r.verdicts;
    for (const v of r.verdicts) {
      const key = `${v.uid}|${v.generation}|${v.accepted}|${v.message}`;
      if (this.logged.has(key)) continue;
      this.logged.add(key);
      const fields = { [this.kind.kind]: v.name, generation: v.generation };
      if (v.accepted) this.log.info(fields, `${this.kind.kind} ${v.message}`);
      else this.log.warn({ ...fields, reason: v.reason }, `${this.kind.kind} refused: ${v.message}`);
    }
    return r.values;
  }

  /** Leader: each Accepted condition where it differs, and an Event when one is refused or recovers. */
  writeVerdicts(
    submit: (work: LaneWork) => void,
    event: (ev: KubeEvent) => void,
    writer: KubeWriter,
    now: string,
  ): void {
    for (const v of this.verdicts_) {
      const o = this.reflector.get(v.name);
      if (!o || o.uid !== v.uid) continue;
      const patch = acceptedCondition(o, v, now);
      if (!patch) continue;
      submit({
        key: `status|${this.kind.plural}|${v.name}`,
        what: `status of ${this.kind.kind} ${v.name}`,
        droppable: false,
        run: (signal) => writer.objectStatus(configKindPath(this.kind), v.name, patch, signal),
      });
      if (!v.accepted || o.accepted?.status === 'False')
        event({
          service: { kind: this.kind.kind, namespace: '', name: v.name, uid: v.uid },
          type: v.accepted ? 'Normal' : 'Warning',
          reason: `${this.kind.kind.replace(/^Portlb(Address|Bgp)?/, '')}${v.accepted ? 'Accepted' : 'Refused'}`,
          message: v.message,
        });
    }
  }
}
