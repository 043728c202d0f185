// Applies desired state to this node: IPVS sysctls, VIP addresses, IPVS services (the
// pure planner's diff, drained removals, against a state cache refreshed by full
// read-backs), and SNAT rules. Every step continues past failures and reports what
// really reached the kernel; nothing outside portlb's pools is ever changed.
import type { DesiredDelta, DesiredState } from '../core/desired.ts';
import { errorCode } from '../errors.ts';
import { type ApplyReport, applyOperations } from '../ipvs/apply.ts';
import type { IpvsClient } from '../ipvs/client.ts';
import { canonicalDestinationId, realServerSettingsEqual, serviceSettingsEqual } from '../ipvs/normalize.ts';
import { type DrainStatus, drainingServiceIds, planIpvsSliced } from '../ipvs/planner.ts';
import { IpvsStateCache } from '../ipvs/state-cache.ts';
import type {
  IpvsOperation,
  IpvsSysctls,
  IpvsTimeouts,
  KnownService,
  ServiceKey,
  ServiceSpec,
  ServiceState,
} from '../ipvs/types.ts';
import { destinationId, sameDestination, serviceId, specId } from '../ipvs/types.ts';
import type { Clock } from '../util/clock.ts';
import { type Logger, silentLogger } from '../util/log.ts';
import { TimeSlicer } from '../util/slicer.ts';
import type { NetfilterManager, NetfilterRules, NetfilterWrite, PortRule } from './netfilter.ts';
import type { AddressManager, AddressSyncResult } from './vips.ts';

export interface DataPlaneOptions {
  ipvs: IpvsClient;
  addresses: AddressManager;
  netfilter: NetfilterManager;
  /** Whether new traffic to a VIP is limited to its service ports. */
  vipFilter: boolean;
  /** Whether NAT-mode services get SNAT rules (ipvs.snat none: replies route back by other means). */
  snat: boolean;
  /** Pools: the only addresses portlb programs or removes. */
  owns: (address: string) => boolean;
  drainTimeoutMs: number;
  /** IPVS connection timeouts to keep (seconds; 0 or absent: the kernel's). */
  timeouts?: Partial<IpvsTimeouts>;
  clock: Clock;
  logger?: Logger;
  /** How long a pass's own work may hold the event loop before it yields (ms; default 8). */
  sliceMs?: number;
}

/**
 * The kernel's table read outside a pass (the periodic full read-back), so that changes
 * need not wait for it: at 1,000 services it took 3 s in UML, and every change queued
 * behind it. `since` is the data plane's write generation when the read began.
 */
export interface ReadBack {
  table: KnownService[];
  since: number;
}

/** The steps of a pass, in order: desired state, then the data plane's, then BGP. */
export const PASS_STAGES = [
  'desired',
  'read',
  'sysctl',
  'netfilter',
  'vips',
  'plan',
  'ipvs',
  'announce',
] as const;
export type PassStage = (typeof PASS_STAGES)[number];
type DataPlaneStage = Exclude<PassStage, 'desired' | 'announce'>;

export interface PassFailure {
  step: 'sysctl' | 'vips' | 'ipvs' | 'netfilter' | 'read';
  code: string;
  message: string;
}

/**
 * What a pass knows about one desired IPVS service in the kernel. `unknown` (the kernel
 * could not be read, or the write path itself failed) is never taken for `not-programmed`:
 * announcements stay as they were until a pass knows.
 */
export type Outcome = 'programmed' | 'not-programmed' | 'unknown';

export interface ServiceOutcome {
  outcome: Outcome;
  /** Real servers with weight > 0 in the kernel (0 unless programmed). */
  usable: number;
}

export interface DataPlaneReport {
  full: boolean;
  /**
   * Only the services a desired state's delta named were planned (and the draining ones);
   * the others' outcomes are the last pass's.
   */
  incremental: boolean;
  /** IPVS operations that reached the kernel, by kind. */
  applied: Record<IpvsOperation['op'], number>;
  failures: PassFailure[];
  /** Per desired IPVS service id (after an incremental pass, the last pass's map, updated). */
  services: Map<string, ServiceOutcome>;
  /** Services this node had programmed that a read-back found missing (someone else deleted them). */
  vanished: string[];
  draining: DrainStatus[];
  vips: AddressSyncResult;
  /** What the pass wrote of portlb's netfilter rules. */
  netfilter: NetfilterWrite;
  /** Milliseconds spent in each step (where the pass's time went). */
  stages: Partial<Record<PassStage, number>>;
  foreign: number;
  /** mh destinations moved (deleted and added again) into the canonical list order. */
  moved: number;
}

/**
 * The same IPVS service as configured: settings, and real servers in the same order with the
 * same settings (the cache keeps the kernel's order; connection counts are not compared).
 */
function sameConfiguration(a: KnownService, b: KnownService): boolean {
  if (a === b) return true;
  if (!serviceSettingsEqual(a.service, b.service) || a.destinations.length !== b.destinations.length)
    return false;
  return a.destinations.every((d, i) => {
    const e = b.destinations[i]!;
    return sameDestination(d, e) && realServerSettingsEqual(d, e);
  });
}

/** Real servers with weight > 0 (counted every pass for every service: no array made). */
function usableCount(destinations: KnownService['destinations']): number {
  let n = 0;
  for (const d of destinations) if (d.weight > 0) n++;
  return n;
}

const emptyApplied = (): DataPlaneReport['applied'] => ({
  'add-service': 0,
  'update-service': 0,
  'delete-service': 0,
  'add-destination': 0,
  'update-destination': 0,
  'delete-destination': 0,
});

/** The sysctls a desired state needs (DESIGN.md decisions 6 and 9, kube-proxy's choices). */
export function wantedSysctls(desired: DesiredState): Partial<IpvsSysctls> {
  const anyMh = desired.virtualServices.some((v) => v.spec.service.scheduler === 'mh');
  return {
    // NAT-mode SNAT needs conntrack entries for IPVS connections.
    ...(desired.virtualServices.some((v) => v.snat) ? { conntrack: 1 } : {}),
    // A flow whose backend is gone is reset at once instead of black-holed.
    expire_nodest_conn: 1,
    expire_quiescent_template: 1,
    // With mh, a replica accepts a flow that started on another one (ECMP changes).
    ...(anyMh ? { sloppy_tcp: 1, sloppy_sctp: 1 } : {}),
    // A new connection that reuses a client port is scheduled afresh instead of going to
    // the old connection's backend, also for tunnel/dr connections the LB last saw in
    // FIN_WAIT (it never sees the replies): a drained backend gets no new connections.
    conn_reuse_mode: 2,
  };
}

/**
 * One rule object per desired virtual service (those are the same objects pass after pass
 * while their Service is unchanged): the rule lists then come out element for element the
 * same, which the netfilter backend checks before anything else.
 */
const portRules = new WeakMap<DesiredState['virtualServices'][number], PortRule | null>();

/** The SNAT rules and the VIP filter a desired state needs. */
export function netfilterRules(
  desired: DesiredState,
  o: { vipFilter: boolean; snat: boolean },
): NetfilterRules {
  const rule = (v: DesiredState['virtualServices'][number]): PortRule | undefined => {
    let r = portRules.get(v);
    if (r === undefined) {
      const k = v.spec.service.key;
      r =
        k.kind === 'address'
          ? { vip: k.address, family: k.family, port: k.port, protocol: k.protocol }
          : null;
      portRules.set(v, r);
    }
    return r ?? undefined;
  };
  const all = (list: DesiredState['virtualServices']) => list.map(rule).filter((r): r is PortRule => !!r);
  return {
    snat: o.snat ? all(desired.virtualServices.filter((v) => v.snat)) : [],
    filter: o.vipFilter ? all(desired.virtualServices) : [],
    notrack: all(desired.virtualServices.filter((v) => v.notrack)),
  };
}

export class DataPlane {
  private readonly o: DataPlaneOptions;
  private readonly log: Logger;
  private readonly cache = new IpvsStateCache();
  private loaded = false;
  /** Write generation: one per pass; what a pass wrote or read is stamped with it. */
  private generation = 0;
  /** A pass is running (the reconciler runs one at a time). */
  private passing = false;
  /** The running pass is a full one (it resets the cache: a read-back begun meanwhile is void). */
  private fullPassing = false;
  /** Monotonic: when the cache was last as good as a full read (a full pass's end, a clean verify). */
  private verifiedAt: number | undefined;
  /** The generation of the last full reset of the cache. */
  private resetGeneration = 0;
  /** Per service id: the last generation that wrote (or read) it. */
  private touched = new Map<string, number>();
  /** The sysctls and timeouts last found or made as wanted. */
  private settingsChecked: string | undefined;
  /** What the last passes that were not incremental made: the VIPs (owned) and sysctls (for verify). */
  private vipsApplied: ReadonlySet<string> | undefined;
  private settingsApplied: Partial<IpvsSysctls> | undefined;
  private draining = new Map<string, number>();
  /** The specs of the last passes that were programmed, by service id (a spec object is one service id). */
  private lastProgrammed = new Map<string, ServiceSpec>();
  /**
   * The desired state the last pass applied with no failure: a state whose delta is from
   * it needs only the services the delta names (an incremental pass).
   */
  private lastDesired: DesiredState | undefined;
  /** The last pass's outcomes, and its count of foreign services (an incremental pass keeps the others). */
  private lastServices = new Map<string, ServiceOutcome>();
  private lastForeign = 0;

  constructor(options: DataPlaneOptions) {
    this.o = options;
    this.log = options.logger ?? silentLogger;
  }

  private ownsService = (key: ServiceKey): boolean => key.kind === 'address' && this.o.owns(key.address);

  /**
   * What a whole-table read keeps of a service: the cache's own object when the kernel holds
   * it as cached (at 10,000 services the read's 100,000 objects then die young instead of
   * living through the seconds of the read, for the collector to mark and compact).
   */
  private known = (s: ServiceState): KnownService => {
    const mine = this.cache.get(serviceId(s.service.key));
    return mine && sameConfiguration(mine, s) ? mine : s;
  };

  /** Reads the kernel's table while passes go on (see ReadBack); the next full pass uses it. */
  async readBack(): Promise<ReadBack> {
    // A pass writing now may write after this read has passed a service: its writes must
    // count as newer than the read (at 10,000 services a first pass writes for minutes).
    const since = this.passing ? this.generation - 1 : this.generation;
    return { table: await this.o.ipvs.getTable({ background: true }, this.known), since };
  }

  /**
   * The periodic resync's question, answered beside the passes: does the kernel still hold
   * what the last pass applied? At 10,000 services a full pass holds every change behind it
   * for seconds in UML, while the answer is almost always yes. `clean`: every portlb IPVS
   * service (settings and real servers, in the kernel's order), the VIP addresses and the
   * sysctls are as the last pass left them (what a service's pass wrote after the read began
   * is not compared); the cache counts as verified. `drift`: something differs, said in
   * `what` (a full pass repairs it). `unknown`: this cannot tell (the last pass failed, the
   * cache is not loaded, a full pass reset it since the read began or meanwhile, a read
   * failed): a full pass decides.
   */
  async verify(readBack: ReadBack): Promise<{ verdict: 'clean' | 'drift' | 'unknown'; what?: string }> {
    const reset = this.resetGeneration;
    if (!this.loaded || readBack.since < reset) return { verdict: 'unknown' };
    const slicer = new TimeSlicer(this.o.sliceMs);
    const newer = (id: string) => (this.touched.get(id) ?? 0) > readBack.since;
    const kernel = new Map<string, KnownService>();
    for (const s of readBack.table) {
      if (this.ownsService(s.service.key)) kernel.set(serviceId(s.service.key), s);
      await slicer.pause();
    }
    const drift = (what: string) =>
      // A full pass reset the cache meanwhile: what differs may be its doing.
      this.resetGeneration === reset ? { verdict: 'drift' as const, what } : { verdict: 'unknown' as const };
    for (const [id, mine] of this.cache.byId()) {
      await slicer.pause();
      if (!this.ownsService(mine.service.key) || newer(id)) continue;
      const theirs = kernel.get(id);
      if (!theirs) return drift(`IPVS service ${id} is gone`);
      if (!sameConfiguration(mine, theirs)) return drift(`IPVS service ${id} differs`);
    }
    for (const id of kernel.keys()) {
      await slicer.pause();
      if (!this.cache.get(id) && !newer(id)) return drift(`IPVS service ${id} is not portlb's doing`);
    }
    // VIP addresses and sysctls change only in passes that are not incremental: compared
    // with what the last such pass made, if none ran while they were read.
    const { vipsApplied, settingsApplied } = this;
    if (!vipsApplied || !settingsApplied) return { verdict: 'unknown' };
    let addresses: string[];
    let sysctls: IpvsSysctls;
    let timeouts: IpvsTimeouts | undefined;
    try {
      addresses = await this.o.addresses.list();
      sysctls = await this.o.ipvs.getSysctls();
      if (Object.values(this.o.timeouts ?? {}).some((v) => v)) timeouts = await this.o.ipvs.getTimeouts();
    } catch {
      return { verdict: 'unknown' };
    }
    if (this.vipsApplied !== vipsApplied || this.settingsApplied !== settingsApplied)
      return { verdict: 'unknown' };
    if (addresses.length !== vipsApplied.size || addresses.some((a) => !vipsApplied.has(a)))
      return drift('the VIP addresses differ');
    for (const [k, v] of Object.entries(settingsApplied))
      if (sysctls[k as keyof IpvsSysctls] !== v)
        return drift(`sysctl ${k} is ${sysctls[k as keyof IpvsSysctls]}`);
    for (const [k, v] of Object.entries(this.o.timeouts ?? {}))
      if (v && timeouts?.[k as keyof IpvsTimeouts] !== v) return drift(`IPVS timeout ${k} differs`);
    if (this.resetGeneration !== reset || !this.loaded) return { verdict: 'unknown' };
    this.verifiedAt = this.o.clock.monotonic();
    return { verdict: 'clean' };
  }

  /** A full pass is running: a read-back begun now would be void when it ends. */
  fullPassRunning(): boolean {
    return this.fullPassing;
  }

  /** Monotonic: the end of the last full pass that read the kernel, or of the last clean verify (undefined before the first). */
  lastVerifiedAt(): number | undefined {
    return this.verifiedAt;
  }

  /** The kernel table as this node believes it is (for status and metrics). */
  table(): KnownService[] {
    return this.cache.table();
  }

  async apply(
    desired: DesiredState,
    fullRequested: boolean,
    prefetched?: ReadBack,
  ): Promise<DataPlaneReport> {
    this.passing = true;
    this.fullPassing = fullRequested || !this.loaded;
    try {
      const report = await this.pass(desired, fullRequested, prefetched);
      // A failed read or a refused write leaves the cache unloaded: not verified.
      if (report.full && this.loaded) this.verifiedAt = this.o.clock.monotonic();
      return report;
    } finally {
      this.passing = false;
      this.fullPassing = false;
    }
  }

  private async pass(
    desired: DesiredState,
    fullRequested: boolean,
    prefetched?: ReadBack,
  ): Promise<DataPlaneReport> {
    const full = fullRequested || !this.loaded;
    const generation = ++this.generation;
    // Drains are intervals: monotonic time, whatever the wall clock does.
    const now = this.o.clock.monotonic();
    const report: DataPlaneReport = {
      full,
      incremental: false,
      applied: emptyApplied(),
      failures: [],
      services: new Map(),
      vanished: [],
      draining: [],
      vips: { added: [], removed: [], moved: [], failed: [] },
      netfilter: 'unchanged',
      stages: {},
      foreign: 0,
      moved: 0,
    };
    let stageStart = now;
    // At 10,000 services each step of a full pass is tens of milliseconds of JavaScript on a
    // fast host (ten times that in UML): the long ones yield to the event loop as they go,
    // and so does the pass between steps (their awaits of settled promises do not).
    const slicer = new TimeSlicer(this.o.sliceMs);
    /** Ends the current stage: its time is added to `stage`. */
    const lap = async (stage: DataPlaneStage) => {
      const t = this.o.clock.monotonic();
      report.stages[stage] = (report.stages[stage] ?? 0) + (t - stageStart);
      await slicer.check();
      stageStart = this.o.clock.monotonic();
    };
    const fail = (step: PassFailure['step'], err: unknown) =>
      report.failures.push({ step, code: errorCode(err), message: (err as Error).message ?? String(err) });
    // An incremental pass: only some services' backends changed since the state the last
    // pass applied; the steps that depend on nothing else (sysctls, netfilter, VIPs) are
    // as that pass left them, and IPVS plans those services and the draining ones only.
    const delta =
      !full && desired.delta && desired.delta.base === this.lastDesired ? desired.delta : undefined;
    this.lastDesired = undefined;
    report.incremental = !!delta;
    const specs = delta ? this.deltaSpecs(desired, delta) : desired.virtualServices.map((v) => v.spec);
    const specIds = specs.map(specId);
    /** Nothing is known about the kernel after this failure: every service is unknown, the next pass reads back. */
    const unknownAfter = (step: PassFailure['step'], err: unknown): DataPlaneReport => {
      fail(step, err);
      report.incremental = false;
      for (const v of desired.virtualServices)
        report.services.set(specId(v.spec), { outcome: 'unknown', usable: 0 });
      this.loaded = false;
      return report;
    };

    // 1. A full pass reads everything back (adopting whatever a previous run left).
    if (full) {
      try {
        // A read-back made while passes went on serves if nothing since made the cache
        // more current as a whole; services written during it keep what this pass knows.
        const usable = prefetched && this.loaded && prefetched.since >= this.resetGeneration;
        const table = usable ? prefetched.table : await this.o.ipvs.getTable(undefined, this.known);
        const keep = new Set<string>();
        if (usable) for (const [id, g] of this.touched) if (g > prefetched.since) keep.add(id);
        const fresh = new Map<string, KnownService>();
        for (const s of table) {
          fresh.set(serviceId(s.service.key), s);
          await slicer.pause();
        }
        for (const id of specIds) {
          if (this.lastProgrammed.has(id) && !fresh.has(id) && !keep.has(id)) report.vanished.push(id);
          await slicer.pause();
        }
        this.cache.reset(fresh, now, keep);
        this.resetGeneration = generation;
        this.touched.clear();
        this.loaded = true;
      } catch (err) {
        return unknownAfter('read', err);
      }
      await lap('read');
    }

    // 2. Sysctls and timeouts, only where they differ; read on full passes and when what is
    // wanted changes (an incremental pass is not worth two reads).
    const want = delta ? undefined : wantedSysctls(desired);
    const settingsKey = want && JSON.stringify([want, this.o.timeouts]);
    if (want && (full || settingsKey !== this.settingsChecked)) {
      try {
        const have = await this.o.ipvs.getSysctls();
        const change = Object.fromEntries(
          Object.entries(want).filter(([k, v]) => have[k as keyof IpvsSysctls] !== v),
        ) as Partial<IpvsSysctls>;
        if (Object.keys(change).length) {
          await this.o.ipvs.setSysctls(change);
          this.log.info({ sysctls: change }, 'set IPVS sysctls');
        }
        const timeouts = this.o.timeouts ?? {};
        if (Object.values(timeouts).some((v) => v)) {
          const current = await this.o.ipvs.getTimeouts();
          const differ = Object.fromEntries(
            Object.entries(timeouts).filter(([k, v]) => v && current[k as keyof IpvsTimeouts] !== v),
          ) as Partial<IpvsTimeouts>;
          if (Object.keys(differ).length) {
            await this.o.ipvs.setTimeouts(differ);
            this.log.info({ timeouts: differ }, 'set IPVS timeouts');
          }
        }
        this.settingsChecked = settingsKey;
        this.settingsApplied = want;
      } catch (err) {
        this.settingsApplied = undefined;
        fail('sysctl', err);
      }
      await lap('sysctl');
    }

    // 3. portlb's netfilter rules, before the VIP addresses: a new VIP is never reachable on
    // a host listener's port, and NAT-mode replies have their SNAT from the first packet.
    if (!delta) {
      try {
        report.netfilter = await this.o.netfilter.apply(netfilterRules(desired, this.o));
      } catch (err) {
        fail('netfilter', err);
      }
      await lap('netfilter');
    }

    // 4. VIP addresses: present before the IPVS services they serve.
    if (!delta) {
      this.vipsApplied = undefined;
      try {
        const wanted = desired.vips.map((v) => v.address);
        report.vips = await this.o.addresses.sync(wanted, this.o.owns, { reread: full });
        for (const f of report.vips.failed)
          report.failures.push({ step: 'vips', code: f.code, message: `${f.address}: ${f.message}` });
        if (!report.vips.failed.length) this.vipsApplied = new Set(wanted);
      } catch (err) {
        fail('vips', err);
      }
      await lap('vips');
    }

    // 5. IPVS: the pure diff, applied per object.
    // A spec object seen last pass and programmed then is what the kernel holds: the planner
    // skips it (a 1% change costs 1% of the work), unless one of its backends is draining.
    const unchanged = full
      ? undefined
      : (spec: ServiceSpec) => this.lastProgrammed.get(specId(spec)) === spec;
    const draining = drainingServiceIds(this.draining);
    // Whether a removed backend is idle decides between draining and deleting it: read
    // its connection counts from the kernel, not from the cache (which only a full pass
    // refreshes). Draining backends are removed ones, so this also refreshes them.
    try {
      for (const [i, spec] of specs.entries()) {
        if (full || (unchanged?.(spec) && !draining.has(specIds[i]!))) continue;
        const cached = this.cache.get(specIds[i]!);
        if (!cached) continue;
        const wanted = new Set(spec.destinations.map(canonicalDestinationId));
        if (cached.destinations.some((d) => !wanted.has(destinationId(d)))) {
          this.cache.setDestinations(specIds[i]!, await this.o.ipvs.listDestinations(cached.service.key));
          this.touched.set(specIds[i]!, generation);
        }
      }
    } catch (err) {
      return unknownAfter('read', err);
    }
    const plan = await planIpvsSliced(
      {
        desired: specs,
        actual: this.cache.byId(),
        owns: this.ownsService,
        now,
        draining: this.draining,
        drainTimeoutMs: this.o.drainTimeoutMs,
        unchanged,
        partial: !!delta,
      },
      () => slicer.pause(),
    );
    report.foreign = delta ? this.lastForeign : plan.foreign;
    this.lastForeign = report.foreign;
    report.moved = plan.moved;
    await lap('plan');
    let result: ApplyReport;
    try {
      result = await applyOperations(this.o.ipvs, plan.operations);
    } catch (err) {
      // The transport failed mid-batch: what reached the kernel is not known.
      return unknownAfter('ipvs', err);
    }
    await lap('ipvs');
    this.cache.record(result);
    for (const op of [...result.applied, ...result.failed.map((f) => f.op)])
      this.touched.set(
        serviceId(op.op === 'add-service' || op.op === 'update-service' ? op.service.key : op.key),
        generation,
      );
    if (delta) {
      // Every draining service was planned: the plan's bookkeeping is whole, but keep any
      // entry of a service it did not plan rather than forget a drain.
      const planned = new Set(specIds);
      for (const [k, since] of this.draining)
        if (!planned.has(k.slice(0, k.indexOf('|'))) && !plan.draining.has(k)) plan.draining.set(k, since);
    }
    this.draining = plan.draining;
    report.draining = plan.drainingNow;
    for (const op of result.applied) report.applied[op.op]++;
    const notCreated = new Set<string>();
    for (const f of result.failed) {
      const key = f.op.op === 'add-service' || f.op.op === 'update-service' ? f.op.service.key : f.op.key;
      if (f.op.op === 'add-service') notCreated.add(serviceId(key));
      report.failures.push({ step: 'ipvs', code: f.error.code, message: f.error.message });
    }
    for (const r of plan.refused) {
      notCreated.add(serviceId(r.key));
      report.failures.push({ step: 'ipvs', code: 'NOT_OWNED', message: `${serviceId(r.key)}: ${r.reason}` });
    }
    // An incremental pass knows the others' outcomes from the pass before (nothing touched
    // them), and updates that pass's map in place: a copy of 10,000 entries cost about 50 ms a
    // pass in UML (under the profiler). A report's outcomes are therefore current until the next pass.
    if (delta) report.services = this.lastServices;
    else this.lastProgrammed = new Map();
    for (const [i, s] of specs.entries()) {
      await slicer.pause();
      const id = specIds[i]!;
      const state = notCreated.has(id) ? undefined : this.cache.get(id);
      report.services.set(
        id,
        state
          ? { outcome: 'programmed', usable: usableCount(state.destinations) }
          : { outcome: 'not-programmed', usable: 0 },
      );
      if (state) this.lastProgrammed.set(id, s);
      else this.lastProgrammed.delete(id);
    }
    this.lastServices = report.services;

    // After a refused IPVS write the cache may be wrong: the next pass reads the kernel back.
    if (report.failures.some((f) => f.step === 'ipvs')) this.loaded = false;
    if (!report.failures.length) this.lastDesired = desired;
    return report;
  }

  /** An incremental pass's services: those whose spec the delta names, and those draining. */
  private deltaSpecs(desired: DesiredState, delta: DesiredDelta): ServiceSpec[] {
    const specs = new Map<string, ServiceSpec>();
    for (const at of delta.services) {
      const spec = desired.virtualServices[at]!.spec;
      specs.set(specId(spec), spec);
    }
    for (const id of drainingServiceIds(this.draining)) {
      const spec = specs.has(id) ? undefined : this.lastProgrammed.get(id);
      if (spec) specs.set(id, spec);
    }
    return [...specs.values()];
  }
}
