// The sync loop: one serialized, coalescing pass at a time (p-queue, concurrency 1, at
// most one queued), a minimum interval between passes, a periodic full resync (kernel
// read-back), and retry with backoff after a failed pass. Events only ask for a pass;
// nothing is applied before the source has synced.
import PQueue from 'p-queue';
import type { Advertisement, BgpSpeaker } from '../bgp/types.ts';
import type { PeerFields } from '../config/agent-config.ts';
import type { PoolRegistry } from '../config/ownership.ts';
import type { DesiredState } from '../core/desired.ts';
import type { HealthTarget, HealthView } from '../core/types.ts';
import { describeError, errorCode } from '../errors.ts';
import type { NodeStatusReport } from '../k8s/node-status.ts';
import { backoffDelay, type Clock } from '../util/clock.ts';
import { type Logger, silentLogger } from '../util/log.ts';
import { TimeSlicer } from '../util/slicer.ts';
import {
  type AnnounceOptions,
  adAddress,
  announcementsPatch,
  announcementsSliced,
  servicesByVip,
  type Withheld,
} from './announcer.ts';
import type { DataPlane, DataPlaneReport, PassFailure, ReadBack } from './data-plane.ts';
import type { AgentMetrics } from './metrics.ts';
import { type Notice, NoticeBoard } from './notices.ts';

/** How many added or removed VIPs a pass's log line names. */
const LOGGED_VIPS = 20;
/** How many of a pass's failures are logged one by one. */
const LOGGED_FAILURES = 20;

/** Whether any service's kernel state is unknown (no array of 10,000 made for it). */
function someUnknown(services: DataPlaneReport['services']): boolean {
  for (const s of services.values()) if (s.outcome === 'unknown') return true;
  return false;
}

/** Where desired state comes from: Kubernetes or a services file. */

export interface DesiredSource {
  readonly kind: 'kubernetes' | 'standalone';
  /** Starts watching; `changed` asks the loop for a pass. */
  start(changed: () => void): void;
  stop(): Promise<void>;
  /** Has a complete first view (nothing is applied before). */
  synced(): boolean;
  /** Currently connected to its origin (a lost API server keeps the last view). */
  healthy(): boolean;
  /** Why it is not healthy (a rejected file, an unreachable API server). */
  lastError?(): string | undefined;
  /** Desired state now; with the health checks' results when there are any. */
  desired(health?: HealthView): Promise<DesiredState>;
  /** Told what this node announces after a pass (Kubernetes Events). */
  announced?(vips: readonly { address: string; owners: readonly string[] }[]): Promise<void>;
  isLeader?(): boolean;
  /** An Event on a Service (Kubernetes): a health check's verdict. */
  serviceEvent?(service: string, type: 'Normal' | 'Warning', reason: string, message: string): void;
  /**
   * The BGP peers in force when the source changes them while running (PortlbBgpPeer
   * objects): false when it does not (the configuration's peers are then set at start).
   */
  watchPeers?(listener: (peers: readonly PeerFields[]) => void): boolean;
  /** The pools in force when the source changes them while running (PortlbAddressPool objects). */
  readonly pools?: PoolRegistry;
  /** Publishes what this node does for the cluster view (Kubernetes: its PortlbNodeStatus). */
  publishNodeStatus?(collect: () => Promise<NodeStatusReport>): void;
  closeNodeStatus?(o: { remove: boolean }): Promise<void>;
}

/** The health checks, as the pass drives them: what to probe, and the first probes to wait for. */
export interface HealthTargets extends HealthView {
  setTargets(targets: readonly HealthTarget[]): void;
  /** Holds new probes back until the returned function is called (the pass goes first). */
  hold(): () => void;
  hasPending(): boolean;
  firstProbes(timeoutMs: number): Promise<void>;
}

export interface ReconcilerOptions {
  source: DesiredSource;
  health?: HealthTargets;
  /** How long the first pass waits for the first probes (default 5 s). */
  healthFirstProbeMs?: number;
  dataPlane: DataPlane;
  speaker: BgpSpeaker | undefined;
  announce: Omit<AnnounceOptions, 'shuttingDown'>;
  clock: Clock;
  logger?: Logger;
  metrics?: AgentMetrics;
  minIntervalMs: number;
  resyncMs: number;
  /** How long a pass's own work may hold the event loop before it yields (ms; default 8). */
  sliceMs?: number;
  retryMaxMs: number;
  /** How often a pass runs while backends drain (their connection counts decide when they go). */
  drainCheckMs?: number;
  /** Told about every completed pass (conditions, metrics beyond the pass's own). */
  onPass?: (result: PassResult) => void;
}

export interface PassResult {
  /** Wall-clock time the pass started (for people). */
  at: number;
  durationMs: number;
  ok: boolean;
  full: boolean;
  desired: DesiredState;
  report: DataPlaneReport;
  ads: Advertisement[];
  withheld: Withheld[];
  /** VIPs kept announced although their state was unknown in this pass. */
  kept: string[];
  speakerError: string | undefined;
}

export class Reconciler {
  private readonly o: ReconcilerOptions;
  private readonly log: Logger;
  private readonly queue = new PQueue({ concurrency: 1 });
  private pendingFull = false;
  private lastEnd = Number.NEGATIVE_INFINITY;
  private lastDurationMs = 0;
  private failures = 0;
  private shuttingDown = false;
  /** Releases the hold on new probes that the running pass has. */
  private healthHold: (() => void) | undefined;
  /** The last read-back made beside the passes, for the next full pass. */
  private readBack: ReadBack | undefined;
  /** The first probes of the health checks were waited for (once, at the first pass). */
  private healthSettled = false;
  private stopped = false;
  private readonly stop = new AbortController();
  /** Full passes run to their end; and that count when the resync loop last asked for one. */
  private fullPassesDone = 0;
  private fullAskedAt = -1;
  private announced: Advertisement[] = [];
  /** The announcement options of the last pass (their change makes every VIP decided again). */
  private announceKey = '';
  /** `announced` by prefix (made again only when it changes). */
  private announcedByPrefix = new Map<string, Advertisement>();
  /** The ids of each VIP's IPVS services, for the desired state named (an incremental pass keeps them). */
  private byVip: { desired: DesiredState; map: Map<string, string[]> } | undefined;
  private readonly notices = new NoticeBoard();
  private drainTimer: AbortController | undefined;
  readonly startedAt: number;
  last: PassResult | undefined;
  /** Monotonic end of the last pass that ran to its end (whatever it found). */
  lastPassAt: number | undefined;
  /** Monotonic end of the last pass that knew the kernel's state. */
  lastKnownAt: number | undefined;
  lastSuccessAt: number | undefined;
  private passStartedAt: number | undefined;
  passes = 0;

  constructor(options: ReconcilerOptions) {
    this.o = options;
    this.log = options.logger ?? silentLogger;
    this.startedAt = options.clock.monotonic();
  }

  start(): void {
    this.o.source.start(() => this.trigger());
    this.trigger(true);
    void this.resyncLoop();
  }

  /** Asks for a pass; while one is queued, further asks join it. */
  trigger(full = false): void {
    if (this.stopped) return;
    this.pendingFull ||= full;
    if (this.queue.size > 0) return;
    // run() never rejects: every failure is caught, counted and retried there.
    void this.queue.add(() => this.run());
  }

  /** A pass is running or queued. */
  busy(): boolean {
    return this.queue.size > 0 || this.queue.pending > 0;
  }

  /** Resolves when every queued pass has run. */
  idle(): Promise<void> {
    return this.queue.onIdle();
  }

  /**
   * The periodic read-back: `resyncMs` after the last full pass, never while one runs. A
   * full pass resets the cache, so a read begun during it is void when it ends: at 10,000
   * services the first pass wrote for 43-98 s, the read-back began 10 s in, and the next
   * full pass had to read for itself (15-21 s in UML) while every change waited.
   */
  private async resyncLoop(): Promise<void> {
    const { dataPlane, resyncMs, clock } = this.o;
    const recheckMs = Math.min(1000, resyncMs);
    while (!this.stop.signal.aborted) {
      const due = (dataPlane.lastVerifiedAt() ?? this.startedAt) + resyncMs;
      try {
        await clock.sleep(Math.max(due - clock.monotonic(), recheckMs), this.stop.signal);
      } catch {
        return;
      }
      const verified = dataPlane.lastVerifiedAt();
      // Before the first full pass ends, and until the one asked for last time has run, the
      // cache is being verified already.
      if (verified === undefined || dataPlane.fullPassRunning() || this.fullPassesDone === this.fullAskedAt)
        continue;
      if (clock.monotonic() < verified + resyncMs) continue;
      // The periodic read-back runs beside the passes, and so does its comparison with what
      // the passes applied: only a difference (or doubt) takes a full pass, which every
      // change would wait behind.
      const t0 = this.o.clock.monotonic();
      try {
        const readBack = await this.o.dataPlane.readBack();
        const t1 = this.o.clock.monotonic();
        this.o.metrics?.syncStageDuration.observe({ stage: 'readback' }, (t1 - t0) / 1000);
        const { verdict, what } = await this.o.dataPlane.verify(readBack);
        this.o.metrics?.syncStageDuration.observe(
          { stage: 'verify' },
          (this.o.clock.monotonic() - t1) / 1000,
        );
        this.o.metrics?.resyncs.inc({ result: verdict });
        if (verdict === 'clean') {
          this.log.debug('resync: the kernel is as the passes left it');
          // Still a pass, through the queue (an incremental one: nothing to do, a few
          // milliseconds): liveness means passes complete, not that a resync found nothing.
          this.trigger();
          continue;
        }
        if (verdict === 'drift')
          this.log.info({ what }, 'resync: the kernel changed; a full pass repairs it');
        this.readBack = readBack;
      } catch (err) {
        // Unknown, not empty: nothing changes for it, and the full pass reads for itself.
        this.o.metrics?.errors.inc({ code: errorCode(err), step: 'read' });
        this.log.warn(
          { err: describeError(err) },
          'the kernel could not be read back; the full pass reads again',
        );
      }
      this.fullAskedAt = this.fullPassesDone;
      this.trigger(true);
    }
  }

  private async run(): Promise<void> {
    // The wait between two passes coalesces changes and keeps passes from taking the CPU:
    // never longer than the last pass took (half the time at most in passes), so a change
    // after a 1 ms incremental pass does not wait out an interval sized for full ones.
    const wait =
      this.lastEnd + Math.min(this.o.minIntervalMs, this.lastDurationMs) - this.o.clock.monotonic();
    if (wait > 0) await this.o.clock.sleep(wait, this.stop.signal).catch(() => {});
    if (this.stopped) return;
    const full = this.pendingFull;
    this.pendingFull = false;
    const started = this.o.clock.monotonic();
    this.passStartedAt = started;
    this.healthHold = this.o.health?.hold();
    try {
      await this.pass(full);
    } catch (err) {
      // A bug or an unexpected failure in the pass: the state it left is unknown, so
      // nothing is withdrawn for it; the next (full) pass finds out.
      this.failed(err, 'pass');
    } finally {
      this.healthHold?.();
      this.healthHold = undefined;
      this.passStartedAt = undefined;
      this.lastEnd = this.o.clock.monotonic();
      this.lastDurationMs = this.lastEnd - started;
      if (full) this.fullPassesDone++;
    }
  }

  /** How long the pass in progress has been running (0 when none is). */
  passRunningMs(): number {
    return this.passStartedAt === undefined ? 0 : this.o.clock.monotonic() - this.passStartedAt;
  }

  /** One pass: desired state, withdraw what must go, data plane, announce. */
  private async pass(full: boolean): Promise<void> {
    const { source, dataPlane, speaker, metrics } = this.o;
    this.o.metrics?.sourceSynced.set(source.synced() ? 1 : 0);
    if (!source.synced()) {
      this.log.debug('source not synced yet; nothing applied');
      this.lastPassAt = this.o.clock.monotonic();
      return;
    }
    const started = this.o.clock.now();
    const t0 = this.o.clock.monotonic();
    let desired: DesiredState;
    try {
      desired = await source.desired(this.o.health);
      const { health } = this.o;
      if (health) {
        health.setTargets(desired.checks);
        // A backend not probed yet is kept out (weight 0). The first pass waits for the first
        // probes instead: a restarted agent must not drain every checked backend meanwhile.
        if (!this.healthSettled && health.hasPending()) {
          // The probes this waits for must run: the pass's hold is lifted meanwhile.
          this.healthHold?.();
          await health.firstProbes(this.o.healthFirstProbeMs ?? 5000);
          this.healthHold = health.hold();
          desired = await source.desired(this.o.health);
          health.setTargets(desired.checks);
        }
        this.healthSettled = true;
      }
    } catch (err) {
      this.failed(err, 'source');
      return;
    }
    const tDesired = this.o.clock.monotonic();
    // The pass's own steps yield to the event loop once they have held it this long.
    const slicer = new TimeSlicer(this.o.sliceMs);
    // Only some services' backends changed since the last pass, whose announcements all
    // reached the speaker: only their VIPs are decided again.
    const last = this.last;
    // The announcement options are part of every decision (a shutdown, another peer family).
    const announce = { ...this.o.announce, shuttingDown: this.shuttingDown };
    const announceKey = JSON.stringify([
      announce.communities,
      [...announce.peerFamilies].sort(),
      announce.shuttingDown,
    ]);
    const delta =
      !full &&
      last &&
      desired.delta?.base === last.desired &&
      this.announced === last.ads &&
      announceKey === this.announceKey
        ? desired.delta
        : undefined;
    const touched = delta && new Map(delta.vips.map((at) => [desired.vips[at]!.address, desired.vips[at]!]));
    // Withdraw first what desired state no longer lets this node announce, so no route
    // points at a VIP about to be removed.
    let speakerError: string | undefined;
    const announcedBefore = this.announced;
    // (A VIP the delta does not touch is as it was: announced, so allowed.)
    const allowed: (address: string) => boolean = touched
      ? (address) => touched.get(address)?.announce ?? true
      : (
          (ok: Set<string>) => (address: string) =>
            ok.has(address)
        )(new Set(desired.vips.filter((v) => v.announce).map((v) => v.address)));
    const keep =
      touched && [...touched.values()].every((v) => v.announce)
        ? this.announced
        : this.announced.filter((a) => allowed(adAddress(a)));
    if (speaker && keep.length !== this.announced.length) {
      try {
        await speaker.setAdvertisements(keep);
        this.setAnnounced(keep);
      } catch (err) {
        speakerError = describeError(err);
      }
    }
    const tWithdrawn = this.o.clock.monotonic();
    const readBack = full ? this.readBack : undefined;
    if (full) this.readBack = undefined;
    const report = await dataPlane.apply(desired, full, readBack);
    const tApplied = this.o.clock.monotonic();
    const byVip = this.servicesByVip(desired, !!delta);
    await slicer.check();
    const decided =
      touched && report.incremental
        ? announcementsPatch(
            report,
            this.announcedByPrefix,
            announce,
            byVip,
            { ...last!, ads: this.announced },
            touched,
          )
        : {
            ...(await announcementsSliced(desired, report, this.announcedByPrefix, announce, byVip, () =>
              slicer.pause(),
            )),
            changed: true,
          };
    // Unchanged: the same advertisements as announced (the speaker is not called).
    const ads = decided.changed ? decided.ads : this.announced;
    await slicer.check();
    const { withheld, kept } = decided;
    if (decided.changed && speaker) {
      try {
        await speaker.setAdvertisements(ads);
        this.setAnnounced(ads);
      } catch (err) {
        speakerError ??= describeError(err);
        if (metrics) metrics.errors.inc({ code: errorCode(err), step: 'bgp' });
      }
    } else if (decided.changed) {
      this.setAnnounced(ads);
    }
    const ok = report.failures.length === 0;
    const end = this.o.clock.monotonic();
    report.stages.desired = tDesired - t0;
    report.stages.announce = tWithdrawn - tDesired + (end - tApplied);
    const result: PassResult = {
      at: started,
      durationMs: end - t0,
      ok,
      full: report.full,
      desired,
      report,
      ads,
      withheld,
      kept,
      speakerError,
    };
    this.last = result;
    this.announceKey = announceKey;
    this.passes++;
    this.lastPassAt = end;
    if (!someUnknown(report.services)) this.lastKnownAt = end;
    this.record(result);
    this.tell(result);
    this.o.onPass?.(result);
    if (source.announced && (decided.changed || this.announced !== announcedBefore)) {
      const announcedSet = new Set(ads.map(adAddress));
      // Events are the API server's business: never waited for here.
      source.announced(desired.vips.filter((v) => announcedSet.has(v.address))).catch(() => {});
    }
    if (ok) {
      this.failures = 0;
      this.lastSuccessAt = end;
    } else {
      this.logFailures(report.failures);
      this.scheduleRetry();
    }
    if (report.draining.length) this.scheduleDrainCheck();
  }

  private setAnnounced(ads: Advertisement[]): void {
    this.announced = ads;
    this.announcedByPrefix = new Map(ads.map((a) => [a.prefix, a]));
  }

  /** The ids of each VIP's IPVS services: kept while desired states come as deltas (their services are the same). */
  private servicesByVip(desired: DesiredState, delta: boolean): Map<string, string[]> {
    const kept =
      delta && this.byVip && this.byVip.desired === desired.delta?.base ? this.byVip.map : undefined;
    this.byVip = { desired, map: kept ?? servicesByVip(desired) };
    return this.byVip.map;
  }

  /**
   * Each failure of a pass by name, up to LOGGED_FAILURES; the rest counted by code in one
   * line (a pass refused as a whole at 10,000 services would otherwise log 110,000 lines;
   * the metric counts every one).
   */
  private logFailures(failures: readonly PassFailure[]): void {
    for (const f of failures.slice(0, LOGGED_FAILURES))
      this.log.warn({ step: f.step, code: f.code }, f.message);
    const rest = failures.slice(LOGGED_FAILURES);
    if (!rest.length) return;
    const byCode: Record<string, number> = {};
    for (const f of rest) byCode[`${f.step}/${f.code}`] = (byCode[`${f.step}/${f.code}`] ?? 0) + 1;
    this.log.warn({ more: rest.length, byCode }, `${rest.length} more failures in this pass (not listed)`);
  }

  /** Liveness: the loop completes passes, and knows the kernel's state, within `windowMs`. */
  liveness(windowMs: number): { ok: boolean; reason: string | undefined } {
    const now = this.o.clock.monotonic();
    const since = (t: number | undefined) => now - (t ?? this.startedAt);
    if (since(this.lastPassAt) > windowMs)
      return {
        ok: false,
        reason: `no sync pass completed for ${Math.round(since(this.lastPassAt) / 1000)} s`,
      };
    if (since(this.lastKnownAt) > windowMs && this.o.source.synced())
      return {
        ok: false,
        reason: `the kernel's state has been unknown for ${Math.round(since(this.lastKnownAt) / 1000)} s`,
      };
    return { ok: true, reason: undefined };
  }

  private failed(err: unknown, step: string): void {
    this.log.warn({ err: describeError(err), step }, 'sync pass failed');
    this.o.metrics?.errors.inc({ code: errorCode(err), step });
    this.o.metrics?.syncs.inc({ result: 'error' });
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    const delay = backoffDelay(this.failures++, 500, this.o.retryMaxMs);
    this.o.clock
      .sleep(delay, this.stop.signal)
      .then(() => this.trigger(true))
      .catch(() => {});
  }

  /** Draining backends go once idle: look again soon, not only at the next unrelated pass. */
  private scheduleDrainCheck(): void {
    if (this.drainTimer) return;
    const timer = new AbortController();
    this.drainTimer = timer;
    const stop = () => timer.abort();
    this.stop.signal.addEventListener('abort', stop, { once: true });
    this.o.clock
      .sleep(this.o.drainCheckMs ?? 2000, timer.signal)
      .then(() => {
        this.drainTimer = undefined;
        this.stop.signal.removeEventListener('abort', stop);
        this.trigger();
      })
      .catch(() => {});
  }

  private record(r: PassResult): void {
    const m = this.o.metrics;
    if (!m) return;
    m.syncDuration.observe(
      { result: r.ok ? 'ok' : 'error', kind: r.full ? 'full' : 'incremental' },
      r.durationMs / 1000,
    );
    m.syncs.inc({ result: r.ok ? 'ok' : 'error' });
    for (const [stage, ms] of Object.entries(r.report.stages))
      m.syncStageDuration.observe({ stage }, ms / 1000);
    for (const [op, n] of Object.entries(r.report.applied)) if (n) m.ipvsOperations.inc({ op }, n);
    if (r.report.netfilter !== 'unchanged') m.netfilterWrites.inc({ kind: r.report.netfilter });
    for (const f of r.report.failures) m.errors.inc({ code: f.code, step: f.step });
    m.ipvsServices.set(r.desired.virtualServices.length);
    m.ipvsDestinations.set(r.desired.virtualServices.reduce((n, v) => n + v.spec.destinations.length, 0));
    m.draining.set(r.report.draining.length);
    m.vips.set(r.desired.vips.length);
    m.announced.set(r.ads.length);
    m.withheld.reset();
    for (const w of r.withheld) m.withheld.inc({ reason: w.reason });
    m.skipped.reset();
    for (const s of r.desired.skipped) m.skipped.inc({ reason: s.reason });
    m.warnings.set(r.desired.warnings.length);
    m.leader.set(this.o.source.isLeader?.() ? 1 : 0);
  }

  /** Logs each skip, warning and withheld VIP once when it starts or changes, and when it ends. */
  private tell(r: PassResult): void {
    // What the kernel was told, once per pass that changed it (a quiet pass is debug only).
    const applied = Object.fromEntries(Object.entries(r.report.applied).filter(([, n]) => n > 0));
    const vips = r.report.vips.added.length + r.report.vips.removed.length;
    const changed = Object.keys(applied).length > 0 || vips > 0 || r.report.netfilter !== 'unchanged';
    this.log[changed ? 'info' : 'debug'](
      {
        full: r.full,
        durationMs: Math.round(r.durationMs),
        applied,
        ...(vips
          ? {
              // The first few by name: at thousands of VIPs one line would hold them all.
              vipsAdded: r.report.vips.added.slice(0, LOGGED_VIPS),
              vipsAddedCount: r.report.vips.added.length,
              vipsRemoved: r.report.vips.removed.slice(0, LOGGED_VIPS),
              vipsRemovedCount: r.report.vips.removed.length,
            }
          : {}),
        ...(r.report.vips.moved.length
          ? {
              // Addresses an earlier version put on the interface, now routes (once, after an upgrade).
              vipsMovedToRoutesCount: r.report.vips.moved.length,
            }
          : {}),
        ...(r.report.netfilter !== 'unchanged' ? { netfilter: r.report.netfilter } : {}),
        announced: r.ads.length,
        stagesMs: Object.fromEntries(Object.entries(r.report.stages).map(([k, v]) => [k, Math.round(v)])),
      },
      changed ? 'kernel programmed' : 'pass: kernel already as desired',
    );
    const { appeared, cleared } = this.notices.update([
      ...r.desired.skipped.map(
        (s): Notice => ({ what: 'skipped', subject: s.service, reason: s.reason, message: s.detail }),
      ),
      ...r.desired.warnings.map(
        (w): Notice => ({ what: 'warning', subject: w.service, reason: undefined, message: w.message }),
      ),
      ...r.withheld.map(
        (w): Notice => ({ what: 'withheld', subject: w.address, reason: w.reason, message: w.reason }),
      ),
    ]);
    for (const n of appeared) {
      if (n.what === 'skipped')
        this.log.warn({ service: n.subject, reason: n.reason }, `service skipped: ${n.message}`);
      else if (n.what === 'warning') this.log.warn({ service: n.subject }, `service warning: ${n.message}`);
      else this.log.info({ vip: n.subject, reason: n.reason }, 'VIP not announced');
    }
    for (const n of cleared) {
      if (n.what === 'skipped')
        this.log.info({ service: n.subject, reason: n.reason }, 'service no longer skipped');
      else if (n.what === 'warning') this.log.info({ service: n.subject }, 'service warning cleared');
      else this.log.info({ vip: n.subject, reason: n.reason }, 'VIP no longer withheld');
    }
  }

  /** Graceful shutdown, first step: re-announce everything as shutting down. */
  async beginShutdown(): Promise<void> {
    this.shuttingDown = true;
    this.trigger();
    await this.idle();
  }

  /** Stops passes; withdraws every path if asked (the last step of a graceful shutdown). */
  async close(options: { withdraw: boolean }): Promise<void> {
    this.stopped = true;
    this.stop.abort();
    this.queue.clear();
    await this.queue.onIdle();
    if (options.withdraw && this.o.speaker) {
      await this.o.speaker.setAdvertisements([]);
      this.setAnnounced([]);
    }
    await this.o.source.stop();
  }

  get isShuttingDown(): boolean {
    return this.shuttingDown;
  }
}
