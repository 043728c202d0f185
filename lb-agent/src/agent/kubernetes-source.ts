// Kubernetes as the source of desired state (loaded only in kubernetes mode: the client
// library is large).
import { KubeConfig } from '@kubernetes/client-node';
import type { AgentConfig } from '../config/agent-config.ts';
import type { DesiredState } from '../core/desired.ts';
import { KubernetesController } from '../k8s/controller.ts';
import type { Clock } from '../util/clock.ts';
import type { Logger } from '../util/log.ts';
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
  /** For tests and out-of-cluster runs; otherwise config.kubernetes.kubeconfig or in-cluster. */
  kubeconfig?: KubeConfig;
}

export function loadKubeConfig(file: string | undefined): KubeConfig {
  const kc = new KubeConfig();
  if (file) kc.loadFromFile(file);
  else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else kc.loadFromDefault();
  return kc;
}

export class KubernetesSource implements DesiredSource {
  readonly kind = 'kubernetes' as const;
  private readonly o: KubernetesSourceOptions;
  private controller: KubernetesController | undefined;

  constructor(o: KubernetesSourceOptions) {
    this.o = o;
  }

  start(changed: () => void): void {
    this.controller = new KubernetesController({
      kubeconfig: this.o.kubeconfig ?? loadKubeConfig(this.o.config.kubernetes.kubeconfig),
      config: this.o.config,
      nodeName: this.o.nodeName,
      identity: this.o.identity,
      namespace: this.o.namespace,
      clock: this.o.clock,
      logger: this.o.logger,
      onChange: changed,
      onLeaderChange: (leading) => this.o.metrics?.leader.set(leading ? 1 : 0),
    });
    this.controller.start();
  }

  async stop(): Promise<void> {
    await this.controller?.stop();
  }

  synced(): boolean {
    return this.controller?.synced() ?? false;
  }

  healthy(): boolean {
    return this.controller?.connected() ?? false;
  }

  isLeader(): boolean {
    return this.controller?.isLeader() ?? false;
  }

  async desired(): Promise<DesiredState> {
    if (!this.controller) throw new Error('kubernetes source not started');
    return (await this.controller.sync()).desired;
  }

  async announced(vips: readonly { address: string; owners: readonly string[] }[]): Promise<void> {
    await this.controller?.reportAnnounced(vips);
  }
}
