// The Kubernetes side effects: Service status (status subresource, merge patch, one entry
// per VIP with ipMode Proxy) and Events. Events are de-duplicated so a steady state
// does not repeat itself on every sync.
import { type CoreV1Api, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { describeError } from '../errors.ts';
import type { Clock } from '../util/clock.ts';
import { systemClock } from '../util/clock.ts';
import { type Logger, silentLogger } from '../util/log.ts';
import type { KubeEvent, StatusUpdate } from './allocator.ts';

export interface KubeWriterOptions {
  core: CoreV1Api;
  /** "portlb" + node: who reports the Events. */
  component: string;
  host: string;
  clock?: Clock;
  logger?: Logger;
  /** How long an identical Event is not repeated. */
  eventDedupMs?: number;
}

export class KubeWriter {
  private readonly o: KubeWriterOptions;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly recent = new Map<string, number>();
  statusWrites = 0;
  eventsSent = 0;

  constructor(options: KubeWriterOptions) {
    this.o = options;
    this.clock = options.clock ?? systemClock;
    this.log = options.logger ?? silentLogger;
  }

  /** Writes one Service's status; returns an error message instead of throwing. */
  async writeStatus(update: StatusUpdate): Promise<string | undefined> {
    const { namespace, name } = update.service;
    try {
      await this.o.core.patchNamespacedServiceStatus(
        {
          name,
          namespace,
          // Merge patch: replaces the ingress list, touches nothing else of the status.
          body: { status: { loadBalancer: { ingress: update.ips.map((ip) => ({ ip, ipMode: 'Proxy' })) } } },
        },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
      this.statusWrites++;
      this.log.info({ service: `${namespace}/${name}`, ips: update.ips }, 'wrote Service status');
      return undefined;
    } catch (err) {
      const message = `status of ${namespace}/${name}: ${describeError(err)}`;
      this.log.warn(
        { service: `${namespace}/${name}`, err: describeError(err) },
        'could not write Service status',
      );
      return message;
    }
  }

  /** Records an Event on a Service unless the same one was sent recently. */
  async event(ev: KubeEvent): Promise<void> {
    const key = `${ev.service.namespace}/${ev.service.name}|${ev.type}|${ev.reason}|${ev.message}`;
    const now = this.clock.now();
    const last = this.recent.get(key);
    if (last !== undefined && now - last < (this.o.eventDedupMs ?? 10 * 60_000)) return;
    this.recent.set(key, now);
    if (this.recent.size > 10_000) {
      for (const [k, t] of this.recent) if (now - t > (this.o.eventDedupMs ?? 600_000)) this.recent.delete(k);
    }
    const time = new Date(now);
    try {
      await this.o.core.createNamespacedEvent({
        namespace: ev.service.namespace,
        body: {
          metadata: { generateName: `${ev.service.name}.`, namespace: ev.service.namespace },
          involvedObject: {
            kind: 'Service',
            apiVersion: 'v1',
            namespace: ev.service.namespace,
            name: ev.service.name,
            uid: ev.service.uid,
          },
          type: ev.type,
          reason: ev.reason,
          message: ev.message,
          source: { component: this.o.component, host: this.o.host },
          reportingComponent: this.o.component,
          reportingInstance: this.o.host,
          firstTimestamp: time,
          lastTimestamp: time,
          count: 1,
        },
      });
      this.eventsSent++;
    } catch (err) {
      this.log.debug({ err: describeError(err), reason: ev.reason }, 'could not record an Event');
    }
  }
}
