// lb-agent: wiring of the source, the data plane, the speaker, the sync loop and the
// HTTP endpoints, plus the graceful shutdown sequence (DESIGN.md decision 8).
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { networkInterfaces } from 'node:os';
import { GobgpSpeaker } from '../bgp/gobgp-speaker.ts';
import type { BgpPeerConfig, BgpSpeaker } from '../bgp/types.ts';
import { type AgentConfig, readPassword } from '../config/agent-config.ts';
import { describeError } from '../errors.ts';
import type { IpvsClient } from '../ipvs/client.ts';
import { NetlinkIpvsClient } from '../ipvs/netlink-client.ts';
import { ProcSysctls } from '../ipvs/sysctl.ts';
import { destinationId, serviceId } from '../ipvs/types.ts';
import { ipFamily } from '../net/ip.ts';
import { blockContains } from '../net/pool.ts';
import { type Clock, systemClock } from '../util/clock.ts';
import { type Logger, silentLogger } from '../util/log.ts';
import { DataPlane } from './data-plane.ts';
import { AgentMetrics } from './metrics.ts';
import { type DesiredSource, Reconciler } from './reconciler.ts';
import { detectSnat, type SnatManager } from './snat.ts';
import { StandaloneSource } from './sources.ts';
import { type AddressManager, LinkAddressManager } from './vips.ts';

export interface AgentDeps {
  ipvs?: IpvsClient;
  addresses?: AddressManager;
  snat?: SnatManager;
  speaker?: BgpSpeaker;
  source?: DesiredSource;
  clock?: Clock;
  logger?: Logger;
}

export interface AgentOptions {
  config: AgentConfig;
  nodeName: string;
  /** Leader-election identity (the pod name in Kubernetes). */
  identity: string;
  /** The pod's namespace (POD_NAMESPACE): the Lease's unless the configuration names one. */
  namespace?: string;
  /** This node's address (PORTLB_NODE_IP): `node` in http.listen, and the default router id. */
  nodeAddress?: string;
}

/** The node's IPv4 address: the one given (PORTLB_NODE_IP), else its first global one. */
export function nodeIpv4(given: string | undefined): string | undefined {
  if (given && ipFamily(given) === 'ipv4') return given;
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return undefined;
}

export function peersFromConfig(config: AgentConfig): BgpPeerConfig[] {
  return (config.bgp?.peers ?? []).map((p) => ({
    address: p.address,
    asn: p.asn,
    port: p.port,
    password: readPassword(p.passwordFile),
    holdTime: p.holdTime,
    keepaliveInterval: p.keepaliveInterval ?? Math.floor(p.holdTime / 3),
    ebgpMultihopTtl: p.ebgpMultihopTtl,
    gracefulRestart: p.gracefulRestartTime ? { restartTime: p.gracefulRestartTime } : undefined,
    families: p.families ?? [ipFamily(p.address) ?? 'ipv4'],
    localAddress: p.localAddress,
    passive: p.passive,
    description: p.description,
  }));
}

export class Agent {
  readonly config: AgentConfig;
  readonly metrics = new AgentMetrics();
  readonly log: Logger;
  readonly clock: Clock;
  private readonly o: AgentOptions;
  private readonly deps: AgentDeps;
  ipvs!: IpvsClient;
  addresses!: AddressManager;
  snat!: SnatManager;
  speaker: BgpSpeaker | undefined;
  source!: DesiredSource;
  reconciler!: Reconciler;
  private http: Server | undefined;
  private statsCache: { at: number; run: Promise<void> } | undefined;

  constructor(options: AgentOptions, deps: AgentDeps = {}) {
    this.o = options;
    this.config = options.config;
    this.deps = deps;
    this.log = deps.logger ?? silentLogger;
    this.clock = deps.clock ?? systemClock;
  }

  /** Ownership: addresses inside the configured pools (plus the services file's, standalone). */
  private owns = (address: string): boolean => {
    if (this.source instanceof StandaloneSource) return this.source.ownership()(address);
    return this.config.pools.some((p) => p.blocks.some((b) => blockContains(b, address)));
  };

  /** Builds the source first: a bad services file stops everything before the kernel is touched. */
  async prepare(): Promise<void> {
    if (this.deps.source) this.source = this.deps.source;
    else if (this.config.mode === 'standalone') {
      const s = new StandaloneSource({
        file: this.config.standalone!.servicesFile,
        config: this.config,
        nodeName: this.o.nodeName,
        clock: this.clock,
        logger: this.log,
        metrics: this.metrics,
      });
      await s.load();
      this.source = s;
    } else {
      const { KubernetesSource } = await import('./kubernetes-source.ts');
      this.source = new KubernetesSource({
        config: this.config,
        nodeName: this.o.nodeName,
        identity: this.o.identity,
        namespace: this.o.namespace,
        clock: this.clock,
        logger: this.log,
        metrics: this.metrics,
      });
    }
  }

  async start(): Promise<void> {
    if (!this.source) await this.prepare();
    const cfg = this.config;
    this.ipvs = this.deps.ipvs ?? NetlinkIpvsClient.open({ sysctls: new ProcSysctls(cfg.ipvs.sysctlPath) });
    this.addresses = this.deps.addresses ?? new LinkAddressManager(cfg.ipvs.vipInterface);
    this.snat = this.deps.snat ?? (await detectSnat(cfg.ipvs.snat));
    this.log.info({ snat: this.snat.kind, mode: cfg.mode, node: this.o.nodeName }, 'starting');
    await this.checkForwarding();

    if (cfg.bgp) {
      const speaker =
        this.deps.speaker ??
        new GobgpSpeaker({ target: cfg.bgp.speakerSocket, clock: this.clock, logger: this.log }).start();
      this.speaker = speaker;
      speaker.on('connection', (up) => this.metrics.speakerConnected.set(up ? 1 : 0));
      speaker.on('provisioned', () => this.metrics.speakerProvisions.inc());
      speaker.on('peer', ({ address, state }) => {
        this.log.info({ peer: address, state }, 'BGP peer state');
        this.metrics.peerUp.reset();
        void this.refreshPeerMetrics();
      });
      const routerId = cfg.bgp.routerId ?? nodeIpv4(this.o.nodeAddress);
      if (!routerId)
        throw new Error(
          'bgp.routerId: not set and no IPv4 address found on this node (set bgp.routerId or PORTLB_NODE_IP)',
        );
      // Desired state is kept even if the speaker is not up yet: it is provisioned on connect.
      await speaker
        .setGlobal({
          asn: cfg.bgp.asn,
          routerId,
          listenPort: cfg.bgp.listenPort,
          listenAddresses: [...cfg.bgp.listenAddresses],
        })
        .catch((err) =>
          this.log.warn({ err: describeError(err) }, 'speaker not ready; global config kept for later'),
        );
      await speaker
        .setPeers(peersFromConfig(cfg))
        .catch((err) =>
          this.log.warn({ err: describeError(err) }, 'speaker not ready; peers kept for later'),
        );
    }

    const dataPlane = new DataPlane({
      ipvs: this.ipvs,
      addresses: this.addresses,
      snat: this.snat,
      owns: this.owns,
      drainTimeoutMs: cfg.defaults.drainTimeoutSeconds * 1000,
      clock: this.clock,
      logger: this.log,
    });
    this.reconciler = new Reconciler({
      source: this.source,
      dataPlane,
      speaker: this.speaker,
      announce: { communities: [...(cfg.bgp?.communities ?? [])], shutdownPrepend: 2 },
      clock: this.clock,
      logger: this.log,
      metrics: this.metrics,
      minIntervalMs: cfg.sync.minIntervalMs,
      resyncMs: cfg.sync.resyncSeconds * 1000,
      retryMaxMs: cfg.sync.retryMaxSeconds * 1000,
    });
    await this.startHttp();
    this.reconciler.start();
  }

  /** NAT-mode replies are forwarded back to clients: without ip_forward they are dropped. */
  private async checkForwarding(): Promise<void> {
    const value = await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8').catch(() => undefined);
    if (value?.trim() === '0') {
      this.metrics.errors.inc({ code: 'IP_FORWARD_OFF', step: 'start' });
      this.log.warn(
        'net.ipv4.ip_forward is 0 on this node: replies of nat-mode services cannot be forwarded back to clients; set net.ipv4.ip_forward=1 (Kubernetes nodes normally have it)',
      );
    }
  }

  private async refreshPeerMetrics(): Promise<void> {
    if (!this.speaker) return;
    try {
      for (const p of await this.speaker.listPeers()) {
        this.metrics.peerUp.set({ peer: p.address, state: p.state }, p.state === 'established' ? 1 : 0);
      }
    } catch {
      // disconnected: the connection gauge says so
    }
  }

  readiness(): { ready: boolean; reasons: string[] } {
    const reasons: string[] = [];
    if (!this.source?.synced()) reasons.push(`${this.source?.kind ?? 'source'} not synced`);
    const last = this.reconciler?.last;
    if (!last) reasons.push('no sync pass yet');
    else if (!last.ok)
      reasons.push(`last sync failed: ${last.report.failures.map((f) => `${f.step} ${f.code}`).join(', ')}`);
    if (this.speaker && !this.speaker.connected()) reasons.push('BGP speaker not connected');
    if (this.reconciler?.isShuttingDown) reasons.push('shutting down');
    return { ready: reasons.length === 0, reasons };
  }

  /** What this node does, for `portlb status`. Reads the kernel for live connection counts. */
  async status(): Promise<Record<string, unknown>> {
    const last = this.reconciler.last;
    const owners = new Map(
      (last?.desired.virtualServices ?? []).map((v) => [serviceId(v.spec.service.key), v.owner]),
    );
    const table = (await this.ipvs.getTable({ stats: true })).filter(
      (s) => s.service.key.kind === 'address' && this.owns(s.service.key.address),
    );
    const announced = new Set((last?.ads ?? []).map((a) => a.prefix));
    let peers: unknown[] = [];
    if (this.speaker?.connected()) peers = await this.speaker.listPeers().catch(() => []);
    return {
      node: this.o.nodeName,
      mode: this.config.mode,
      leader: this.source.isLeader?.() ?? null,
      source: { synced: this.source.synced(), healthy: this.source.healthy() },
      ready: this.readiness(),
      lastSync: last && {
        at: new Date(last.at).toISOString(),
        ok: last.ok,
        full: last.full,
        durationMs: Math.round(last.durationMs),
        failures: last.report.failures,
      },
      services: table.map((s) => ({
        id: serviceId(s.service.key),
        owner: owners.get(serviceId(s.service.key)) ?? null,
        scheduler: s.service.scheduler,
        flags: s.service.schedulerFlags,
        connections: s.stats?.connections ?? 0,
        backends: s.destinations.map((d) => ({
          id: destinationId(d),
          forward: d.forward,
          weight: d.weight,
          active: d.activeConnections,
          inactive: d.inactiveConnections,
        })),
      })),
      vips: (last?.desired.vips ?? []).map((v) => ({
        address: v.address,
        owners: v.owners,
        announced: announced.has(`${v.address}/${v.family === 'ipv4' ? 32 : 128}`),
        withheld: last?.withheld.find((w) => w.address === v.address)?.reason ?? null,
      })),
      draining: (last?.report.draining ?? []).map((d) => ({
        service: serviceId(d.key),
        backend: destinationId(d.destination),
        active: d.activeConnections,
        since: new Date(d.since).toISOString(),
      })),
      skipped: last?.desired.skipped ?? [],
      warnings: last?.desired.warnings ?? [],
      bgp: this.speaker ? { connected: this.speaker.connected(), peers, announced: [...announced] } : null,
    };
  }

  private async perServiceMetrics(): Promise<void> {
    // A stats dump of a large table costs seconds: at most one every 10 s.
    const now = this.clock.now();
    if (this.statsCache && now - this.statsCache.at < 10_000) return this.statsCache.run;
    const run = (async () => {
      const table = await this.ipvs.getTable({ stats: true });
      for (const g of [
        this.metrics.serviceConnections,
        this.metrics.serviceBytesIn,
        this.metrics.serviceBytesOut,
        this.metrics.activeConnections,
      ])
        g.reset();
      for (const s of table) {
        if (s.service.key.kind !== 'address' || !this.owns(s.service.key.address)) continue;
        const service = serviceId(s.service.key);
        this.metrics.serviceConnections.set({ service }, s.stats?.connections ?? 0);
        this.metrics.serviceBytesIn.set({ service }, s.stats?.bytesIn ?? 0);
        this.metrics.serviceBytesOut.set({ service }, s.stats?.bytesOut ?? 0);
        this.metrics.activeConnections.set(
          { service },
          s.destinations.reduce((n, d) => n + d.activeConnections, 0),
        );
      }
    })();
    this.statsCache = { at: now, run };
    return run;
  }

  private async startHttp(): Promise<void> {
    const listen = this.config.http.listen;
    const i = listen.lastIndexOf(':');
    let host = listen.slice(0, i).replace(/^\[|\]$/g, '') || '0.0.0.0';
    const port = Number(listen.slice(i + 1));
    if (host === 'node') {
      const address = this.o.nodeAddress ?? this.config.bgp?.routerId ?? nodeIpv4(undefined);
      if (!address)
        throw new Error(
          `http.listen ${listen}: this node's address is unknown (set PORTLB_NODE_IP, bgp.routerId, or an address in http.listen)`,
        );
      host = address;
    }
    const server = createServer((req, res) => {
      const url = req.url?.split('?')[0];
      const send = (code: number, body: string, type = 'text/plain; charset=utf-8') => {
        res.writeHead(code, { 'content-type': type });
        res.end(body);
      };
      void (async () => {
        try {
          if (url === '/healthz') return send(200, 'ok\n');
          if (url === '/readyz') {
            const r = this.readiness();
            return send(r.ready ? 200 : 503, `${JSON.stringify(r)}\n`, 'application/json');
          }
          if (url === '/metrics') {
            await this.perServiceMetrics().catch(() => {});
            await this.refreshPeerMetrics();
            return send(200, await this.metrics.registry.metrics(), this.metrics.registry.contentType);
          }
          if (url === '/status')
            return send(200, `${JSON.stringify(await this.status(), null, 2)}\n`, 'application/json');
          return send(404, 'not found: /healthz /readyz /metrics /status\n');
        } catch (err) {
          send(500, `${describeError(err)}\n`);
        }
      })();
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => reject(new Error(`http.listen ${listen}: ${describeError(err)}`)));
      server.listen(port, host, resolve);
    });
    this.http = server;
  }

  /**
   * Graceful shutdown: paths re-announced with GRACEFUL_SHUTDOWN and a longer AS path,
   * a wait while routers move traffic to other replicas, the withdraw, a short wait for
   * it to propagate, exit. IPVS, VIPs and SNAT stay for the next start to adopt.
   */
  async shutdown(options: { graceful: boolean }): Promise<void> {
    const wait = (this.config.bgp?.gracefulShutdownSeconds ?? 0) * 1000;
    if (options.graceful && this.speaker && this.reconciler) {
      this.log.info({ waitMs: wait }, 'graceful shutdown: announcing GRACEFUL_SHUTDOWN');
      await this.reconciler
        .beginShutdown()
        .catch((err) => this.log.warn({ err: describeError(err) }, 'could not mark paths'));
      await this.clock.sleep(wait);
      this.log.info('graceful shutdown: withdrawing');
      await this.reconciler
        .close({ withdraw: true })
        .catch((err) => this.log.warn({ err: describeError(err) }, 'withdraw failed'));
      await this.clock.sleep(Math.min(1000, wait));
    } else {
      await this.reconciler?.close({ withdraw: false }).catch(() => {});
    }
    await this.speaker?.close();
    this.http?.close();
    this.ipvs?.close();
    this.addresses?.close();
    this.log.info('stopped');
  }

  get httpAddress(): { port: number } | undefined {
    const a = this.http?.address();
    return a && typeof a === 'object' ? { port: a.port } : undefined;
  }
}
