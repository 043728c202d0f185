// The source-neutral description of what to load-balance. Kubernetes (k8s/translate.ts)
// and the standalone services file (standalone/) both produce ServiceIntents; one pure
// computeDesired turns them into IPVS services, VIP addresses and announcements.
import type { HealthCheckSpec } from '../health/spec.ts';
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
  /** Probed from this node; a backend that fails it gets weight 0. */
  healthCheck?: HealthCheckSpec;
}

/** A backend's health as this node's checks see it; `pending`: added, not probed yet (kept out). */
export type HealthState = 'pending' | 'up' | 'down';

/** One backend to probe for one service. */
export interface HealthTarget {
  service: string;
  address: string;
  family: Family;
  /** The backend's port (the check may probe another: spec.port). */
  port: number;
  spec: HealthCheckSpec;
}

/** What desired state reads of the checks' results (health/checker.ts provides it). */
export interface HealthView {
  /** undefined: no result yet for this backend (a new one: kept out as pending). */
  state(service: string, address: string, port: number): HealthState | undefined;
  /** Changes whenever one of the service's backends changes state. */
  version(service: string): number;
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
  | 'NoHealthyBackends'
  | 'NoLocalEndpoints'
  | 'AnnounceDisabled';

export interface NodeInfo {
  name: string;
  /** Labelled node.kubernetes.io/exclude-from-external-load-balancers. */
  excluded: boolean;
  ready: boolean;
}
