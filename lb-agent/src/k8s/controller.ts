// The Kubernetes source of desired state: informers for Services, EndpointSlices and this
// node; the pure translation and computeDesired; and, on the leader only, VIP allocation
// with its status writes and Events. Nothing is computed before every informer synced.

import type {
  CoordinationV1Api,
  CoreV1Api,
  DiscoveryV1Api,
  KubeConfig,
  V1EndpointSlice,
  V1Node,
  V1Service,
} from '@kubernetes/client-node';
import * as k8s from '@kubernetes/client-node';
import type { AgentConfig } from '../config/agent-config.ts';
import { computeDesired, DesiredMemo, type DesiredState } from '../core/desired.ts';
import type { NodeInfo, Skip } from '../core/types.ts';
import { blockContains } from '../net/pool.ts';
import type { Clock } from '../util/clock.ts';
import { systemClock } from '../util/clock.ts';
import { type Logger, silentLogger } from '../util/log.ts';
import { type AllocationPlan, planAllocations } from './allocator.ts';
import { SupervisedInformer } from './informers.ts';
import { LeaderElector } from './leader.ts';
import { nodeInfo, TranslateMemo, translateKubernetes } from './translate.ts';
import { KubeWriter } from './writer.ts';

export interface KubernetesControllerOptions {
  kubeconfig: KubeConfig;
  config: AgentConfig;
  nodeName: string;
  /** Leader election identity (pod name); defaults to the node name. */
  identity?: string;
  /** The pod's namespace: where the Lease lives unless the configuration names one. */
  namespace?: string;
  clock?: Clock;
  logger?: Logger;
  /** Called (debounced by the caller) whenever anything watched changes. */
  onChange: () => void;
  /** Called when leadership changes. */
  onLeaderChange?: (leading: boolean) => void;
  informerBackoffMs?: { initial: number; max: number };
}

export interface KubernetesSync {
  desired: DesiredState;
  node: NodeInfo;
  /** Present on the leader: what allocation decided and what failed to be written. */
  allocation?: { plan: AllocationPlan; errors: string[] };
}

export class KubernetesController {
  private readonly o: KubernetesControllerOptions;
  private readonly log: Logger;
  readonly services: SupervisedInformer<V1Service>;
  readonly slices: SupervisedInformer<V1EndpointSlice>;
  readonly nodes: SupervisedInformer<V1Node>;
  readonly elector: LeaderElector | undefined;
  readonly writer: KubeWriter;
  private readonly announcedEvents = new Set<string>();
  private readonly translateMemo = new TranslateMemo();
  private readonly desiredMemo = new DesiredMemo();

  constructor(o: KubernetesControllerOptions) {
    this.o = o;
    this.log = o.logger ?? silentLogger;
    const clock = o.clock ?? systemClock;
    const kc = o.kubeconfig;
    const core: CoreV1Api = kc.makeApiClient(k8s.CoreV1Api);
    const discovery: DiscoveryV1Api = kc.makeApiClient(k8s.DiscoveryV1Api);
    const common = {
      kubeconfig: kc,
      clock,
      logger: this.log,
      onChange: o.onChange,
      backoffInitialMs: o.informerBackoffMs?.initial,
      backoffMaxMs: o.informerBackoffMs?.max,
    };
    this.services = new SupervisedInformer<V1Service>({
      ...common,
      name: 'services',
      path: '/api/v1/services',
      list: () => core.listServiceForAllNamespaces(),
    });
    this.slices = new SupervisedInformer<V1EndpointSlice>({
      ...common,
      name: 'endpointslices',
      path: '/apis/discovery.k8s.io/v1/endpointslices',
      list: () => discovery.listEndpointSliceForAllNamespaces(),
    });
    const nodeSelector = `metadata.name=${o.nodeName}`;
    this.nodes = new SupervisedInformer<V1Node>({
      ...common,
      name: 'nodes',
      path: '/api/v1/nodes',
      fieldSelector: nodeSelector,
      list: () => core.listNode({ fieldSelector: nodeSelector }),
    });
    const le = o.config.kubernetes.leaderElection;
    if (le.enabled) {
      const coordination: CoordinationV1Api = kc.makeApiClient(k8s.CoordinationV1Api);
      this.elector = new LeaderElector({
        api: coordination,
        namespace: le.namespace ?? o.namespace ?? 'portlb-system',
        name: le.leaseName,
        identity: o.identity ?? o.nodeName,
        leaseDurationMs: le.leaseDurationSeconds * 1000,
        renewDeadlineMs: le.renewDeadlineSeconds * 1000,
        retryPeriodMs: le.retryPeriodSeconds * 1000,
        clock,
        logger: this.log,
      });
      this.elector.on('started', () => {
        o.onLeaderChange?.(true);
        o.onChange();
      });
      this.elector.on('stopped', () => o.onLeaderChange?.(false));
    }
    this.writer = new KubeWriter({ core, component: 'portlb', host: o.nodeName, clock, logger: this.log });
  }

  start(): void {
    this.services.start();
    this.slices.start();
    this.nodes.start();
    this.elector?.start();
  }

  async stop(): Promise<void> {
    await this.elector?.close();
    await Promise.all([this.services.stop(), this.slices.stop(), this.nodes.stop()]);
  }

  synced(): boolean {
    return this.services.synced() && this.slices.synced() && this.nodes.synced();
  }

  connected(): boolean {
    return this.services.connected() && this.slices.connected() && this.nodes.connected();
  }

  /** Leader when election is off (single replica) or won. */
  isLeader(): boolean {
    return this.elector ? this.elector.isLeader() : true;
  }

  private owns = (address: string): boolean =>
    this.o.config.pools.some((p) => p.blocks.some((b) => blockContains(b, address)));

  /** Desired state from the caches (pure), plus the leader's allocation work (I/O). */
  async sync(): Promise<KubernetesSync> {
    const cfg = this.o.config;
    const services = this.services.list();
    const translateCfg = {
      loadBalancerClass: cfg.kubernetes.loadBalancerClass,
      serveServicesWithoutClass: cfg.kubernetes.serveServicesWithoutClass,
      defaultScheduler: cfg.defaults.scheduler,
      defaultForwarding: cfg.defaults.forwarding,
    };
    const translation = translateKubernetes(
      { services, endpointSlices: this.slices.list() },
      translateCfg,
      this.translateMemo,
    );
    const node = nodeInfo(
      this.nodes.list().find((n) => n.metadata?.name === this.o.nodeName),
      this.o.nodeName,
    );
    const computed = computeDesired(
      { services: translation.services },
      node,
      { owns: this.owns },
      this.desiredMemo,
    );
    const desired: DesiredState = { ...computed, skipped: [...translation.skipped, ...computed.skipped] };
    const result: KubernetesSync = { desired, node };
    if (this.isLeader()) result.allocation = await this.allocate(services, desired.skipped, desired.warnings);
    return result;
  }

  private async allocate(
    services: readonly V1Service[],
    skipped: Skip[],
    warnings: DesiredState['warnings'],
  ): Promise<{ plan: AllocationPlan; errors: string[] }> {
    const cfg = this.o.config;
    const plan = planAllocations(services, cfg.pools, {
      loadBalancerClass: cfg.kubernetes.loadBalancerClass,
      serveServicesWithoutClass: cfg.kubernetes.serveServicesWithoutClass,
      defaultScheduler: cfg.defaults.scheduler,
    });
    const errors: string[] = [];
    for (const update of plan.updates) {
      const err = await this.writer.writeStatus(update);
      if (err) errors.push(err);
    }
    const byId = new Map(services.map((s) => [`${s.metadata?.namespace}/${s.metadata?.name}`, s]));
    for (const ev of plan.events) await this.writer.event(ev);
    // Skips that a user can act on get an Event too (once, de-duplicated by the writer).
    for (const s of skipped) {
      if (s.reason === 'NotOurClass' || s.reason === 'NoAddress') continue;
      const svc = byId.get(s.service);
      if (!svc?.metadata?.name) continue;
      await this.writer.event({
        service: { namespace: svc.metadata.namespace ?? '', name: svc.metadata.name, uid: svc.metadata.uid },
        type: 'Warning',
        reason: `Skipped${s.reason}`,
        message: s.detail,
      });
    }
    for (const w of warnings) {
      const svc = byId.get(w.service);
      if (!svc?.metadata?.name) continue;
      await this.writer.event({
        service: { namespace: svc.metadata.namespace ?? '', name: svc.metadata.name, uid: svc.metadata.uid },
        type: 'Warning',
        reason: 'ServiceWarning',
        message: w.message,
      });
    }
    return { plan, errors };
  }

  /** An Event per VIP this node starts announcing (once per VIP and node). */
  async reportAnnounced(vips: readonly { address: string; owners: readonly string[] }[]): Promise<void> {
    const byId = new Map(
      this.services.list().map((s) => [`${s.metadata?.namespace}/${s.metadata?.name}`, s]),
    );
    const current = new Set<string>();
    for (const vip of vips) {
      for (const owner of vip.owners) {
        const key = `${owner}|${vip.address}`;
        current.add(key);
        if (this.announcedEvents.has(key)) continue;
        this.announcedEvents.add(key);
        const svc = byId.get(owner);
        if (!svc?.metadata?.name) continue;
        await this.writer.event({
          service: {
            namespace: svc.metadata.namespace ?? '',
            name: svc.metadata.name,
            uid: svc.metadata.uid,
          },
          type: 'Normal',
          reason: 'Announced',
          message: `node ${this.o.nodeName} announces ${vip.address}`,
        });
      }
    }
    for (const key of this.announcedEvents) if (!current.has(key)) this.announcedEvents.delete(key);
  }
}
