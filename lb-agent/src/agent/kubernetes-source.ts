// Kubernetes as the source of desired state.
import type { AgentConfig, PeerFields, Pool } from '../config/agent-config.ts';
import { PoolRegistry } from '../config/ownership.ts';
import type { DesiredState } from '../core/desired.ts';
import type { HealthView } from '../core/types.ts';
import { KubeClient } from '../k8s/client.ts';
import type { Verdict } from '../k8s/config-objects.ts';
import { type KubeConnection, resolveConnection } from '../k8s/connection.ts';
import { KubernetesController } from '../k8s/controller.ts';
import { NodeStatusPublisher, type NodeStatusReport } from '../k8s/node-status.ts';
import type { Clock } from '../util/clock.ts';
import type { Logger } from '../util/log.ts';
import type { Conditions } from './conditions.ts';
import type { AgentMetrics } from './metrics.ts';
import type { DesiredSource } from './reconciler.ts';

export interface KubernetesSourceOptions {
  config: AgentConfig;
  nodeName: string;
  identity: string;
  /** The pod's namespace (POD_NAMESPACE), for the Lease. */
  namespace?: string;
  clock: Clock;
  logger: Logger;
  metrics?: AgentMetrics;
  conditions?: Conditions;
  /** For tests and out-of-cluster runs; otherwise config.kubernetes.kubeconfig or in-cluster. */
  connection?: KubeConnection;
}

export class KubernetesSource implements DesiredSource {
  readonly kind = 'kubernetes' as const;
  private readonly o: KubernetesSourceOptions;
  private controller: KubernetesController | undefined;
  private client: KubeClient | undefined;
  private nodeStatus: NodeStatusPublisher | undefined;
  private peersListener: ((peers: readonly PeerFields[]) => void) | undefined;
  /** The file's pools, then PortlbAddressPool objects': what the data plane owns. */
  readonly pools: PoolRegistry<Pool>;

  constructor(o: KubernetesSourceOptions) {
    this.o = o;
    this.pools = new PoolRegistry(o.config.pools);
  }

  /** Resolves where the API server is (before anything else starts: a bad kubeconfig stops the agent). */
  async prepare(): Promise<void> {
    const connection = this.o.connection ?? (await resolveConnection(this.o.config.kubernetes.kubeconfig));
    this.client = new KubeClient(connection);
    this.o.logger.info({ apiServer: connection.server, via: connection.source }, 'Kubernetes API server');
  }

  start(changed: () => void): void {
    if (!this.client) throw new Error('kubernetes source not prepared');
    const conditions = this.o.conditions;
    this.controller = new KubernetesController({
      client: this.client,
      config: this.o.config,
      nodeName: this.o.nodeName,
      identity: this.o.identity,
      namespace: this.o.namespace,
      clock: this.o.clock,
      logger: this.o.logger,
      onChange: changed,
      onLeaderChange: (leading) => this.o.metrics?.leader.set(leading ? 1 : 0),
      onPoolUsage: (usage) => this.o.metrics?.setPoolUsage(usage),
      pools: this.pools,
      onPoolVerdicts: (verdicts) => this.countVerdicts('PortlbAddressPool', verdicts),
      onPeers: (peers, verdicts) => {
        this.countVerdicts('PortlbBgpPeer', verdicts);
        this.peersListener?.(peers);
      },
      onIpModeDropped: (service) => {
        const message = `the API server drops status.loadBalancer.ingress[].ipMode (seen on ${service}): Kubernetes before 1.30, or the LoadBalancerIPMode feature gate off. kube-proxy then captures traffic to the VIPs on every node; portlb needs Kubernetes 1.30+. Status is no longer rewritten for ipMode alone.`;
        conditions?.set('ipmode', { severity: 'error', reason: 'IpModeUnsupported', message });
        this.controller?.nodeEvent('Warning', 'IpModeUnsupported', message);
      },
    });
    if (conditions) {
      conditions.onChange = (key, c) => {
        if (c && key !== 'ipmode') this.controller?.nodeEvent('Warning', c.reason, c.message);
      };
    }
    this.controller.start();
  }

  /**
   * Tells `listener` the BGP peers in force (the file's, then PortlbBgpPeer objects'),
   * first once the objects are listed, then on every change.
   */
  watchPeers(listener: (peers: readonly PeerFields[]) => void): boolean {
    if (!this.o.config.kubernetes.peerObjects) return false;
    this.peersListener = listener;
    return true;
  }

  private countVerdicts(kind: string, verdicts: readonly Verdict[]): void {
    this.o.metrics?.configObjects.set({ kind, state: 'accepted' }, verdicts.filter((v) => v.accepted).length);
    this.o.metrics?.configObjects.set({ kind, state: 'refused' }, verdicts.filter((v) => !v.accepted).length);
  }

  /** Publishes this node's PortlbNodeStatus from `collect` (unless kubernetes.nodeStatus.enabled is false). */
  publishNodeStatus(collect: () => Promise<NodeStatusReport>): void {
    const cfg = this.o.config.kubernetes.nodeStatus;
    const controller = this.controller;
    if (!cfg.enabled || !this.client || !controller || this.nodeStatus) return;
    const node = this.o.nodeName;
    this.nodeStatus = new NodeStatusPublisher({
      client: this.client,
      lane: controller.lane,
      node,
      nodeUid: () => controller.nodes.get(node)?.uid,
      collect,
      clock: this.o.clock,
      intervalMs: cfg.intervalSeconds * 1000,
      refreshMs: cfg.refreshSeconds * 1000,
      logger: this.o.logger,
      onWrite: (ok) => this.o.metrics?.nodeStatusWrites.inc({ result: ok ? 'ok' : 'error' }),
    }).start();
  }

  /** Stops publishing; `remove` deletes the object (a graceful shutdown: the node announces nothing). */
  async closeNodeStatus(o: { remove: boolean }): Promise<void> {
    const publisher = this.nodeStatus;
    if (!publisher) return;
    await publisher.close(o);
  }

  async stop(): Promise<void> {
    await this.closeNodeStatus({ remove: false });
    await this.controller?.stop();
    this.client?.close();
  }

  synced(): boolean {
    return this.controller?.synced() ?? false;
  }

  healthy(): boolean {
    return this.controller?.connected() ?? false;
  }

  lastError(): string | undefined {
    return this.controller?.lastError();
  }

  isLeader(): boolean {
    return this.controller?.isLeader() ?? false;
  }

  async desired(health?: HealthView): Promise<DesiredState> {
    if (!this.controller) throw new Error('kubernetes source not started');
    return this.controller.sync(health).desired;
  }

  serviceEvent(service: string, type: 'Normal' | 'Warning', reason: string, message: string): void {
    this.controller?.serviceEvent(service, type, reason, message);
  }

  async announced(vips: readonly { address: string; owners: readonly string[] }[]): Promise<void> {
    this.controller?.reportAnnounced(vips);
  }
}
