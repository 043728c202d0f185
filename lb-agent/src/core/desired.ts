// Desired state as a pure function of a snapshot: which IPVS services with which real
// servers, which VIP addresses, which announcements, and a reason for everything left
// out. No I/O, no clock: the same snapshot always gives the same answer.
import { serviceSettingsEqual } from '../ipvs/normalize.ts';
import type { RealServer, ServiceSpec } from '../ipvs/types.ts';
import { type Family, ipFamily } from '../net/ip.ts';
import { compact } from '../util/compact.ts';
import type {
  Endpoint,
  HealthTarget,
  HealthView,
  NodeInfo,
  PortIntent,
  ServiceIntent,
  Skip,
  WithholdReason,
} from './types.ts';

export interface DesiredConfig {
  /** The ownership predicate: addresses inside portlb's pools. */
  owns: (address: string) => boolean;
}

export interface DesiredVirtualService {
  owner: string;
  vip: string;
  spec: ServiceSpec;
  /** NAT to backends anywhere needs the LB's source address on the way in. */
  snat: boolean;
  /**
   * Tunnel and dr flows are kept out of conntrack: the LB sees one direction only, so
   * their entries stay unreplied for minutes, and with net.ipv4.vs.conntrack=1 (which
   * NAT's SNAT needs) IPVS drops a new SYN that reuses such an entry's client port: a
   * one-second stall for 1.5% of new connections in the lab (none untracked).
   */
  notrack: boolean;
  /** Real servers with weight > 0. */
  usable: number;
}

export interface DesiredVip {
  address: string;
  family: Family;
  owners: string[];
  /** Whether this node should announce it (the reconciler also requires it programmed). */
  announce: boolean;
  withheld: WithholdReason | undefined;
}

export interface DesiredState {
  virtualServices: DesiredVirtualService[];
  vips: DesiredVip[];
  skipped: Skip[];
  warnings: { service: string; message: string }[];
  /** Backends this node must probe (services with a health check, selected endpoints). */
  checks: HealthTarget[];
  /** Present when this state differs from the one handed out before it only as it says. */
  delta?: DesiredDelta;
}

/**
 * kube-proxy's choice: ready endpoints; when there are none, the serving ones that are
 * terminating (so connections drain to pods on their way out instead of failing).
 */
export function selectEndpoints(endpoints: readonly Endpoint[]): Endpoint[] {
  const ready = endpoints.filter((e) => e.ready);
  if (ready.length) return ready;
  return endpoints.filter((e) => e.serving && e.terminating);
}

function selected(intent: ServiceIntent, port: PortIntent, family: Family, node: NodeInfo): Endpoint[] {
  let candidates = port.endpoints.filter((e) => e.family === family);
  // Local: only this node's pods, which route their replies back through us (no SNAT).
  if (intent.trafficPolicy === 'Local') candidates = candidates.filter((e) => e.nodeName === node.name);
  return selectEndpoints(candidates);
}

/**
 * A health-checked backend serves only once its check passes: pending (not probed yet) and
 * down are weight 0, so new connections go elsewhere and open ones drain (keepalived's
 * inhibit_on_failure). Without a health view (`portlb ipvs`), checks are not applied.
 */
function healthyWeight(
  intent: ServiceIntent,
  e: Endpoint,
  weight: number,
  health: HealthView | undefined,
): number {
  if (!intent.healthCheck || !health) return weight;
  return health.state(intent.id, e.address, e.port) === 'up' ? weight : 0;
}

function realServers(
  intent: ServiceIntent,
  endpoints: readonly Endpoint[],
  health: HealthView | undefined,
): RealServer[] {
  return endpoints.map((e) => ({
    family: e.family,
    address: e.address,
    port: e.port,
    forward: intent.forwarding,
    weight: healthyWeight(intent, e, intent.weights?.get(`${e.address}|${e.port}`) ?? 1, health),
    upperThreshold: 0,
    lowerThreshold: 0,
    ...(intent.forwarding === 'tunnel' ? { tunnelType: 'ipip' as const } : {}),
  }));
}

/**
 * mh always gets mh-fallback (flag-1): without it, a new flow that hashes to a drained
 * (weight 0) backend finds no destination at all and fails; with it, the kernel re-hashes
 * it to an available one, the same way on every replica, while the open connections of
 * the drained backend carry on.
 */
export function schedulerFlagsFor(
  intent: Pick<ServiceIntent, 'scheduler' | 'schedulerFlags'>,
): ServiceIntent['schedulerFlags'] {
  if (intent.scheduler !== 'mh' || intent.schedulerFlags.includes('flag-1')) return intent.schedulerFlags;
  return compact([...intent.schedulerFlags, 'flag-1'].sort() as ServiceIntent['schedulerFlags']);
}

/** What one service contributes; depends only on the intent, the node and its backends' health. */
interface IntentResult {
  virtualServices: DesiredVirtualService[];
  vips: { address: string; family: Family; usable: boolean; onlyRemote: boolean; unhealthy: boolean }[];
  warnings: string[];
  checks: HealthTarget[];
}

function desiredForIntent(
  intent: ServiceIntent,
  node: NodeInfo,
  health: HealthView | undefined,
): IntentResult {
  const out: IntentResult = { virtualServices: [], vips: [], warnings: [...intent.warnings], checks: [] };
  const checked = new Set<string>();
  for (const vip of intent.vips) {
    const family = ipFamily(vip)!;
    let usable = 0;
    let onlyRemote = false;
    let candidates = 0;
    for (const port of intent.ports) {
      const endpoints = selected(intent, port, family, node);
      candidates += endpoints.length;
      if (intent.healthCheck) {
        for (const e of endpoints) {
          const key = `${e.address}|${e.port}`;
          if (checked.has(key)) continue;
          checked.add(key);
          out.checks.push({
            service: intent.id,
            address: e.address,
            family: e.family,
            port: e.port,
            spec: intent.healthCheck,
          });
        }
      }
      const destinations = realServers(intent, endpoints, health);
      if (intent.forwarding !== 'nat') {
        for (const d of destinations) {
          if (d.port !== port.port) {
            out.warnings.push(
              `${intent.forwarding} forwarding cannot change ports: backend ${d.address} listens on ${d.port}, the service on ${port.port}; traffic arrives on ${port.port}`,
            );
          }
        }
      }
      const spec: ServiceSpec = {
        service: {
          key: { kind: 'address', family, protocol: port.protocol, address: vip, port: port.port },
          scheduler: intent.scheduler,
          schedulerFlags: schedulerFlagsFor(intent),
          onePacket: false,
          persistence: intent.persistence && {
            timeout: intent.persistence.timeout,
            prefix: Math.min(intent.persistence.prefix ?? 128, family === 'ipv4' ? 32 : 128),
          },
          persistenceEngine: undefined,
        },
        destinations,
      };
      const n = destinations.filter((d) => d.weight > 0).length;
      usable += n;
      if (intent.trafficPolicy === 'Local' && n === 0) {
        onlyRemote ||= selectEndpoints(port.endpoints.filter((e) => e.family === family)).length > 0;
      }
      out.virtualServices.push({
        owner: intent.id,
        vip,
        spec,
        snat: intent.forwarding === 'nat' && intent.trafficPolicy === 'Cluster',
        notrack: intent.forwarding === 'tunnel' || intent.forwarding === 'dr',
        usable: n,
      });
    }
    out.vips.push({
      address: vip,
      family,
      usable: usable > 0,
      onlyRemote: onlyRemote && usable === 0,
      // Backends there, every one failing (or not yet passing) its check.
      unhealthy: !!intent.healthCheck && usable === 0 && candidates > 0,
    });
  }
  // Kept in the memo until the service changes: at their own length (util/compact.ts).
  return {
    virtualServices: compact(out.virtualServices),
    vips: compact(out.vips),
    warnings: out.warnings,
    checks: compact(out.checks),
  };
}

/**
 * Memo of per-service results for one node: a caller that hands in the same (unchanged)
 * intent objects pass after pass gets them back without recomputation. Results are the
 * same with or without it.
 */
export class DesiredMemo {
  /** What an intent alone decides (whatever the node): its first bad VIP, its port claims. */
  readonly statics = new WeakMap<ServiceIntent, { badVip: string | undefined; claims: string[] }>();
  private nodeKey = '';
  private results = new WeakMap<ServiceIntent, { result: IntentResult; health: number }>();

  forNode(node: NodeInfo): WeakMap<ServiceIntent, { result: IntentResult; health: number }> {
    const key = `${node.name}|${node.excluded}|${node.ready}`;
    if (key !== this.nodeKey) {
      this.nodeKey = key;
      this.results = new WeakMap();
    }
    return this.results;
  }
}

/** What the owners of one VIP say about it, gathered over its services. */
interface VipFacts {
  family: Family;
  owners: string[];
  usable: boolean;
  onlyRemote: boolean;
  unhealthy: boolean;
  announceable: boolean;
}

/** Whether this node announces a VIP, and why not: the one place of this rule. */
function desiredVip(address: string, e: VipFacts, node: NodeInfo): DesiredVip {
  let withheld: WithholdReason | undefined;
  if (node.excluded) withheld = 'NodeExcluded';
  else if (!node.ready) withheld = 'NodeNotReady';
  else if (!e.announceable) withheld = 'AnnounceDisabled';
  else if (!e.usable)
    withheld = e.onlyRemote ? 'NoLocalEndpoints' : e.unhealthy ? 'NoHealthyBackends' : 'NoReadyBackends';
  return { address, family: e.family, owners: e.owners, announce: withheld === undefined, withheld };
}

const addFacts = (e: VipFacts, v: IntentResult['vips'][number], intent: ServiceIntent): void => {
  e.usable ||= v.usable;
  e.onlyRemote ||= v.onlyRemote;
  e.unhealthy ||= v.unhealthy;
  e.announceable ||= intent.announce;
};

/** Where each service's share of a desired state lies, for DesiredTracker's patches. */
interface DesiredIndex {
  node: NodeInfo;
  /** Per service in the state: its intent, its result, and the position of its first virtual service. */
  byId: Map<string, { intent: ServiceIntent; result: IntentResult; vs: number }>;
  /** Position of each VIP in `vips`. */
  vipAt: Map<string, number>;
  /** The health-checked services, with the health version their result was computed at. */
  checked: Map<string, number>;
  /** Services left out here (bad or foreign address, no ports, a port conflict): for their own VIPs and ports, never their backends. */
  skipped: Set<string>;
}

export function computeDesired(
  snapshot: { services: readonly ServiceIntent[]; health?: HealthView },
  node: NodeInfo,
  config: DesiredConfig,
  memo?: DesiredMemo,
): DesiredState {
  return computeIndexed(snapshot, node, config, memo).state;
}

function computeIndexed(
  snapshot: { services: readonly ServiceIntent[]; health?: HealthView },
  node: NodeInfo,
  config: DesiredConfig,
  memo?: DesiredMemo,
): { state: DesiredState; index: DesiredIndex } {
  const virtualServices: DesiredVirtualService[] = [];
  const checks: HealthTarget[] = [];
  const skipped: Skip[] = [];
  const warnings: DesiredState['warnings'] = [];
  const vipOwners = new Map<string, VipFacts>();
  const index: DesiredIndex = {
    node,
    byId: new Map(),
    vipAt: new Map(),
    checked: new Map(),
    skipped: new Set(),
  };
  const taken = new Map<string, string>();
  const cache = memo?.forNode(node);

  const intents = [...snapshot.services].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const staticsOf = (intent: ServiceIntent) => {
    let s = memo?.statics.get(intent);
    if (!s) {
      s = {
        badVip: intent.vips.find((v) => !ipFamily(v)),
        claims: compact(
          intent.vips.flatMap((vip) => intent.ports.map((p) => `${vip}|${p.protocol}|${p.port}`)),
        ),
      };
      memo?.statics.set(intent, s);
    }
    return s;
  };
  for (const intent of intents) {
    const { badVip, claims } = staticsOf(intent);
    if (badVip !== undefined) {
      index.skipped.add(intent.id);
      skipped.push({
        service: intent.id,
        reason: 'InvalidAddress',
        detail: `${JSON.stringify(badVip)} is not an IP address`,
      });
      continue;
    }
    const outside = intent.vips.filter((v) => !config.owns(v));
    if (outside.length) {
      index.skipped.add(intent.id);
      skipped.push({
        service: intent.id,
        reason: 'AddressOutsidePools',
        detail: `${outside.join(', ')} outside portlb's pools: not ours to program`,
      });
      continue;
    }
    if (!intent.ports.length) {
      index.skipped.add(intent.id);
      skipped.push({ service: intent.id, reason: 'NoPorts', detail: 'the service has no ports' });
      continue;
    }
    // Two services on one VIP may not claim the same port and protocol: the first (by name) keeps it.
    const clash = claims.find((c) => taken.has(c));
    if (clash) {
      const [vip, protocol, port] = clash.split('|');
      index.skipped.add(intent.id);
      skipped.push({
        service: intent.id,
        reason: 'PortConflict',
        detail: `${protocol}/${port} on ${vip} is already used by ${taken.get(clash)}`,
      });
      continue;
    }
    for (const c of claims) taken.set(c, intent.id);

    const { health } = snapshot;
    const healthVersion = intent.healthCheck && health ? health.version(intent.id) : 0;
    const hit = cache?.get(intent);
    let result = hit?.health === healthVersion ? hit.result : undefined;
    if (!result) {
      result = desiredForIntent(intent, node, health);
      cache?.set(intent, { result, health: healthVersion });
    }
    index.byId.set(intent.id, { intent, result, vs: virtualServices.length });
    if (intent.healthCheck) index.checked.set(intent.id, healthVersion);
    for (const w of result.warnings) warnings.push({ service: intent.id, message: w });
    virtualServices.push(...result.virtualServices);
    checks.push(...result.checks);
    for (const v of result.vips) {
      let entry = vipOwners.get(v.address);
      if (!entry) {
        // Made with its first owner, the array is its size (pushed into from empty: 17 slots).
        entry = {
          family: v.family,
          owners: [intent.id],
          usable: false,
          onlyRemote: false,
          unhealthy: false,
          announceable: false,
        };
        vipOwners.set(v.address, entry);
      } else entry.owners.push(intent.id);
      addFacts(entry, v, intent);
    }
  }

  const vips: DesiredVip[] = [];
  for (const [address, e] of vipOwners) {
    index.vipAt.set(address, vips.length);
    vips.push(desiredVip(address, e, node));
  }
  return { state: { virtualServices, vips, skipped, warnings, checks }, index };
}

/**
 * What a desired state changed from the one handed out before it (`base`), when only
 * some services' backends changed: the positions (the same in both) of the virtual
 * services whose spec changed and of those services' VIPs. Everything else is the same
 * object in both.
 */
export interface DesiredDelta {
  base: DesiredState;
  services: readonly number[];
  vips: readonly number[];
}

/**
 * A desired state kept from pass to pass, so that a change to some services' endpoints
 * costs those services' work instead of every service's: at 10,000 Services the whole
 * computation, and each step of a pass after it that walks every service, made an
 * EndpointSlice change's pass take about 100 ms on the host and 1.5-3 s in UML.
 * `full` computes everything (and remembers where each service lies); `patch` takes
 * intents that differ from the last ones only in their endpoints and returns the state
 * with a delta, or undefined when it cannot (the caller then computes in full).
 */
export class DesiredTracker {
  private last: { state: DesiredState; index: DesiredIndex } | undefined;

  /** `snapshot.skipped`: services left out before (by translation), listed first. */
  full(
    snapshot: { services: readonly ServiceIntent[]; health?: HealthView; skipped?: readonly Skip[] },
    node: NodeInfo,
    config: DesiredConfig,
    memo?: DesiredMemo,
  ): DesiredState {
    const last = computeIndexed(snapshot, node, config, memo);
    if (snapshot.skipped?.length) last.state.skipped = [...snapshot.skipped, ...last.state.skipped];
    this.last = last;
    return last.state;
  }

  patch(changed: readonly ServiceIntent[], node: NodeInfo, health?: HealthView): DesiredState | undefined {
    const last = this.last;
    if (!last || !sameNode(last.index.node, node)) return undefined;
    const { index } = last;
    const { byId, vipAt, checked } = index;
    // A health result changed for a checked service: its weights and VIP may differ.
    if (checked.size && (!health || [...checked].some(([id, v]) => health.version(id) !== v)))
      return undefined;
    const base = last.state;
    let virtualServices: DesiredVirtualService[] | undefined;
    const services: number[] = [];
    const touchedVips = new Set<number>();
    const updates: [string, { intent: ServiceIntent; result: IntentResult; vs: number }][] = [];
    for (const intent of changed) {
      const before = byId.get(intent.id);
      if (!before) {
        if (index.skipped.has(intent.id)) continue;
        return undefined;
      }
      if (before.intent === intent) continue;
      if (intent.healthCheck || before.intent.healthCheck) return undefined;
      const result = desiredForIntent(intent, node, health);
      if (!sameShape(before.result, result)) return undefined;
      virtualServices ??= base.virtualServices.slice();
      for (const [k, v] of result.virtualServices.entries()) {
        virtualServices[before.vs + k] = v;
        services.push(before.vs + k);
      }
      for (const v of result.vips) touchedVips.add(vipAt.get(v.address)!);
      updates.push([intent.id, { intent, result, vs: before.vs }]);
    }
    for (const [id, entry] of updates) byId.set(id, entry);
    const vips = updates.length ? base.vips.slice() : base.vips;
    const vipChanges: number[] = [];
    for (const at of touchedVips) {
      const old = base.vips[at]!;
      const facts: VipFacts = {
        family: old.family,
        owners: old.owners,
        usable: false,
        onlyRemote: false,
        unhealthy: false,
        announceable: false,
      };
      for (const owner of old.owners) {
        const { intent, result } = byId.get(owner)!;
        for (const v of result.vips) if (v.address === old.address) addFacts(facts, v, intent);
      }
      const now = desiredVip(old.address, facts, node);
      vipChanges.push(at);
      if (now.announce !== old.announce || now.withheld !== old.withheld) vips[at] = now;
    }
    const state: DesiredState = {
      virtualServices: virtualServices ?? base.virtualServices,
      vips,
      skipped: base.skipped,
      warnings: base.warnings,
      checks: base.checks,
      delta: { base, services, vips: vipChanges },
    };
    this.last = { state, index: last.index };
    return state;
  }
}

const sameNode = (a: NodeInfo, b: NodeInfo) =>
  a.name === b.name && a.excluded === b.excluded && a.ready === b.ready;

/**
 * The same virtual services (key, IPVS settings, SNAT and tracking), VIPs and warnings:
 * only the backends differ, so the sysctls, netfilter rules and VIP addresses they need
 * are the same too.
 */
function sameShape(a: IntentResult, b: IntentResult): boolean {
  return (
    a.virtualServices.length === b.virtualServices.length &&
    a.virtualServices.every((v, i) => {
      const w = b.virtualServices[i]!;
      const k = v.spec.service.key;
      const l = w.spec.service.key;
      return (
        v.vip === w.vip &&
        serviceSettingsEqual(v.spec.service, w.spec.service) &&
        v.snat === w.snat &&
        v.notrack === w.notrack &&
        k.kind === 'address' &&
        l.kind === 'address' &&
        k.address === l.address &&
        k.port === l.port &&
        k.protocol === l.protocol
      );
    }) &&
    a.vips.length === b.vips.length &&
    a.vips.every((v, i) => v.address === b.vips[i]!.address) &&
    a.warnings.length === b.warnings.length &&
    a.warnings.every((w, i) => w === b.warnings[i]) &&
    a.checks.length === 0 &&
    b.checks.length === 0
  );
}
