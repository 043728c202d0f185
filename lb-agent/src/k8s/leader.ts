// Lease-based leader election (coordination.k8s.io/v1) with client-go's semantics: a
// replica leads while it renews the Lease within the renew deadline, and every Lease
// call of a leader is aborted at that deadline (a hung API server cannot keep a stale
// leader writing). Others take over once the holder has not renewed for the lease
// duration, judged by their own monotonic clock from when they last saw the record change
// (no clock synchronisation assumed, no wall-clock step matters). Optimistic concurrency
// (resourceVersion, 409) makes sure two replicas never both win.
import { EventEmitter } from 'node:events';
import { describeError } from '../errors.ts';
import { type Clock, deadlineSignal } from '../util/clock.ts';
import { type Logger, silentLogger } from '../util/log.ts';
import { type Json, KubeApiError, type KubeClient } from './client.ts';

/** What the elector needs of the API client (a narrow seam for tests). */
export type LeaseClient = Pick<KubeClient, 'request'>;

export interface LeaderElectorOptions {
  client: LeaseClient;
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
  clock: Clock;
  logger?: Logger;
}

/** The API's MicroTime: RFC 3339 with microseconds. */
export const microTime = (ms: number): string => new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');

export class LeaderElector {
  private readonly o: LeaderElectorOptions;
  private readonly log: Logger;
  private readonly events = new EventEmitter();
  private leading = false;
  /** Monotonic time of the last successful acquire or renew. */
  private lastRenew = 0;
  private observed: { record: string; at: number } | undefined;
  private readonly stopper = new AbortController();
  private loop: Promise<void> | undefined;
  transitions = 0;

  constructor(options: LeaderElectorOptions) {
    this.o = options;
    this.log = (options.logger ?? silentLogger).child({ lease: `${options.namespace}/${options.name}` });
  }

  /** Leading, and within the renew deadline (a leader past it is none, before the loop even notices). */
  isLeader(): boolean {
    return this.leading && this.withinDeadline();
  }

  private withinDeadline(): boolean {
    return this.o.clock.monotonic() - this.lastRenew <= this.o.renewDeadlineMs;
  }

  on(event: 'started' | 'stopped', fn: () => void): () => void {
    this.events.on(event, fn);
    return () => this.events.off(event, fn);
  }

  start(): this {
    this.loop ??= this.run();
    return this;
  }

  /** Stops campaigning; a leader releases the Lease so another replica takes over at once. */
  async close(): Promise<void> {
    this.stopper.abort();
    await this.loop?.catch(() => {});
    if (this.leading) {
      await this.release().catch((err) =>
        this.log.warn({ err: describeError(err) }, 'could not release the lease'),
      );
      this.setLeading(false);
    }
  }

  private setLeading(value: boolean): void {
    if (this.leading === value) return;
    this.leading = value;
    this.transitions++;
    this.log.info({ identity: this.o.identity }, value ? 'became leader' : 'stopped leading');
    this.events.emit(value ? 'started' : 'stopped');
  }

  /** The signal for one Lease call: a leader's is aborted at its renew deadline. */
  private callSignal(): AbortSignal {
    const budget = this.leading
      ? this.lastRenew + this.o.renewDeadlineMs - this.o.clock.monotonic()
      : this.o.renewDeadlineMs;
    return AbortSignal.any([this.stopper.signal, deadlineSignal(budget)]);
  }

  private async run(): Promise<void> {
    while (!this.stopper.signal.aborted) {
      try {
        if (await this.tryAcquireOrRenew()) {
          this.lastRenew = this.o.clock.monotonic();
          this.setLeading(true);
        } else if (this.leading) {
          this.setLeading(false);
        }
      } catch (err) {
        if (!this.stopper.signal.aborted) this.log.warn({ err: describeError(err) }, 'lease request failed');
      }
      // Could not renew in time: stop writing before another replica may start.
      if (this.leading && !this.withinDeadline()) this.setLeading(false);
      await this.o.clock.sleep(this.o.retryPeriodMs, this.stopper.signal).catch(() => {});
    }
  }

  private path(name?: string): string {
    return `/apis/coordination.k8s.io/v1/namespaces/${this.o.namespace}/leases${name ? `/${name}` : ''}`;
  }

  private spec(prev?: Json): Json {
    const now = this.o.clock.now();
    const changedHands = prev?.holderIdentity !== this.o.identity;
    return {
      holderIdentity: this.o.identity,
      leaseDurationSeconds: Math.ceil(this.o.leaseDurationMs / 1000),
      acquireTime: changedHands ? microTime(now) : prev?.acquireTime,
      renewTime: microTime(now),
      leaseTransitions: (prev?.leaseTransitions ?? 0) + (changedHands && prev?.holderIdentity ? 1 : 0),
    };
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { client, name, namespace } = this.o;
    const signal = this.callSignal();
    let lease: Json;
    try {
      lease = await client.request('GET', this.path(name), { signal });
    } catch (err) {
      if (!(err instanceof KubeApiError && err.status === 404)) throw err;
      try {
        await client.request('POST', this.path(), {
          body: {
            apiVersion: 'coordination.k8s.io/v1',
            kind: 'Lease',
            metadata: { name, namespace },
            spec: this.spec(),
          },
          signal,
        });
        return true;
      } catch (e) {
        if (e instanceof KubeApiError && e.status === 409) return false; // someone else created it first
        throw e;
      }
    }
    const spec = lease?.spec ?? {};
    const now = this.o.clock.monotonic();
    const record = JSON.stringify([spec.holderIdentity, spec.renewTime, spec.leaseTransitions]);
    if (!this.observed || this.observed.record !== record) this.observed = { record, at: now };
    const heldByOther = !!spec.holderIdentity && spec.holderIdentity !== this.o.identity;
    const durationMs = (spec.leaseDurationSeconds ?? Math.ceil(this.o.leaseDurationMs / 1000)) * 1000;
    if (heldByOther && now - this.observed.at < durationMs) return false;
    try {
      await client.request('PUT', this.path(name), {
        body: { ...lease, metadata: { ...lease.metadata, name, namespace }, spec: this.spec(spec) },
        signal,
      });
      return true;
    } catch (err) {
      if (err instanceof KubeApiError && err.status === 409) return false; // lost the race for this version
      throw err;
    }
  }

  private async release(): Promise<void> {
    const signal = deadlineSignal(Math.max(1000, this.o.renewDeadlineMs));
    const lease = await this.o.client.request('GET', this.path(this.o.name), { signal });
    if (lease?.spec?.holderIdentity !== this.o.identity) return;
    await this.o.client.request('PUT', this.path(this.o.name), {
      body: {
        ...lease,
        spec: {
          ...lease.spec,
          holderIdentity: '',
          renewTime: microTime(this.o.clock.now()),
          leaseDurationSeconds: 1,
        },
      },
      signal,
    });
  }
}
