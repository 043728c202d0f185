// The source-neutral description of what to load-balance. Kubernetes (k8s/translate.ts)
// and the standalone services file (standalone/) both produce ServiceIntents; one pure
// computeDesired turns them into IPVS services, VIP addresses and announcements.
import type { Protocol, SchedulerFlag } from '../ipvs/types.ts';
import type { Family } from '../net/ip.ts';

export type Forwarding = 'nat' | 'tunnel' | 'dr';
export type TrafficPolicy = 'Cluster' | 'Local';

export interface Endpoint {
  address: string;
  family: Family;
  port: number;
  /** kube-proxy's conditions: ready (serving and not terminating), serving, terminating. */
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  nodeName: string | undefined;
}

export interface PortIntent {
  /** Service port name ('' when unnamed). */
  name: string;
  protocol: Protocol;
  port: number;
  endpoints: Endpoint[];
}

export interface ServiceIntent {
  /** "namespace/name" for Kubernetes, "file:<name or index>" for the services file. */
  id: string;
  /** Assigned VIPs (canonical), at most one per family in Kubernetes. */
  vips: string[];
  ports: PortIntent[];
  scheduler: string;
  schedulerFlags: SchedulerFlag[];
  forwarding: Forwarding;
  /** Client persistence; `prefix` undefined = the full address (per VIP family). */
  persistence: { timeout: number; prefix: number | undefined } | undefined;
  trafficPolicy: TrafficPolicy;
  /** Per-backend weight (1 unless the source says otherwise). */
  weights?: ReadonlyMap<string, number>;
  /** Whether this service's VIPs may be announced at all (a file can say no). */
  announce: boolean;
  /** Endpoints that were dropped while reading the source, with why. */
  warnings: string[];
}

export type SkipReason =
  | 'NotOurClass'
  | 'NoAddress'
  | 'InvalidAddress'
  | 'AddressOutsidePools'
  | 'InvalidAnnotation'
  | 'InvalidPort'
  | 'UnsupportedProtocol'
  | 'NoPorts'
  | 'PortConflict'
  | 'Malformed';

export interface Skip {
  /** Service id ("namespace/name"). */
  service: string;
  reason: SkipReason;
  detail: string;
}

/** Why a VIP is not announced from this node (it may still be programmed). */
export type WithholdReason =
  | 'NodeExcluded'
  | 'NodeNotReady'
  | 'NoReadyBackends'
  | 'NoLocalEndpoints'
  | 'AnnounceDisabled';

export interface NodeInfo {
  name: string;
  /** Labelled node.kubernetes.io/exclude-from-external-load-balancers. */
  excluded: boolean;
  ready: boolean;
}
