// The Kubernetes source of desired state: lean caches of Services, EndpointSlices and
// this Node (reflector.ts); the pure translation and computeDesired, synchronously, for
// the data plane's pass; and, in the API lane (never inside the pass), the leader's VIP
// allocation with its status writes, and the Events of every replica.
import type { AgentConfig, PeerFields, Pool } from '../config/agent-config.ts';
import { PoolRegistry } from '../config/ownership.ts';
import { DesiredMemo, type DesiredState, DesiredTracker } from '../core/desired.ts';
import type { HealthView, NodeInfo, ServiceIntent } from '../core/types.ts';
import type { Clock } from '../util/clock.ts';
import { type Logger, silentLogger } from '../util/log.ts';
import { type KubeEvent, type PoolUsage, planAllocations, poolUsage, type ServiceRef } from './allocator.ts';
import type { KubeClient } from './client.ts';
import { ConfigObjects, type Verdict } from './config-objects.ts';
import { ApiLane } from './lane.ts';
import { LeaderElector } from './leader.ts';
import {
  type LeanEndpointSlice,
  type LeanNode,
  type LeanService,
  leanEndpointSlice,
  leanNode,
  leanService,
  objectKey,
} from './objects.ts';
import { BGP_PEERS, peerRules } from './peer-objects.ts';
import { ADDRESS_POOLS, poolRules } from './pool-objects.ts';
import { Reflector } from './reflector.ts';
import {
  nodeInfo,
  type OneResult,
  type TranslateConfig,
  TranslateMemo,
  type Translation,
  translateKubernetes,
  translateService,
} from './translate.ts';
import { KubeWriter } from './writer.ts';

export interface KubernetesControllerOptions {
  client: KubeClient;
  config: AgentConfig;
  nodeName: string;
  /** Leader election identity (pod name); defaults to the node name. */
  identity?: string;
  /** The pod's namespace: where the Lease lives unless the configuration names one. */
  namespace?: string;
  clock: Clock;
  logger?: Logger;
  /** Called whenever anything watched changes (the caller coalesces). */
  onChange: () => void;
  onLeaderChange?: (leading: boolean) => void;
  /** The API server dropped ipMode from a status it accepted (Kubernetes < 1.30). */
  onIpModeDropped?: (service: string) => void;
  /** The pools' capacity and use, whenever the Services changed. */
  onPoolUsage?: (usage: PoolUsage[]) => void;
  /** The pools in force (the file's, and PortlbAddressPool objects'), shared with the data plane. */
  pools?: PoolRegistry<Pool>;
  /** Each PortlbAddressPool's verdict, whenever the objects changed. */
  onPoolVerdicts?: (verdicts: readonly Verdict[]) => void;
  /**
   * The BGP peers in force (the file's, then PortlbBgpPeer objects'), whenever they
   * changed: first once the objects are listed (never before: a peer left out would be
   * removed from the speaker, its session reset).
   */
  onPeers?: (peers: readonly PeerFields[], verdicts: readonly Verdict[]) => void;
  informerBackoffMs?: { initial: number; max: number };
  /** Deadline of each API write. */
  apiDeadlineMs?: number;
}

export interface KubernetesSync {
  desired: DesiredState;
  node: NodeInfo;
}

/** What the controller does with each of its list/watches, whatever it lists. */
type Watch = Pick<Reflector<never>, 'start' | 'stop' | 'synced' | 'connected' | 'lastError'>;

/** How often an API server that dropped ipMode is given another chance (it may have been upgraded). */
const IPMODE_RECHECK_MS = 60 * 60_000;

export class KubernetesController {
  private readonly o: KubernetesControllerOptions;
  private readonly log: Logger;
  readonly services: Reflector<LeanService>;
  readonly slices: Reflector<LeanEndpointSlice>;
  readonly nodes: Reflector<LeanNode>;
  /** PortlbAddressPool objects (kubernetes.poolObjects). */
  readonly poolObjects: ConfigObjects<Pool> | undefined;
  /** PortlbBgpPeer objects (kubernetes.peerObjects). */
  readonly peerObjects: ConfigObjects<PeerFields> | undefined;
  readonly pools: PoolRegistry<Pool>;
  readonly elector: LeaderElector | undefined;
  readonly lane: ApiLane;
  readonly writer: KubeWriter;
  private readonly translateMemo = new TranslateMemo();
  private desiredMemo = new DesiredMemo();
  private readonly tracker = new DesiredTracker();
  private lastTranslation: Translation | undefined;
  private readonly translateConfig: TranslateConfig;
  /**
   * The Services whose EndpointSlices changed since the last sync, when nothing else did
   * (undefined: anything may have changed, the next sync computes everything).
   */
  private dirty: Set<string> | undefined;
  /** EndpointSlices by Service id, then by slice key: one Service's slices without a scan of all. */
  private readonly slicesOf = new Map<string, Map<string, LeanEndpointSlice>>();
  private servicesGeneration = 0;
  private allocatedGeneration = -1;
  private usageGeneration = -1;
  /** Per announced VIP, the owners told (an Announced Event) while it stays announced. */
  private announcedOwners = new Map<string, readonly string[]>();
  /** Monotonic time the API server was last seen dropping ipMode. */
  private ipModeDroppedAt: number | undefined;

  constructor(o: KubernetesControllerOptions) {
    this.o = o;
    this.log = o.logger ?? silentLogger;
    this.pools = o.pools ?? new PoolRegistry(o.config.pools);
    this.translateConfig = {
      loadBalancerClass: o.config.kubernetes.loadBalancerClass,
      serveServicesWithoutClass: o.config.kubernetes.serveServicesWithoutClass,
      defaultScheduler: o.config.defaults.scheduler,
      defaultForwarding: o.config.defaults.forwarding,
    };
    /** Anything but an EndpointSlice changed: the next sync computes everything. */
    const changedAll = () => {
      this.dirty = undefined;
      o.onChange();
    };
    const common = {
      client: o.client,
      clock: o.clock,
      logger: this.log,
      backoffInitialMs: o.informerBackoffMs?.initial,
      backoffMaxMs: o.informerBackoffMs?.max,
    };
    this.services = new Reflector<LeanService>({
      ...common,
      name: 'services',
      path: '/api/v1/services',
      transform: leanService,
      key: objectKey,
      onChange: () => {
        this.servicesGeneration++;
        changedAll();
      },
    });
    this.slices = new Reflector<LeanEndpointSlice>({
      ...common,
      name: 'endpointslices',
      path: '/apis/discovery.k8s.io/v1/endpointslices',
      transform: leanEndpointSlice,
      key: objectKey,
      onChange: (change) => {
        this.sliceChanged(change);
        o.onChange();
      },
    });
    this.nodes = new Reflector<LeanNode>({
      ...common,
      name: 'nodes',
      path: '/api/v1/nodes',
      fieldSelector: `metadata.name=${o.nodeName}`,
      transform: leanNode,
      key: (n) => n.name,
      onChange: changedAll,
    });
    const objects = { client: o.client, reflector: common, logger: this.log, onChange: changedAll };
    this.poolObjects = o.config.kubernetes.poolObjects
      ? new ConfigObjects({ ...objects, kind: ADDRESS_POOLS, base: o.config.pools, rules: poolRules })
      : undefined;
    this.peerObjects = o.config.kubernetes.peerObjects
      ? new ConfigObjects({
          ...objects,
          kind: BGP_PEERS,
          base: o.config.bgp?.peers ?? [],
          rules: peerRules({ bgp: !!o.config.bgp, bfdSection: !!o.config.bfd }),
        })
      : undefined;
    this.lane = new ApiLane({ deadlineMs: o.apiDeadlineMs ?? 10_000, logger: this.log });
    const le = o.config.kubernetes.leaderElection;
    if (le.enabled) {
      this.elector = new LeaderElector({
        client: o.client,
        namespace: le.namespace ?? o.namespace ?? 'portlb-system',
        name: le.leaseName,
        identity: o.identity ?? o.nodeName,
        leaseDurationMs: le.leaseDurationSeconds * 1000,
        renewDeadlineMs: le.renewDeadlineSeconds * 1000,
        retryPeriodMs: le.retryPeriodSeconds * 1000,
        clock: o.clock,
        logger: this.log,
      });
      this.elector.on('started', () => {
        this.allocatedGeneration = -1;
        o.onLeaderChange?.(true);
        changedAll();
      });
      this.elector.on('stopped', () => o.onLeaderChange?.(false));
    }
    this.writer = new KubeWriter({
      client: o.client,
      component: 'portlb',
      host: o.nodeName,
      clock: o.clock,
      logger: this.log,
    });
  }

  /** Every list/watch of the agent, each with why it cannot list (if it cannot). */
  private watches(): { reflector: Watch; lastError: () => string | undefined }[] {
    const own = (r: Watch) => ({ reflector: r, lastError: () => r.lastError });
    const objects = (o: { reflector: Watch; lastError(): string | undefined } | undefined) =>
      o ? [{ reflector: o.reflector, lastError: () => o.lastError() }] : [];
    return [
      own(this.services),
      own(this.slices),
      own(this.nodes),
      ...objects(this.poolObjects),
      ...objects(this.peerObjects),
    ];
  }

  start(): void {
    for (const w of this.watches()) w.reflector.start();
    this.elector?.start();
  }

  async stop(): Promise<void> {
    this.lane.stop();
    await this.elector?.close();
    await Promise.all(this.watches().map((w) => w.reflector.stop()));
  }

  /**
   * A first view of everything, the pool objects included: without them, addresses in
   * their pools would look foreign (not programmed, not announced) and the leader would
   * renumber their Services.
   */
  synced(): boolean {
    return this.watches().every((w) => w.reflector.synced());
  }

  connected(): boolean {
    return this.watches().every((w) => w.reflector.connected());
  }

  lastError(): string | undefined {
    for (const w of this.watches()) {
      const e = w.lastError();
      if (e) return e;
    }
    return undefined;
  }

  /** The pools in force from the file and the objects, when the objects changed. */
  private resolvePools(): void {
    const pools = this.poolObjects?.resolve();
    if (!pools) return;
    this.o.onPoolVerdicts?.(this.poolObjects!.verdicts);
    if (this.pools.set(pools)) {
      // Another set of pools: what is owned, allocated and skipped may all differ.
      this.desiredMemo = new DesiredMemo();
      this.dirty = undefined;
      this.servicesGeneration++;
      this.log.info(
        { pools: pools.map((p) => `${p.name}: ${p.blocks.map((b) => b.text).join(' ')}`) },
        'address pools in force',
      );
    }
  }

  /** Leader when election is off (single replica) or won. */
  isLeader(): boolean {
    return this.elector ? this.elector.isLeader() : true;
  }

  /**
   * Desired state from the caches, synchronously: no API call, nothing awaited. The
   * leader's allocation and every Event are handed to the API lane.
   */
  sync(health?: HealthView): KubernetesSync {
    this.resolvePools();
    const peers = this.peerObjects?.reflector.synced() ? this.peerObjects.resolve() : undefined;
    if (peers) this.o.onPeers?.(peers, this.peerObjects!.verdicts);
    const node = nodeInfo(this.nodes.get(this.o.nodeName), this.o.nodeName);
    const dirty = this.dirty;
    this.dirty = new Set();
    try {
      const desired =
        (dirty && this.lastTranslation && this.patched(dirty, node, health)) || this.computed(node, health);
      if (this.isLeader()) this.leaderWork(desired, this.lastTranslation!);
      if (this.o.onPoolUsage && this.usageGeneration !== this.servicesGeneration) {
        this.usageGeneration = this.servicesGeneration;
        this.o.onPoolUsage(poolUsage(this.pools.pools, this.services.list()));
      }
      return { desired, node };
    } catch (err) {
      this.dirty = undefined;
      throw err;
    }
  }

  /** Desired state computed from every Service. */
  private computed(node: NodeInfo, health?: HealthView): DesiredState {
    const translation = translateKubernetes(
      { services: this.services.list(), endpointSlices: this.slices.list() },
      this.translateConfig,
      { memo: this.translateMemo, lastValid: this.lastTranslation?.lastValid },
    );
    this.lastTranslation = translation;
    return this.tracker.full(
      { services: translation.services, health, skipped: translation.skipped },
      node,
      { owns: this.pools.owns },
      this.desiredMemo,
    );
  }

  /**
   * Desired state after a change to the EndpointSlices of `dirty` only: those Services'
   * work, not every Service's. Undefined when it takes the full computation (a Service
   * that changed itself, or a change that is more than its backends).
   */
  private patched(dirty: ReadonlySet<string>, node: NodeInfo, health?: HealthView): DesiredState | undefined {
    const intents: ServiceIntent[] = [];
    for (const id of dirty) {
      const svc = this.services.get(id);
      // Most slices in a cluster are of other Services: nothing of ours changed.
      if (svc?.type !== 'LoadBalancer') continue;
      const before = this.translateMemo.peek(id);
      if (!before || before.svc !== svc) return undefined;
      const slices = [...(this.slicesOf.get(id)?.values() ?? [])];
      let result: OneResult;
      try {
        result = translateService(svc, slices, this.translateConfig, {
          memo: this.translateMemo,
          lastValid: this.lastTranslation?.lastValid,
        });
      } catch {
        // A malformed object: the full computation skips it with its reason.
        return undefined;
      }
      // A skip depends on the Service alone: skipped before, skipped now.
      if (result.skip && before.result.skip) continue;
      if (result.skip || before.result.skip) return undefined;
      intents.push(result.intent);
    }
    return this.tracker.patch(intents, node, health);
  }

  private sliceChanged(change?: {
    before: LeanEndpointSlice | undefined;
    after: LeanEndpointSlice | undefined;
  }): void {
    if (!change) {
      // A (re)list: every slice may differ.
      this.slicesOf.clear();
      for (const s of this.slices.list()) this.indexSlice(s);
      this.dirty = undefined;
      return;
    }
    const { before, after } = change;
    if (before?.serviceId) {
      const list = this.slicesOf.get(before.serviceId);
      list?.delete(objectKey(before));
      if (list?.size === 0) this.slicesOf.delete(before.serviceId);
      this.dirty?.add(before.serviceId);
    }
    if (after) this.indexSlice(after);
    if (after?.serviceId) this.dirty?.add(after.serviceId);
  }

  private indexSlice(slice: LeanEndpointSlice): void {
    if (!slice.serviceId) return;
    let list = this.slicesOf.get(slice.serviceId);
    if (!list) {
      list = new Map();
      this.slicesOf.set(slice.serviceId, list);
    }
    list.set(objectKey(slice), slice);
  }

  private serviceRef(id: string): ServiceRef | undefined {
    const svc = this.services.get(id);
    return svc ? { namespace: svc.namespace, name: svc.name, uid: svc.uid } : undefined;
  }

  private submitEvent(ev: KubeEvent): void {
    if (this.writer.isRecent(ev)) return;
    this.lane.submit({
      key: `event|${ev.service.namespace}/${ev.service.name}|${ev.reason}|${ev.message}`,
      what: `Event ${ev.reason}`,
      droppable: true,
      run: (signal) => this.writer.event(ev, signal),
    });
  }

  /** The leader's work for this view: allocation (when Services changed) and the Events users act on. */
  private leaderWork(desired: DesiredState, translation: Translation): void {
    const now = new Date(this.o.clock.now()).toISOString();
    for (const objects of [this.poolObjects, this.peerObjects])
      objects?.writeVerdicts(
        (w) => this.lane.submit(w),
        (ev) => this.submitEvent(ev),
        this.writer,
        now,
      );
    if (this.allocatedGeneration !== this.servicesGeneration) {
      this.allocatedGeneration = this.servicesGeneration;
      const cfg = this.o.config;
      const plan = planAllocations(this.services.list(), translation.settings, this.pools.pools, {
        loadBalancerClass: cfg.kubernetes.loadBalancerClass,
        serveServicesWithoutClass: cfg.kubernetes.serveServicesWithoutClass,
      });
      const recheck =
        this.ipModeDroppedAt !== undefined &&
        this.o.clock.monotonic() - this.ipModeDroppedAt > IPMODE_RECHECK_MS;
      for (const update of plan.updates) {
        // An API server that drops ipMode would be rewritten forever: once seen, only real
        // address changes are written (and ipMode is tried again now and then).
        if (update.ipModeOnly && this.ipModeDroppedAt !== undefined && !recheck) continue;
        const id = `${update.service.namespace}/${update.service.name}`;
        this.lane.submit({
          key: `status|${id}`,
          what: `status of ${id}`,
          droppable: false,
          run: async (signal) => {
            const r = await this.writer.writeStatus(update, signal).catch((err) => {
              // Not written: plan again at the next pass.
              this.allocatedGeneration = -1;
              throw err;
            });
            if (r.ipModeDropped) {
              if (this.ipModeDroppedAt === undefined) this.o.onIpModeDropped?.(id);
              this.ipModeDroppedAt = this.o.clock.monotonic();
            } else if (this.ipModeDroppedAt !== undefined && update.ips.length) {
              this.ipModeDroppedAt = undefined;
              this.log.info('the API server keeps ipMode now');
            }
          },
        });
      }
      for (const ev of plan.events) this.submitEvent(ev);
    }
    // Skips that a user can act on, warnings, and Services kept on their last valid settings.
    for (const s of desired.skipped) {
      if (s.reason === 'NotOurClass' || s.reason === 'NoAddress') continue;
      const ref = this.serviceRef(s.service);
      if (ref)
        this.submitEvent({ service: ref, type: 'Warning', reason: `Skipped${s.reason}`, message: s.detail });
    }
    for (const w of desired.warnings) {
      const ref = this.serviceRef(w.service);
      if (ref)
        this.submitEvent({ service: ref, type: 'Warning', reason: 'ServiceWarning', message: w.message });
    }
    for (const k of translation.kept) {
      const ref = this.serviceRef(k.service);
      if (ref)
        this.submitEvent({
          service: ref,
          type: 'Warning',
          reason: 'InvalidSettingsKept',
          message: `${k.problem}: the last valid settings stay in force until it is fixed`,
        });
    }
  }

  /** An Event per VIP this node starts announcing (once per VIP and node), through the lane. */
  reportAnnounced(vips: readonly { address: string; owners: readonly string[] }[]): void {
    // Every pass reports all 10,000 VIPs: compared by list, no string made for an unchanged one.
    const next = new Map<string, readonly string[]>();
    for (const vip of vips) {
      const before = this.announcedOwners.get(vip.address);
      next.set(vip.address, vip.owners);
      if (before && before.length === vip.owners.length && before.every((o, i) => o === vip.owners[i]))
        continue;
      for (const owner of vip.owners) {
        if (before?.includes(owner)) continue;
        const ref = this.serviceRef(owner);
        if (!ref) continue;
        this.submitEvent({
          service: ref,
          type: 'Normal',
          reason: 'Announced',
          message: `node ${this.o.nodeName} announces ${vip.address}`,
        });
      }
    }
    this.announcedOwners = next;
  }

  /** An Event on a Service from this node (not leader-only: each node probes from itself). */
  serviceEvent(service: string, type: 'Normal' | 'Warning', reason: string, message: string): void {
    const ref = this.serviceRef(service);
    if (ref) this.submitEvent({ service: ref, type, reason, message });
  }

  /** An Event on this Node (conditions an operator must see). */
  nodeEvent(type: 'Normal' | 'Warning', reason: string, message: string): void {
    this.submitEvent({
      service: { kind: 'Node', namespace: '', name: this.o.nodeName, uid: undefined },
      type,
      reason,
      message,
    });
  }
}
