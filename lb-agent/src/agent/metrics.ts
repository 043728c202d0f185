// Prometheus metrics of one agent (prom-client, its own registry).
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { serviceId } from '../ipvs/types.ts';
import type { PoolUsage } from '../k8s/allocator.ts';
import { VERSION } from '../version.ts';
import type { ServiceFigures } from './service-stats.ts';

/**
 * The namespace and name of an owner id ("namespace/name" in Kubernetes, "file:name" for
 * the services file); empty when the kernel has a service no desired state explains yet.
 */
export function ownerLabels(owner: string | undefined): { namespace: string; service: string } {
  if (!owner) return { namespace: '', service: '' };
  if (owner.startsWith('file:')) return { namespace: '', service: owner.slice('file:'.length) };
  const slash = owner.indexOf('/');
  return slash < 0
    ? { namespace: '', service: owner }
    : { namespace: owner.slice(0, slash), service: owner.slice(slash + 1) };
}

export class AgentMetrics {
  readonly registry = new Registry();
  readonly syncDuration = new Histogram({
    name: 'portlb_sync_duration_seconds',
    help: 'Duration of one sync pass (desired state, data plane, announcements)',
    labelNames: ['result', 'kind'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly syncStageDuration = new Histogram({
    name: 'portlb_sync_stage_duration_seconds',
    help: 'Time one sync pass spent in each stage (desired, read, sysctl, netfilter, vips, plan, ipvs, announce); readback and verify: the periodic resync beside the passes',
    labelNames: ['stage'],
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly syncs = new Counter({
    name: 'portlb_syncs_total',
    help: 'Sync passes by result',
    labelNames: ['result'],
    registers: [this.registry],
  });
  readonly resyncs = new Counter({
    name: 'portlb_resyncs_total',
    help: 'Periodic resyncs by verdict: clean (the kernel as the passes left it), drift (a full pass repairs it), unknown (a full pass decides)',
    labelNames: ['result'],
    registers: [this.registry],
  });
  readonly errors = new Counter({
    name: 'portlb_errors_total',
    help: 'Errors by stable code and step',
    labelNames: ['code', 'step'],
    registers: [this.registry],
  });
  readonly ipvsOperations = new Counter({
    name: 'portlb_ipvs_operations_total',
    help: 'IPVS writes that reached the kernel',
    labelNames: ['op'],
    registers: [this.registry],
  });
  readonly netfilterWrites = new Counter({
    name: 'portlb_netfilter_writes_total',
    help: "Writes of portlb's netfilter rules by kind: updated (a change written as what it adds and removes), replaced (written whole by a pass: the first, a large change, or a change the kernel refused), repaired (rewritten whole after the repair found rules lost)",
    labelNames: ['kind'],
    registers: [this.registry],
  });
  readonly ipvsServices = new Gauge({
    name: 'portlb_ipvs_services',
    help: 'IPVS virtual services portlb programs',
    registers: [this.registry],
  });
  readonly ipvsDestinations = new Gauge({
    name: 'portlb_ipvs_destinations',
    help: 'Real servers of those services',
    registers: [this.registry],
  });
  readonly draining = new Gauge({
    name: 'portlb_ipvs_draining_destinations',
    help: 'Real servers at weight 0 waiting for their connections to end',
    registers: [this.registry],
  });
  /** The per-service families, encoded, kept between stats reads (see serviceStats). */
  private serviceChunks: readonly Buffer[] = [Buffer.from(SERVICE_FAMILIES.map(familyHeader).join(''))];
  readonly poolAddresses = new Gauge({
    name: 'portlb_pool_addresses',
    help: 'Addresses an address pool can hand out (Kubernetes mode)',
    labelNames: ['pool', 'family'],
    registers: [this.registry],
  });
  readonly poolAddressesInUse = new Gauge({
    name: 'portlb_pool_addresses_in_use',
    help: "Addresses of a pool that Services' status holds (Kubernetes mode)",
    labelNames: ['pool', 'family'],
    registers: [this.registry],
  });
  readonly configObjects = new Gauge({
    name: 'portlb_config_objects',
    help: 'Configuration objects (PortlbAddressPool, PortlbBgpPeer) by kind and verdict (accepted, refused: the reason is on its Accepted condition and in an Event)',
    labelNames: ['kind', 'state'],
    registers: [this.registry],
  });
  readonly buildInfo = new Gauge({
    name: 'portlb_build_info',
    help: 'Always 1; the labels say which portlb and which Node.js run',
    labelNames: ['version', 'nodejs'],
    registers: [this.registry],
  });
  readonly vips = new Gauge({
    name: 'portlb_vips',
    help: 'VIP addresses on this node',
    registers: [this.registry],
  });
  readonly announced = new Gauge({
    name: 'portlb_announced_vips',
    help: 'VIPs this node announces',
    registers: [this.registry],
  });
  readonly withheld = new Gauge({
    name: 'portlb_withheld_vips',
    help: 'VIPs not announced, by reason',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  readonly skipped = new Gauge({
    name: 'portlb_skipped_services',
    help: 'Services left out, by reason',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  readonly warnings = new Gauge({
    name: 'portlb_service_warnings',
    help: 'Warnings about programmed Services (e.g. a port that tunnel or dr forwarding cannot translate)',
    registers: [this.registry],
  });
  readonly peerUp = new Gauge({
    name: 'portlb_bgp_peer_established',
    help: 'BGP session established (1) or not (0)',
    labelNames: ['peer', 'state'],
    registers: [this.registry],
  });
  readonly speakerConnected = new Gauge({
    name: 'portlb_bgp_speaker_connected',
    help: 'gobgpd reachable and provisioned',
    registers: [this.registry],
  });
  readonly speakerProvisions = new Counter({
    name: 'portlb_bgp_speaker_provisions_total',
    help: 'Times the speaker was (re)provisioned from desired state',
    registers: [this.registry],
  });
  readonly bfdSessionUp = new Gauge({
    name: 'portlb_bfd_session_up',
    help: 'BFD session toward a peer up (1) or not (0), as the BFD responder reports it; absent when unknown',
    labelNames: ['peer', 'state'],
    registers: [this.registry],
  });
  readonly bfdResponderReachable = new Gauge({
    name: 'portlb_bfd_responder_reachable',
    help: 'The BFD-only BIRD answered the last poll',
    registers: [this.registry],
  });
  readonly deadManHolding = new Gauge({
    name: 'portlb_dead_man_holding',
    help: 'The dead-man switch holds BFD down because the agent is not live (1) or lets it out (0)',
    registers: [this.registry],
  });
  readonly deadManLapses = new Counter({
    name: 'portlb_dead_man_lapses_total',
    help: 'Refreshes of the dead-man switch that came after its timeout (the agent stalled; BFD was held down meanwhile)',
    registers: [this.registry],
  });
  readonly sourceSynced = new Gauge({
    name: 'portlb_source_synced',
    help: 'Desired-state source synced (informers listed / file read)',
    registers: [this.registry],
  });
  readonly leader = new Gauge({
    name: 'portlb_leader',
    help: 'This replica writes Service status (1) or not (0)',
    registers: [this.registry],
  });
  readonly ipvsVanished = new Counter({
    name: 'portlb_ipvs_services_vanished_total',
    help: 'IPVS services this node had programmed that a read-back found deleted by someone else',
    registers: [this.registry],
  });
  readonly healthChecks = new Counter({
    name: 'portlb_health_checks_total',
    help: 'Health-check probes by result: pass, fail, or error (the probe could not run from this node)',
    labelNames: ['result'],
    registers: [this.registry],
  });
  readonly healthTransitions = new Counter({
    name: 'portlb_health_transitions_total',
    help: 'Backends changing health state, by the state entered (up, down)',
    labelNames: ['to'],
    registers: [this.registry],
  });
  readonly nodeStatusWrites = new Counter({
    name: 'portlb_node_status_writes_total',
    help: "Writes of this node's PortlbNodeStatus object, by result (ok, error)",
    labelNames: ['result'],
    registers: [this.registry],
  });
  readonly backendsHealthy = new Gauge({
    name: 'portlb_backends_healthy',
    help: 'Health-checked backends of a Service that pass their check from this node',
    labelNames: ['namespace', 'service'],
    registers: [this.registry],
  });
  readonly backendsChecked = new Gauge({
    name: 'portlb_backends_checked',
    help: 'Health-checked backends of a Service on this node',
    labelNames: ['namespace', 'service'],
    registers: [this.registry],
  });
  readonly configReloadErrors = new Counter({
    name: 'portlb_config_reload_errors_total',
    help: 'Rejected reloads, by file (services: the services file; config: the agent configuration, on SIGHUP); the running state was kept',
    labelNames: ['file'],
    registers: [this.registry],
  });

  constructor() {
    this.buildInfo.set({ version: VERSION, nodejs: process.version }, 1);
    // Process metrics (memory, CPU, event-loop lag): what an operator checks first on a slow agent.
    collectDefaultMetrics({ register: this.registry });
  }

  /** Per checked Service: backends passing and checked, replaced whole. */
  setBackendHealth(services: readonly { service: string; healthy: number; total: number }[]): void {
    this.backendsHealthy.reset();
    this.backendsChecked.reset();
    for (const s of services) {
      const labels = ownerLabels(s.service);
      this.backendsHealthy.set(labels, s.healthy);
      this.backendsChecked.set(labels, s.total);
    }
  }

  setPoolUsage(usage: readonly PoolUsage[]): void {
    this.poolAddresses.reset();
    this.poolAddressesInUse.reset();
    for (const u of usage) {
      this.poolAddresses.set({ pool: u.pool, family: u.family }, u.size);
      this.poolAddressesInUse.set({ pool: u.pool, family: u.family }, u.inUse);
    }
  }

  /**
   * The per-service kernel figures, one service at a time as a read hands them over
   * (ServiceStatsReader); `owners` is the owner id of each service id from the last pass.
   * Nothing of the read is kept (at 10,000 services a table of 100,000 real servers lived
   * through the seconds of the read, for the collector to mark and compact). Each series
   * is encoded as it is added, into buffers outside V8's heap: held as strings until the
   * read's end (40,000 at 10,000 services, seconds later) they survived every scavenge
   * meanwhile, copied and promoted (bench agent --alloc-profile's first allocator). `commit`
   * replaces the families with what was added; a scrape sends the chunks as they are (at
   * 10,000 services prom-client's setting and formatting of the 40,000 series filled most
   * of 3-7 s around each scrape in UML).
   */
  serviceStats(owners: ReadonlyMap<string, string>): {
    add(figures: ServiceFigures): void;
    commit(): void;
  } {
    const families = SERVICE_FAMILIES.map((f) => new ChunkWriter().write(familyHeader(f)));
    return {
      add: (s) => {
        const key = s.key;
        const owner = ownerLabels(owners.get(serviceId(key)));
        const labels = `{namespace="${labelValue(owner.namespace)}",service="${labelValue(owner.service)}",vip="${key.address}",port="${key.port}",protocol="${key.protocol}"}`;
        SERVICE_FAMILIES.forEach((f, i) => {
          families[i]!.write(`${f.name}${labels} ${f.value(s)}\n`);
        });
      },
      commit: () => {
        this.serviceChunks = families.flatMap((w) => w.finish());
      },
    };
  }

  /**
   * The whole exposition, in chunks to send one after another: prom-client's registry,
   * then the per-service families (prom-client's format: a blank line between families).
   */
  async expositionChunks(): Promise<readonly (string | Buffer)[]> {
    return [await this.registry.metrics(), ...this.serviceChunks];
  }

  /** The whole exposition as one text (tests, small tables). */
  async exposition(): Promise<string> {
    return (await this.expositionChunks()).map((c) => c.toString()).join('');
  }

  /** A family's label names (undefined: no such family). */
  labelNamesOf(name: string): readonly string[] | undefined {
    if (SERVICE_FAMILIES.some((f) => f.name === name)) return SERVICE_LABELS;
    const m = this.registry.getSingleMetric(name) as { labelNames?: string[] } | undefined;
    return m ? (m.labelNames ?? []) : undefined;
  }

  /** Every family's name (the registry's and the per-service ones). */
  async familyNames(): Promise<string[]> {
    return [
      ...(await this.registry.getMetricsAsJSON()).map((m) => m.name),
      ...SERVICE_FAMILIES.map((f) => f.name),
    ];
  }
}

/** A virtual service's labels: the Service it serves (namespace and name) and the address. */
const SERVICE_LABELS = ['namespace', 'service', 'vip', 'port', 'protocol'] as const;

/**
 * The per-service families, in the text format prom-client writes (HELP, TYPE, one line a
 * series; families apart by a blank line). Kernel counters are set from the kernel's value:
 * a counter that restarts from 0 when the virtual service is recreated, which rate() handles.
 */
const SERVICE_FAMILIES: readonly {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  value: (s: ServiceFigures) => number;
}[] = [
  {
    name: 'portlb_ipvs_service_connections_total',
    help: 'Connections scheduled by a virtual service (kernel counter)',
    type: 'counter',
    value: (s) => s.stats?.connections ?? 0,
  },
  {
    name: 'portlb_ipvs_service_bytes_in_total',
    help: 'Bytes in through a virtual service (kernel counter)',
    type: 'counter',
    value: (s) => s.stats?.bytesIn ?? 0,
  },
  {
    name: 'portlb_ipvs_service_bytes_out_total',
    help: 'Bytes out through a virtual service (kernel counter)',
    type: 'counter',
    value: (s) => s.stats?.bytesOut ?? 0,
  },
  {
    name: 'portlb_ipvs_active_connections',
    help: 'Active connections per virtual service',
    type: 'gauge',
    value: (s) => s.activeConnections,
  },
];

/** Bytes per encoded chunk: a scrape writes them one after another as the socket drains. */
const CHUNK_BYTES = 64 * 1024;

/** Text encoded as it comes into buffers of CHUNK_BYTES (one longer text gets its own). */
class ChunkWriter {
  private readonly chunks: Buffer[] = [];
  private current: Buffer | undefined;
  private at = 0;

  write(text: string): this {
    const length = Buffer.byteLength(text);
    if (!this.current || this.at + length > this.current.length) {
      this.flush();
      if (length > CHUNK_BYTES) {
        this.chunks.push(Buffer.from(text));
        return this;
      }
      this.current = Buffer.allocUnsafe(CHUNK_BYTES);
    }
    this.at += this.current.write(text, this.at);
    return this;
  }

  private flush(): void {
    if (this.current && this.at) this.chunks.push(this.current.subarray(0, this.at));
    this.current = undefined;
    this.at = 0;
  }

  finish(): Buffer[] {
    this.flush();
    return this.chunks;
  }
}

const familyHeader = (f: (typeof SERVICE_FAMILIES)[number]): string =>
  `\n# HELP ${f.name} ${f.help}\n# TYPE ${f.name} ${f.type}\n`;

/** A label value as the text format wants it (Kubernetes names need none of this; owner ids from a file might). */
const labelValue = (v: string): string => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
