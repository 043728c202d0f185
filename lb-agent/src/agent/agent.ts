// lb-agent: wiring of the source, the data plane, the speaker, the sync loop and the
// HTTP endpoints, plus the graceful shutdown sequence (DESIGN.md decision 8).
import { readFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import { networkInterfaces } from 'node:os';
import type { GuardBackend } from '../bfd/dead-man.ts';
import { GobgpSpeaker } from '../bgp/gobgp-speaker.ts';
import type { BgpPeerConfig, BgpSpeaker, PeerStatus } from '../bgp/types.ts';
import { type AgentConfig, type PeerFields, readPassword } from '../config/agent-config.ts';
import { PoolRegistry } from '../config/ownership.ts';
import { planReload } from '../config/reload.ts';
import { ConfigError } from '../config/validate.ts';
import { describeError, errorCode } from '../errors.ts';
import type { Prober } from '../health/probe.ts';
import type { IpvsClient } from '../ipvs/client.ts';
import { NetlinkIpvsClient } from '../ipvs/netlink-client.ts';
import { ProcSysctls } from '../ipvs/sysctl.ts';
import type { ServiceState } from '../ipvs/types.ts';
import { ipFamily } from '../net/ip.ts';
import { type Clock, systemClock } from '../util/clock.ts';
import { type Logger, silentLogger } from '../util/log.ts';
import { TimeSlicer } from '../util/slicer.ts';
import { VERSION } from '../version.ts';
import { BfdLane } from './bfd-lane.ts';
import { VanishDetector } from './coexistence.ts';
import { Conditions } from './conditions.ts';
import { DataPlane } from './data-plane.ts';
import { HealthLane } from './health-lane.ts';
import { listenAddress, startAgentHttp } from './http.ts';
import { AgentMetrics } from './metrics.ts';
import { detectNetfilter, type NetfilterManager } from './netfilter.ts';
import { NetfilterRepair } from './netfilter-repair.ts';
import { type DesiredSource, Reconciler } from './reconciler.ts';
import { ServiceStatsReader } from './service-stats.ts';
import { StandaloneSource } from './sources.ts';
import { buildStatus, nodeReport, ownersByIdSliced } from './status.ts';
import { type AddressManager, LocalRouteManager } from './vips.ts';

export interface AgentDeps {
  ipvs?: IpvsClient;
  addresses?: AddressManager;
  netfilter?: NetfilterManager;
  speaker?: BgpSpeaker;
  source?: DesiredSource;
  /** Where the dead-man switch keeps its guard (default: the netfilter backend's kind). */
  guard?: GuardBackend;
  /** How health checks probe (default: real sockets). */
  prober?: Prober;
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

/** The address families a configured peer carries (its own address's by default). */
const peerFamilies = (p: {
  address: string;
  families?: readonly ('ipv4' | 'ipv6')[];
}): ('ipv4' | 'ipv6')[] => [...(p.families ?? [ipFamily(p.address) ?? 'ipv4'])];

/** One peer of the configuration (or of a PortlbBgpPeer) as the speaker takes it. */
export function peerConfig(p: PeerFields): BgpPeerConfig {
  return {
    address: p.address,
    asn: p.asn,
    port: p.port,
    password: readPassword(p.passwordFile),
    holdTime: p.holdTime,
    keepaliveInterval: p.keepaliveInterval ?? Math.floor(p.holdTime / 3),
    ebgpMultihopTtl: p.ebgpMultihopTtl,
    gracefulRestart: p.gracefulRestartTime ? { restartTime: p.gracefulRestartTime } : undefined,
    families: peerFamilies(p),
    localAddress: p.localAddress,
    passive: p.passive,
    description: p.description,
  };
}

export class Agent {
  /** The configuration in force (a reload replaces it: see reloadConfig). */
  config: AgentConfig;
  readonly metrics = new AgentMetrics();
  readonly log: Logger;
  readonly clock: Clock;
  /**
   * Ownership: addresses inside the pools in force, and nothing else (config/ownership.ts):
   * the source's when it changes them (PortlbAddressPool objects), else the file's.
   */
  readonly owns = (address: string): boolean => this.pools.owns(address);
  private readonly filePools: PoolRegistry;
  readonly conditions: Conditions;
  private readonly o: AgentOptions;
  private readonly deps: AgentDeps;
  ipvs!: IpvsClient;
  addresses!: AddressManager;
  netfilter!: NetfilterManager;
  private netfilterRepair: NetfilterRepair | undefined;
  health!: HealthLane;
  speaker: BgpSpeaker | undefined;
  source!: DesiredSource;
  reconciler!: Reconciler;
  bfd: BfdLane | undefined;
  private routerId: string | undefined;
  /** The address families of the peers in force (a VIP of another family is not announced). */
  private readonly families = new Set<'ipv4' | 'ipv6'>();
  private http: Server | undefined;
  private statsCache: { at: number; run: Promise<void> } | undefined;
  private readonly serviceStats = new ServiceStatsReader();

  constructor(options: AgentOptions, deps: AgentDeps = {}) {
    this.o = options;
    this.config = options.config;
    this.deps = deps;
    this.log = deps.logger ?? silentLogger;
    this.clock = deps.clock ?? systemClock;
    this.filePools = new PoolRegistry(options.config.pools);
    this.conditions = new Conditions(this.log);
  }

  /** Builds the source first: a bad services file stops everything before the kernel is touched. */
  async prepare(): Promise<void> {
    this.health = new HealthLane({
      clock: this.clock,
      logger: this.log,
      metrics: this.metrics,
      nodeName: this.o.nodeName,
      prober: this.deps.prober,
      changed: () => this.reconciler?.trigger(),
      event: (service, type, reason, message) => this.source?.serviceEvent?.(service, type, reason, message),
    });
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
      const source = new KubernetesSource({
        config: this.config,
        nodeName: this.o.nodeName,
        identity: this.o.identity,
        namespace: this.o.namespace,
        clock: this.clock,
        logger: this.log,
        metrics: this.metrics,
        conditions: this.conditions,
      });
      await source.prepare();
      this.source = source;
    }
  }

  async start(): Promise<void> {
    if (!this.source) await this.prepare();
    const cfg = this.config;
    this.ipvs = this.deps.ipvs ?? NetlinkIpvsClient.open({ sysctls: new ProcSysctls(cfg.ipvs.sysctlPath) });
    this.addresses = this.deps.addresses ?? new LocalRouteManager(cfg.ipvs.vipInterface);
    // ipvs.snat naming a backend is the older spelling of ipvs.netfilter.
    const backend =
      cfg.ipvs.netfilter === 'auto' && cfg.ipvs.snat !== 'auto' && cfg.ipvs.snat !== 'none'
        ? cfg.ipvs.snat
        : cfg.ipvs.netfilter;
    this.netfilter = this.deps.netfilter ?? (await detectNetfilter(backend, { snatMark: cfg.ipvs.snatMark }));
    this.log.info(
      {
        netfilter: this.netfilter.kind,
        vipFilter: cfg.ipvs.vipFilter,
        mode: cfg.mode,
        node: this.o.nodeName,
      },
      'starting',
    );
    await this.checkHost();
    // Without BGP nothing is announced anyway: no family to leave out.
    this.setFamilies(cfg.bgp ? cfg.bgp.peers : undefined);
    if (cfg.bgp) await this.startSpeaker(cfg.bgp);

    const vanish = new VanishDetector(this.clock);
    const dataPlane = new DataPlane({
      ipvs: this.ipvs,
      addresses: this.addresses,
      netfilter: this.netfilter,
      vipFilter: cfg.ipvs.vipFilter,
      snat: cfg.ipvs.snat !== 'none',
      owns: this.owns,
      drainTimeoutMs: cfg.defaults.drainTimeoutSeconds * 1000,
      timeouts: { tcpFin: cfg.ipvs.tcpFinTimeoutSeconds },
      clock: this.clock,
      logger: this.log,
    });
    this.reconciler = new Reconciler({
      source: this.source,
      health: this.health.checker,
      dataPlane,
      speaker: this.speaker,
      announce: {
        communities: [...(cfg.bgp?.communities ?? [])],
        peerFamilies: this.families,
      },
      clock: this.clock,
      logger: this.log,
      metrics: this.metrics,
      minIntervalMs: cfg.sync.minIntervalMs,
      resyncMs: cfg.sync.resyncSeconds * 1000,
      retryMaxMs: cfg.sync.retryMaxSeconds * 1000,
      onPass: (r) => {
        if (r.report.vanished.length) this.metrics.ipvsVanished.inc(r.report.vanished.length);
        const suspect = vanish.observe(r.report.vanished);
        if (suspect)
          this.conditions.set('ipvs-conflict', {
            severity: 'warning',
            reason: 'IpvsServicesDeleted',
            message: `IPVS services of portlb keep disappearing (${suspect.count} in ${suspect.passes} read-backs, e.g. ${suspect.example}): another IPVS user deletes them. kube-proxy in IPVS mode does this unless its --ipvs-exclude-cidrs (ipvs.excludeCIDRs) covers portlb's pools (${this.poolText()})`,
          });
        else if (vanish.quiet()) this.conditions.clear('ipvs-conflict');
      },
    });
    const { host, port } = listenAddress(
      cfg.http.listen,
      this.o.nodeAddress ?? cfg.bgp?.routerId ?? nodeIpv4(undefined),
    );
    this.http = await startAgentHttp(
      {
        liveness: () => this.liveness(),
        readiness: () => this.readiness(),
        metrics: async () => {
          // The gauges keep their last values when the kernel cannot be read; the error is counted.
          await this.perServiceMetrics().catch((err) => {
            this.metrics.errors.inc({ code: errorCode(err), step: 'metrics' });
            this.log.debug({ err: describeError(err) }, 'per-service metrics: kernel read failed');
          });
          await this.refreshPeerMetrics();
          this.health.refreshMetrics();
          return {
            contentType: this.metrics.registry.contentType,
            body: await this.metrics.expositionChunks(),
          };
        },
        status: () => this.status(),
      },
      { host, port },
    );
    this.reconciler.start();
    this.netfilterRepair = new NetfilterRepair({
      netfilter: this.netfilter,
      intervalMs: cfg.sync.netfilterResyncSeconds * 1000,
      clock: this.clock,
      logger: this.log,
      metrics: this.metrics,
    }).start();
    if (cfg.bfd && cfg.bgp) this.startBfd();
    this.source.publishNodeStatus?.(async () => {
      const slicer = new TimeSlicer();
      return nodeReport(
        {
          node: this.o.nodeName,
          identity: this.o.identity,
          version: VERSION,
          leader: this.source.isLeader?.() ?? false,
          ready: this.readiness(),
          last: this.reconciler.last,
          bgp: this.speaker
            ? { connected: this.speaker.connected(), peers: await this.refreshPeerMetrics() }
            : null,
          bfd: this.bfd?.status() ?? null,
          health: this.health.checker.summary(),
        },
        slicer,
      );
    });
  }

  private startBfd(): void {
    const kind = this.netfilter.kind;
    const guard = this.deps.guard ?? (kind === 'nftables' || kind === 'iptables-legacy' ? kind : undefined);
    if (!guard) throw new Error(`bfd.deadManSeconds: no guard for netfilter backend ${kind}`);
    this.bfd = new BfdLane({
      config: this.config,
      routerId: this.routerId!,
      passRunningMs: () => this.reconciler.passRunningMs(),
      guard,
      metrics: this.metrics,
      clock: this.clock,
      logger: this.log,
    }).start();
  }

  /** The pools in force: the source's (Kubernetes objects included) once it runs, else the file's. */
  private get pools(): PoolRegistry {
    return this.source?.pools ?? this.filePools;
  }

  private poolText(): string {
    return this.pools.pools.flatMap((p) => p.blocks.map((b) => b.text)).join(', ');
  }

  private async startSpeaker(bgp: NonNullable<AgentConfig['bgp']>): Promise<void> {
    const speaker =
      this.deps.speaker ??
      new GobgpSpeaker({ target: bgp.speakerSocket, clock: this.clock, logger: this.log }).start();
    this.speaker = speaker;
    speaker.on('connection', (up) => this.metrics.speakerConnected.set(up ? 1 : 0));
    speaker.on('provisioned', () => this.metrics.speakerProvisions.inc());
    speaker.on('peer', ({ address, state }) => {
      this.log.info({ peer: address, state }, 'BGP peer state');
      this.metrics.peerUp.reset();
      void this.refreshPeerMetrics();
    });
    const routerId = bgp.routerId ?? nodeIpv4(this.o.nodeAddress);
    if (!routerId)
      throw new Error(
        'bgp.routerId: not set and no IPv4 address found on this node (set bgp.routerId or PORTLB_NODE_IP)',
      );
    this.routerId = routerId;
    // Desired state is kept even if the speaker is not up yet: it is provisioned on connect.
    await speaker
      .setGlobal({
        asn: bgp.asn,
        routerId,
        listenPort: bgp.listenPort,
        listenAddresses: [...bgp.listenAddresses],
      })
      .catch((err) =>
        this.log.warn({ err: describeError(err) }, 'speaker not ready; global config kept for later'),
      );
    // With PortlbBgpPeer objects, the peers are set once the objects are listed: set now,
    // the file's alone would remove the objects' peers from gobgpd (their sessions reset).
    if (this.source.watchPeers?.((peers) => void this.applyPeers(peers))) {
      this.log.info('BGP peers: set once the PortlbBgpPeer objects are listed');
      return;
    }
    await this.applyPeers(this.config.bgp?.peers ?? []);
  }

  /** The BGP peers in force, to the speaker and to the announcer's families. */
  private async applyPeers(peers: readonly PeerFields[]): Promise<void> {
    this.setFamilies(peers);
    await this.speaker
      ?.setPeers(peers.map(peerConfig))
      .catch((err) => this.log.warn({ err: describeError(err) }, 'speaker not ready; peers kept for later'));
  }

  private setFamilies(peers: readonly PeerFields[] | undefined): void {
    this.families.clear();
    for (const f of peers ? peers.flatMap((p) => peerFamilies(p)) : (['ipv4', 'ipv6'] as const))
      this.families.add(f);
  }

  /**
   * A new configuration for the running agent (SIGHUP, standalone mode): applied when
   * everything it changes can be taken live (the pools, the BGP peers), else refused as a
   * whole (ConfigError naming the options that need a restart, or the services file that
   * no longer fits the pools) and nothing changes. Returns what was applied.
   */
  async reloadConfig(next: AgentConfig, source: string): Promise<string[]> {
    const refuse = (problems: string[]) => {
      throw new ConfigError('CONFIG_RELOAD_REFUSED', source, problems);
    };
    if (this.config.mode !== 'standalone' || !(this.source instanceof StandaloneSource))
      refuse([
        'Kubernetes mode takes new pools from PortlbAddressPool objects, and a new configuration by a rollout (the chart rolls the pods when its ConfigMap changes)',
      ]);
    const plan = planReload(this.config, next);
    if (plan.restart.length)
      refuse([`needs a restart to change: ${plan.restart.join(', ')} (systemctl restart portlb-agent)`]);
    const applied: string[] = [];
    if (plan.pools) {
      (this.source as StandaloneSource).setPools(next.pools, source);
      applied.push('pools');
    }
    this.config = next;
    if (plan.peers && this.speaker) {
      applied.push('bgp.peers');
      await this.applyPeers(next.bgp?.peers ?? []);
    }
    this.reconciler?.trigger();
    return applied;
  }

  /** Node facts worth a warning at start. */
  private async checkHost(): Promise<void> {
    // NAT-mode replies are forwarded back to clients: without ip_forward they are dropped.
    const forward = await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8').catch(() => undefined);
    if (forward?.trim() === '0') {
      this.metrics.errors.inc({ code: 'IP_FORWARD_OFF', step: 'start' });
      this.log.warn(
        'net.ipv4.ip_forward is 0 on this node: replies of nat-mode services cannot be forwarded back to clients; set net.ipv4.ip_forward=1 (Kubernetes nodes normally have it)',
      );
    }
    // kube-proxy in IPVS mode keeps its VIPs on kube-ipvs0 and deletes every IPVS service it
    // does not own, unless told to leave portlb's pools alone.
    if (Object.hasOwn(networkInterfaces(), 'kube-ipvs0')) {
      this.log.warn(
        { pools: this.poolText() },
        "kube-proxy runs in IPVS mode on this node: its --ipvs-exclude-cidrs (ipvs.excludeCIDRs) must cover portlb's pools, or it deletes portlb's IPVS services (portlb reports it if it happens)",
      );
    }
  }

  private async refreshPeerMetrics(): Promise<PeerStatus[]> {
    if (!this.speaker?.connected()) return [];
    try {
      const peers = await this.speaker.listPeers();
      for (const p of peers) {
        this.metrics.peerUp.set({ peer: p.address, state: p.state }, p.state === 'established' ? 1 : 0);
      }
      return peers;
    } catch {
      return []; // disconnected: the connection gauge says so
    }
  }

  liveness(): { ok: boolean; reason: string | undefined } {
    if (!this.reconciler) return { ok: true, reason: undefined };
    return this.reconciler.liveness(this.config.sync.livenessResyncs * this.config.sync.resyncSeconds * 1000);
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
    let table: ServiceState[] | undefined;
    let kernelError: string | undefined;
    try {
      table = (await this.ipvs.getTable({ stats: true })).filter(
        (s) => s.service.key.kind === 'address' && this.owns(s.service.key.address),
      );
    } catch (err) {
      kernelError = describeError(err);
      this.metrics.errors.inc({ code: errorCode(err), step: 'status' });
    }
    const peers = await this.refreshPeerMetrics();
    return buildStatus({
      node: this.o.nodeName,
      mode: this.config.mode,
      leader: this.source.isLeader?.() ?? null,
      source: {
        kind: this.source.kind,
        synced: this.source.synced(),
        healthy: this.source.healthy(),
        error: this.source.lastError?.(),
      },
      ready: this.readiness(),
      live: this.liveness(),
      last: this.reconciler.last,
      table,
      kernelError,
      bgp: this.speaker ? { connected: this.speaker.connected(), peers } : null,
      bfd: this.bfd?.status() ?? null,
      health: this.health.checker.summary(),
      notices: this.conditions.list(),
      clock: this.clock,
    });
  }

  private async perServiceMetrics(): Promise<void> {
    // A stats dump of a large table costs seconds: at most one every 10 s.
    const now = this.clock.monotonic();
    if (this.statsCache && now - this.statsCache.at < 10_000) return this.statsCache.run;
    const run = (async () => {
      const slicer = new TimeSlicer();
      const owners = await ownersByIdSliced(this.reconciler?.last, () => slicer.pause());
      await slicer.check();
      const render = this.metrics.serviceStats(owners);
      await this.serviceStats.read(
        this.ipvs,
        (key) => this.owns(key.address),
        (figures) => render.add(figures),
        () => slicer.pause(),
      );
      render.commit();
    })();
    this.statsCache = { at: now, run };
    return run;
  }

  /**
   * Graceful shutdown: paths re-announced with GRACEFUL_SHUTDOWN (and LOCAL_PREF 0, and a
   * longer AS path toward eBGP routers), a wait while routers move traffic to other
   * replicas, the withdraw, a short wait for it to propagate, exit. IPVS, VIPs and SNAT
   * stay for the next start to adopt.
   */
  async shutdown(options: { graceful: boolean }): Promise<void> {
    const wait = (this.config.bgp?.gracefulShutdownSeconds ?? 0) * 1000;
    // Gone from the cluster view when leaving on purpose; stale (then gone with the Node) otherwise.
    await this.source?.closeNodeStatus?.({ remove: options.graceful });
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
    this.bfd?.close();
    this.netfilterRepair?.close();
    this.health?.close();
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
