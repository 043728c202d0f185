// Active health checks from this node (the keepalived role in the design this project
// follows). Each backend of a checked service is probed on its own schedule: at once when
// it appears (a new backend is kept out until its first probe passes), then every
// interval, its phase spread at random over the first interval and each interval jittered
// by +-10%, so that 10,000 backends do not probe in bursts; a semaphore bounds the probes
// in flight. State changes follow rise and fall; a probe that cannot run here (error) is
// never a failure. The checker only keeps state and says when it changed: desired state
// (core/desired.ts) reads it, so a failing backend is weight 0 in the next pass.
import type { HealthState, HealthTarget, HealthView } from '../core/types.ts';
import type { Clock } from '../util/clock.ts';
import type { ProbeResult, Prober } from './probe.ts';
import { describeCheck } from './spec.ts';

export interface HealthTransition {
  target: HealthTarget;
  from: HealthState;
  to: HealthState;
  /** The probe that decided it ("status 503", "timed out after 2000 ms"). */
  detail: string;
}

export interface BackendHealth {
  address: string;
  port: number;
  state: HealthState;
  /** The last probe's outcome and detail; `error`: the check cannot run from this node. */
  last: ProbeResult | undefined;
  /** Wall-clock ms of the last state change. */
  since: number;
}

export interface ServiceHealth {
  service: string;
  check: string;
  healthy: number;
  total: number;
  backends: BackendHealth[];
}

export interface HealthCheckerOptions {
  prober: Prober;
  clock: Clock;
  /** Probes in flight at most (default 64). */
  concurrency?: number;
  /** For the jitter; tests pass a fixed one. */
  random?: () => number;
  onTransition?: (t: HealthTransition) => void;
  onProbe?: (target: HealthTarget, result: ProbeResult) => void;
}

interface Entry {
  target: HealthTarget;
  specKey: string;
  state: HealthState;
  passes: number;
  fails: number;
  last: ProbeResult | undefined;
  since: number;
  stop: AbortController;
  /** Resolves when the backend leaves `pending` (or stops being checked). */
  settled: Promise<void>;
  settle: () => void;
}

const keyOf = (service: string, address: string, port: number) => `${service}|${address}|${port}`;

export class HealthChecker implements HealthView {
  private readonly o: HealthCheckerOptions;
  private readonly entries = new Map<string, Entry>();
  private readonly versions = new Map<string, number>();
  private inFlight = 0;
  /** Holders (a sync pass, a read-back) during which no new probe starts. */
  private holds = 0;
  private unheld: Promise<void> = Promise.resolve();
  private release_: () => void = () => {};
  private readonly waiting: (() => void)[] = [];
  private closed = false;

  constructor(options: HealthCheckerOptions) {
    this.o = options;
  }

  state(service: string, address: string, port: number): HealthState | undefined {
    return this.entries.get(keyOf(service, address, port))?.state;
  }

  version(service: string): number {
    return this.versions.get(service) ?? 0;
  }

  /** Probes exactly these backends from now on: new ones at once, gone ones no more. */
  setTargets(targets: readonly HealthTarget[]): void {
    if (this.closed) return;
    const wanted = new Map(targets.map((t) => [keyOf(t.service, t.address, t.port), t]));
    for (const [key, e] of this.entries) {
      const t = wanted.get(key);
      if (t && JSON.stringify(t.spec) === e.specKey) continue;
      e.stop.abort();
      this.entries.delete(key);
      this.bump(e.target.service);
    }
    for (const [key, target] of wanted) {
      if (this.entries.has(key)) continue;
      const entry: Entry = {
        target,
        specKey: JSON.stringify(target.spec),
        state: 'pending',
        passes: 0,
        fails: 0,
        last: undefined,
        since: this.o.clock.now(),
        stop: new AbortController(),
        settled: Promise.resolve(),
        settle: () => {},
      };
      entry.settled = new Promise((resolve) => {
        entry.settle = resolve;
      });
      this.entries.set(key, entry);
      this.bump(target.service);
      void this.run(entry);
    }
  }

  /** Resolves once every backend known now is past `pending` (up or down), or after `timeoutMs`. */
  async firstProbes(timeoutMs: number): Promise<void> {
    const pending = [...this.entries.values()].filter((e) => e.state === 'pending').map((e) => e.settled);
    if (!pending.length) return;
    const stop = new AbortController();
    await Promise.race([Promise.all(pending), this.o.clock.sleep(timeoutMs, stop.signal).catch(() => {})]);
    stop.abort();
  }

  /** Whether a backend is still pending (not yet found up or down). */
  hasPending(): boolean {
    for (const e of this.entries.values()) if (e.state === 'pending') return true;
    return false;
  }

  /** Per checked service: healthy and total backends, each backend's state and last probe. */
  summary(): ServiceHealth[] {
    const out = new Map<string, ServiceHealth>();
    for (const e of this.entries.values()) {
      const s = out.get(e.target.service) ?? {
        service: e.target.service,
        check: describeCheck(e.target.spec),
        healthy: 0,
        total: 0,
        backends: [],
      };
      s.total++;
      if (e.state === 'up') s.healthy++;
      s.backends.push({
        address: e.target.address,
        port: e.target.port,
        state: e.state,
        last: e.last,
        since: e.since,
      });
      out.set(e.target.service, s);
    }
    return [...out.values()].sort((a, b) => (a.service < b.service ? -1 : 1));
  }

  close(): void {
    this.closed = true;
    this.release_();
    for (const e of this.entries.values()) e.stop.abort();
    this.entries.clear();
    for (const w of this.waiting.splice(0)) w();
  }

  private bump(service: string): void {
    this.versions.set(service, this.version(service) + 1);
  }

  private async run(e: Entry): Promise<void> {
    const { clock } = this.o;
    const random = this.o.random ?? Math.random;
    const signal = e.stop.signal;
    const interval = e.target.spec.intervalMs;
    // First probe now (again at once while pending); then the phase is spread over one
    // interval, then one probe starts every interval +-10%, however long the last took
    // (so `fall` failures take `fall` intervals, as keepalived's delay_loop).
    let wait = 0;
    let spread = true;
    while (!signal.aborted) {
      if (wait > 0) {
        try {
          await clock.sleep(wait, signal);
        } catch {
          break;
        }
      }
      await this.acquire(e.state === 'pending');
      if (signal.aborted) {
        this.release();
        break;
      }
      const startedAt = clock.monotonic();
      let result: ProbeResult;
      try {
        result = await this.o.prober(
          { address: e.target.address, family: e.target.family, port: e.target.spec.port ?? e.target.port },
          e.target.spec,
        );
      } catch (err) {
        result = { outcome: 'error', detail: (err as Error).message ?? String(err) };
      } finally {
        this.release();
      }
      if (signal.aborted) break;
      this.apply(e, result);
      if (e.state === 'pending') wait = 0;
      else if (spread) {
        spread = false;
        wait = random() * interval;
      } else wait = Math.max(0, interval * (0.9 + 0.2 * random()) - (clock.monotonic() - startedAt));
    }
    e.settle();
  }

  private apply(e: Entry, result: ProbeResult): void {
    e.last = result;
    this.o.onProbe?.(e.target, result);
    const from = e.state;
    let to = from;
    if (result.outcome === 'pass') {
      e.passes++;
      e.fails = 0;
      // A new backend needs one pass; a failed one `rise` in a row.
      if (from === 'pending' || (from === 'down' && e.passes >= e.target.spec.rise)) to = 'up';
    } else if (result.outcome === 'fail') {
      e.fails++;
      e.passes = 0;
      // A new backend is out after two failures in a row (probed back to back), or `fall`
      // if that is 1: a first probe that lost to a busy start does not decide alone.
      const needed = from === 'pending' ? Math.min(2, e.target.spec.fall) : e.target.spec.fall;
      if ((from === 'pending' || from === 'up') && e.fails >= needed) to = 'down';
    } else if (from === 'pending') {
      // The check cannot run from here: that says nothing against the backend, which then
      // serves as it would without a check (its readiness decides). Reported as an error.
      to = 'up';
    }
    if (to === from) return;
    if (from === 'pending') e.settle();
    e.state = to;
    e.since = this.o.clock.now();
    this.bump(e.target.service);
    this.o.onTransition?.({ target: e.target, from, to, detail: result.detail });
  }

  /**
   * Holds new probes back until the returned function is called: the sync pass runs first.
   * In UML, 1,000 backends probed every second took half the agent's CPU; a probe that
   * waits a pass is only late. (Not the read-back beside the passes: it takes seconds
   * there, and held probes would pile up behind it.)
   */
  hold(): () => void {
    if (this.holds++ === 0) {
      this.unheld = new Promise((resolve) => {
        this.release_ = resolve;
      });
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (--this.holds === 0) this.release_();
    };
  }

  /** `first`: a pending backend's probe goes ahead of the routine ones waiting. */
  private async acquire(first: boolean): Promise<void> {
    while (this.holds > 0 && !this.closed) await this.unheld;
    return this.take(first);
  }

  private take(first: boolean): Promise<void> {
    if (this.inFlight < (this.o.concurrency ?? 64) || this.closed) {
      this.inFlight++;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const go = () => {
        this.inFlight++;
        resolve();
      };
      if (first) this.waiting.unshift(go);
      else this.waiting.push(go);
    });
  }

  private release(): void {
    this.inFlight--;
    this.waiting.shift()?.();
  }
}
