// This node's PortlbNodeStatus: what it announces, to which routers, with which backends,
// as one cluster-scoped object named after the node (its CRD is in the chart), so that
// `portlb status --cluster` answers for every node at once. The object is owned by the
// Node (the garbage collector removes it with the Node) and deleted by a graceful
// shutdown. It is written at most once per interval, only when its content changed, and
// rewritten unchanged every refresh period so that a reader can tell a stale one. The
// writes go through the API lane, never inside the data plane's pass.
import { describeError } from '../errors.ts';
import type { Clock } from '../util/clock.ts';
import { type Logger, silentLogger } from '../util/log.ts';
import { type Pause, TimeSlicer } from '../util/slicer.ts';
import { type Json, KubeApiError, type KubeClient } from './client.ts';
import type { ApiLane } from './lane.ts';

export const NODE_STATUS = {
  group: 'portlb.io',
  version: 'v1alpha1',
  plural: 'portlbnodestatuses',
  kind: 'PortlbNodeStatus',
} as const;
export const NODE_STATUS_PATH = `/apis/${NODE_STATUS.group}/${NODE_STATUS.version}/${NODE_STATUS.plural}`;

/**
 * Bounds of one object: etcd refuses objects over 1.5 MB, and every write of a large one
 * costs the API server. Past them the lists are cut and the object says how many were left
 * out (the node's own `portlb status` has everything).
 */
export const NODE_STATUS_LIMITS = { vips: 1000, services: 500, backendsPerService: 32 } as const;

/** What a node does, in our own terms: the agent builds it from its last pass. */
export interface NodeStatusReport {
  node: string;
  /** The pod (leader-election identity). */
  identity: string;
  version: string;
  ready: boolean;
  reasons: string[];
  leader: boolean;
  lastSync: { at: string; ok: boolean } | null;
  speakerConnected: boolean | null;
  peers: { address: string; asn: number; state: string; bfd: string | null }[];
  vips: { address: string; owners: string[]; announced: boolean; withheld: string | null }[];
  services: {
    /** The IPVS service, e.g. tcp/203.0.113.10:80. */
    id: string;
    vip: string;
    owner: string;
    /** programmed / not-programmed / unknown. */
    state: string;
    /** All its backends (`backends` may hold only the first ones). */
    backendCount?: number;
    backends: { address: string; weight: number; health: string | null }[];
  }[];
  /** The totals, when `vips` and `services` hold only the first ones (those the object keeps). */
  counts?: { vips: number; vipsAnnounced: number; services: number };
}

/** Orders items by a string key, compared by code unit (the object's lists, the node report's choice). */
export const byKey =
  <T>(key: (x: T) => string) =>
  (a: T, b: T) =>
    key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0;

/** The object for a report (pure): lists sorted and bounded, owned by the Node. */
export function nodeStatusObject(report: NodeStatusReport, nodeUid: string): Json {
  const L = NODE_STATUS_LIMITS;
  const vips = [...report.vips].sort(byKey((v) => v.address));
  const services = [...report.services].sort(byKey((s) => s.id));
  const counts = report.counts ?? {
    vips: vips.length,
    vipsAnnounced: vips.filter((v) => v.announced).length,
    services: services.length,
  };
  return {
    apiVersion: `${NODE_STATUS.group}/${NODE_STATUS.version}`,
    kind: NODE_STATUS.kind,
    metadata: {
      name: report.node,
      labels: { 'app.kubernetes.io/name': 'portlb' },
      ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: report.node, uid: nodeUid }],
    },
    status: {
      agent: {
        pod: report.identity,
        version: report.version,
        ready: report.ready,
        reasons: report.reasons,
        leader: report.leader,
        lastSync: report.lastSync,
      },
      summary: {
        vipsAnnounced: counts.vipsAnnounced,
        vipsWithheld: counts.vips - counts.vipsAnnounced,
        peersEstablished: report.peers.filter((p) => p.state === 'established').length,
        peers: report.peers.length,
      },
      speakerConnected: report.speakerConnected,
      peers: [...report.peers].sort(byKey((p) => p.address)),
      vips: vips.slice(0, L.vips).map((v) => ({
        address: v.address,
        owners: v.owners,
        announced: v.announced,
        ...(v.withheld ? { withheld: v.withheld } : {}),
      })),
      services: services.slice(0, L.services).map((s) => ({
        id: s.id,
        vip: s.vip,
        owner: s.owner,
        state: s.state,
        backendCount: s.backendCount ?? s.backends.length,
        backends: [...s.backends].sort(byKey((b) => b.address)).slice(0, L.backendsPerService),
      })),
      truncated: {
        vips: Math.max(0, counts.vips - L.vips),
        services: Math.max(0, counts.services - L.services),
      },
    },
  };
}

/** Items of a long list stringified between two pauses. */
const ITEMS_PER_SLICE = 50;

/**
 * The object as text to compare with the last one written, not to send: its two long
 * lists (up to 1,000 VIPs, 500 services with their backends) a slice of items at a time.
 * At 10,000 Services the object is about 400 KB, and one JSON.stringify of it every
 * interval held the event loop about 100 ms in UML (`bench agent --profile`). The time of
 * the last pass is left out: a pass runs at least every resync, and that alone is no change.
 */
export async function comparableText(body: Json, pause: Pause): Promise<string> {
  const { vips, services, ...status } = body.status;
  const lastSync = status.agent.lastSync;
  const parts = [
    JSON.stringify({
      ...body,
      status: { ...status, agent: { ...status.agent, lastSync: lastSync && { ok: lastSync.ok } } },
    }),
  ];
  for (const list of [vips, services] as Json[][]) {
    for (let i = 0; i < list.length; i += ITEMS_PER_SLICE) {
      parts.push(JSON.stringify(list.slice(i, i + ITEMS_PER_SLICE)));
      await pause();
    }
    parts.push('|'); // the end of a list: no item can pass for the other list's
  }
  return parts.join('\n');
}

export interface NodeStatusPublisherOptions {
  client: Pick<KubeClient, 'request'>;
  lane: Pick<ApiLane, 'submit'>;
  node: string;
  /** The Node's uid once the informer has it (for the owner reference). */
  nodeUid: () => string | undefined;
  collect: () => Promise<NodeStatusReport>;
  clock: Clock;
  intervalMs: number;
  refreshMs: number;
  logger?: Logger;
  /** Each write's outcome, for metrics. */
  onWrite?: (ok: boolean) => void;
}

export class NodeStatusPublisher {
  private readonly o: NodeStatusPublisherOptions;
  private readonly log: Logger;
  private readonly stopper = new AbortController();
  /** resourceVersion of our last write: an update must name it (custom resources refuse blind updates). */
  private rv: string | undefined;
  private written: { content: string; at: number } | undefined;
  private failing = false;
  private loop: Promise<void> | undefined;

  constructor(o: NodeStatusPublisherOptions) {
    this.o = o;
    this.log = o.logger ?? silentLogger;
  }

  get path(): string {
    return `${NODE_STATUS_PATH}/${encodeURIComponent(this.o.node)}`;
  }

  start(): this {
    this.loop = this.run();
    return this;
  }

  private async run(): Promise<void> {
    const signal = this.stopper.signal;
    while (!signal.aborted) {
      await this.tick().catch((err) =>
        this.log.debug({ err: describeError(err) }, 'node status: report not built'),
      );
      await this.o.clock.sleep(this.o.intervalMs, signal).catch(() => {});
    }
  }

  /** Builds the report; hands a write to the lane when it changed or the refresh is due. */
  async tick(): Promise<void> {
    // Only with its owner: an object written for a Node that is not there (not listed yet,
    // or deleted) would outlive it, as nothing would remove it.
    const uid = this.o.nodeUid();
    if (!uid) return;
    const body = nodeStatusObject(await this.o.collect(), uid);
    // The last pass's time is no change of its own (comparableText leaves it out): a pass
    // runs at least every resync (10 s), and at 10,000 services each write is ~400 KB. It
    // is written with the next change or refresh, as observedAt is (which tells a reader
    // how fresh the object is).
    const slicer = new TimeSlicer();
    const content = await comparableText(body, () => slicer.pause());
    const now = this.o.clock.monotonic();
    if (this.written?.content === content && now - this.written.at < this.o.refreshMs) return;
    body.status.observedAt = new Date(this.o.clock.now()).toISOString();
    this.o.lane.submit({
      key: 'node-status',
      what: `PortlbNodeStatus ${this.o.node}`,
      droppable: false,
      run: (signal) => this.write(body, content, signal),
    });
  }

  private async write(body: Json, content: string, signal: AbortSignal): Promise<void> {
    try {
      const written: Json = await this.put(body, signal);
      this.rv = written?.metadata?.resourceVersion;
      this.written = { content, at: this.o.clock.monotonic() };
      if (this.failing) this.log.info({ node: this.o.node }, 'node status written again');
      this.failing = false;
      this.o.onWrite?.(true);
    } catch (err) {
      // Written again at the next tick (the content is not marked as written).
      this.written = undefined;
      if (!this.failing)
        this.log.warn(
          { err: describeError(err), node: this.o.node },
          `node status not written (${hint(err)}); retried every ${this.o.intervalMs / 1000} s`,
        );
      this.failing = true;
      this.o.onWrite?.(false);
      throw err;
    }
  }

  /** Create or update: an update names the version we last wrote; on a conflict or a miss, read and retry once. */
  private async put(body: Json, signal: AbortSignal): Promise<Json> {
    if (!this.rv) {
      const current: Json = await this.o.client
        .request('GET', this.path, { signal })
        .catch((err) => (notFound(err) ? undefined : Promise.reject(err)));
      if (!current) return this.o.client.request('POST', NODE_STATUS_PATH, { body, signal });
      this.rv = current.metadata?.resourceVersion;
    }
    try {
      return await this.update(body, signal);
    } catch (err) {
      if (!(err instanceof KubeApiError) || (err.status !== 409 && err.status !== 404)) throw err;
      this.rv = undefined;
      return this.put(body, signal);
    }
  }

  private update(body: Json, signal: AbortSignal): Promise<Json> {
    return this.o.client.request('PUT', this.path, {
      body: { ...body, metadata: { ...body.metadata, resourceVersion: this.rv } },
      signal,
    });
  }

  /** Stops publishing; with `remove`, deletes the object (the node announces nothing any more). */
  async close(o: { remove: boolean; deadlineMs?: number }): Promise<void> {
    this.stopper.abort();
    await this.loop;
    if (!o.remove) return;
    await this.o.client
      .request('DELETE', this.path, { signal: AbortSignal.timeout(o.deadlineMs ?? 2000) })
      .catch((err) => {
        if (!notFound(err))
          this.log.warn(
            { err: describeError(err) },
            'node status not deleted: it goes stale, then goes with the Node',
          );
      });
  }
}

const notFound = (err: unknown) => err instanceof KubeApiError && err.status === 404;

/** What to check, by the API server's answer. */
function hint(err: unknown): string {
  if (!(err instanceof KubeApiError)) return 'the API server did not answer';
  if (err.status === 404)
    return 'the PortlbNodeStatus CRD is not installed: apply the chart, or set kubernetes.nodeStatus.enabled: false';
  if (err.status === 403)
    return "forbidden: the ClusterRole must allow portlbnodestatuses, and the admission policy allows only the object named after the pod's node";
  return `HTTP ${err.status} ${err.reason}`;
}
