// The Kubernetes side effects: Service status (status subresource, merge patch, one entry
// per VIP with ipMode Proxy) and Events. Each call takes the lane's deadline. Events are
// de-duplicated so a steady state does not repeat itself.
import type { Clock } from '../util/clock.ts';
import { type Logger, silentLogger } from '../util/log.ts';
import type { KubeEvent, ServiceRef, StatusUpdate } from './allocator.ts';
import type { Json, KubeClient } from './client.ts';
import { CONFIG_GROUP_VERSION } from './config-objects.ts';
import { microTime } from './leader.ts';

export interface KubeWriterOptions {
  client: KubeClient;
  /** "portlb": who reports the Events. */
  component: string;
  /** The node: which instance reports them. */
  host: string;
  clock: Clock;
  logger?: Logger;
  /** How long an identical Event is not repeated. */
  eventDedupMs?: number;
}

export interface StatusResult {
  /** The API server kept the ingress IPs but dropped ipMode (Kubernetes < 1.30, or the feature gate off). */
  ipModeDropped: boolean;
}

export class KubeWriter {
  private readonly o: KubeWriterOptions;
  private readonly log: Logger;
  private readonly recent = new Map<string, number>();
  statusWrites = 0;
  eventsSent = 0;

  constructor(options: KubeWriterOptions) {
    this.o = options;
    this.log = options.logger ?? silentLogger;
  }

  /** Writes one Service's status; throws on failure (the lane counts it). */
  async writeStatus(update: StatusUpdate, signal: AbortSignal): Promise<StatusResult> {
    const { namespace, name } = update.service;
    const written: Json = await this.o.client.request(
      'PATCH',
      `/api/v1/namespaces/${namespace}/services/${name}/status`,
      {
        // Merge patch: replaces the ingress list, touches nothing else of the status.
        body: { status: { loadBalancer: { ingress: update.ips.map((ip) => ({ ip, ipMode: 'Proxy' })) } } },
        contentType: 'application/merge-patch+json',
        signal,
      },
    );
    this.statusWrites++;
    this.log.info({ service: `${namespace}/${name}`, ips: update.ips }, 'wrote Service status');
    const ingress = (written?.status?.loadBalancer?.ingress ?? []) as Json[];
    return { ipModeDropped: update.ips.length > 0 && ingress.length > 0 && ingress.every((i) => !i?.ipMode) };
  }

  /** A configuration object's Accepted condition (merge patch of its status). */
  async objectStatus(collection: string, name: string, patch: Json, signal: AbortSignal): Promise<void> {
    await this.o.client.request('PATCH', `${collection}/${encodeURIComponent(name)}/status`, {
      body: patch,
      contentType: 'application/merge-patch+json',
      signal,
    });
    this.statusWrites++;
  }

  /** Whether this Event was recorded recently (then it is not sent again). */
  isRecent(ev: KubeEvent): boolean {
    const last = this.recent.get(eventKey(ev));
    return last !== undefined && this.o.clock.monotonic() - last < (this.o.eventDedupMs ?? 10 * 60_000);
  }

  /** Records an Event on a Service (or the Node); de-duplicated; throws on failure. */
  async event(ev: KubeEvent, signal: AbortSignal): Promise<void> {
    if (this.isRecent(ev)) return;
    const now = this.o.clock.monotonic();
    this.recent.set(eventKey(ev), now);
    if (this.recent.size > 10_000) {
      for (const [k, t] of this.recent) if (now - t > (this.o.eventDedupMs ?? 600_000)) this.recent.delete(k);
    }
    const time = new Date(this.o.clock.now()).toISOString();
    const target = involvedObject(ev.service);
    try {
      await this.o.client.request('POST', `/api/v1/namespaces/${target.namespace || 'default'}/events`, {
        body: {
          apiVersion: 'v1',
          kind: 'Event',
          metadata: { generateName: `${ev.service.name}.`, namespace: target.namespace || 'default' },
          involvedObject: target,
          type: ev.type,
          reason: ev.reason,
          message: ev.message,
          source: { component: this.o.component, host: this.o.host },
          reportingComponent: this.o.component,
          reportingInstance: this.o.host,
          firstTimestamp: time,
          lastTimestamp: time,
          eventTime: microTime(this.o.clock.now()),
          action: ev.reason,
          count: 1,
        },
        signal,
      });
      this.eventsSent++;
    } catch (err) {
      // Not sent: may be tried again.
      this.recent.delete(eventKey(ev));
      throw err;
    }
  }
}

const eventKey = (ev: KubeEvent) =>
  `${ev.service.kind ?? 'Service'}|${ev.service.namespace}/${ev.service.name}|${ev.type}|${ev.reason}|${ev.message}`;

function involvedObject(ref: ServiceRef): Json {
  if (ref.kind === 'Node')
    return { kind: 'Node', apiVersion: 'v1', name: ref.name, uid: ref.uid, namespace: '' };
  if (ref.kind === 'PortlbAddressPool' || ref.kind === 'PortlbBgpPeer')
    return { kind: ref.kind, apiVersion: CONFIG_GROUP_VERSION, name: ref.name, uid: ref.uid, namespace: '' };
  return { kind: 'Service', apiVersion: 'v1', namespace: ref.namespace, name: ref.name, uid: ref.uid };
}
