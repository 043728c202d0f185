// Lease-based leader election (coordination.k8s.io/v1), as client-go does it: a replica
// leads while it renews the Lease within the renew deadline; others take over once the
// holder has not renewed for the lease duration, judged by their own clock from when
// they last saw the record change (no clock synchronisation assumed). Optimistic
// concurrency (resourceVersion, 409) makes sure two replicas never both win.
import { EventEmitter } from 'node:events';
import { type CoordinationV1Api, type V1Lease, V1MicroTime } from '@kubernetes/client-node';
import { describeError } from '../errors.ts';
import { type Clock, systemClock } from '../util/clock.ts';
import { type Logger, silentLogger } from '../util/log.ts';

export interface LeaderElectorOptions {
  api: CoordinationV1Api;
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
  clock?: Clock;
  logger?: Logger;
}

const statusCode = (err: unknown): number | undefined =>
  typeof (err as { code?: unknown })?.code === 'number' ? (err as { code: number }).code : undefined;

export class LeaderElector {
  private readonly o: LeaderElectorOptions;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly events = new EventEmitter();
  private leading = false;
  private lastRenew = 0;
  private observed: { record: string; at: number } | undefined;
  private readonly stop = new AbortController();
  private loop: Promise<void> | undefined;
  transitions = 0;

  constructor(options: LeaderElectorOptions) {
    this.o = options;
    this.clock = options.clock ?? systemClock;
    this.log = (options.logger ?? silentLogger).child({ lease: `${options.namespace}/${options.name}` });
  }

  isLeader(): boolean {
    return this.leading;
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
    this.stop.abort();
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

  private async run(): Promise<void> {
    while (!this.stop.signal.aborted) {
      try {
        if (await this.tryAcquireOrRenew()) {
          this.lastRenew = this.clock.now();
          this.setLeading(true);
        } else if (this.leading) {
          this.setLeading(false);
        }
      } catch (err) {
        this.log.warn({ err: describeError(err) }, 'lease request failed');
      }
      if (this.leading && this.clock.now() - this.lastRenew > this.o.renewDeadlineMs) {
        // Could not renew in time: stop writing before another replica may start.
        this.setLeading(false);
      }
      await this.clock.sleep(this.o.retryPeriodMs, this.stop.signal).catch(() => {});
    }
  }

  private spec(now: number, prev?: V1Lease['spec']): V1Lease['spec'] {
    const changedHands = prev?.holderIdentity !== this.o.identity;
    return {
      holderIdentity: this.o.identity,
      leaseDurationSeconds: Math.ceil(this.o.leaseDurationMs / 1000),
      acquireTime: changedHands ? new V1MicroTime(now) : prev?.acquireTime,
      renewTime: new V1MicroTime(now),
      leaseTransitions: (prev?.leaseTransitions ?? 0) + (changedHands && prev?.holderIdentity ? 1 : 0),
    };
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { api, namespace, name } = this.o;
    const now = this.clock.now();
    let lease: V1Lease;
    try {
      lease = await api.readNamespacedLease({ name, namespace });
    } catch (err) {
      if (statusCode(err) !== 404) throw err;
      try {
        await api.createNamespacedLease({
          namespace,
          body: { metadata: { name, namespace }, spec: this.spec(now) },
        });
        return true;
      } catch (e) {
        if (statusCode(e) === 409) return false; // someone else created it first
        throw e;
      }
    }
    const spec = lease.spec ?? {};
    const record = JSON.stringify([spec.holderIdentity, spec.renewTime, spec.leaseTransitions]);
    if (!this.observed || this.observed.record !== record) this.observed = { record, at: now };
    const heldByOther = !!spec.holderIdentity && spec.holderIdentity !== this.o.identity;
    const durationMs = (spec.leaseDurationSeconds ?? Math.ceil(this.o.leaseDurationMs / 1000)) * 1000;
    if (heldByOther && now - this.observed.at < durationMs) return false;
    try {
      await api.replaceNamespacedLease({
        name,
        namespace,
        body: { metadata: { ...lease.metadata, name, namespace }, spec: this.spec(now, spec) },
      });
      return true;
    } catch (err) {
      if (statusCode(err) === 409) return false; // lost the race for this version
      throw err;
    }
  }

  private async release(): Promise<void> {
    const { api, namespace, name } = this.o;
    const lease = await api.readNamespacedLease({ name, namespace });
    if (lease.spec?.holderIdentity !== this.o.identity) return;
    await api.replaceNamespacedLease({
      name,
      namespace,
      body: {
        metadata: lease.metadata,
        spec: {
          ...lease.spec,
          holderIdentity: '',
          renewTime: new V1MicroTime(this.clock.now()),
          leaseDurationSeconds: 1,
        },
      },
    });
  }
}
