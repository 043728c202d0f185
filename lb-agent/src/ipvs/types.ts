// The IPVS data plane in portlb's own terms. Nothing here knows about netlink: the codec
// converts, the planner compares, the clients read and write.
import type { Family } from '../net/ip.ts';

export type { Family };
export type Protocol = 'tcp' | 'udp' | 'sctp';
/** nat = IPVS masquerading; local and bypass exist in the kernel and are decoded, never planned. */
export type ForwardMethod = 'nat' | 'tunnel' | 'dr' | 'local' | 'bypass';
export type TunnelType = 'ipip' | 'gue' | 'gre';
/**
 * Scheduler-specific service flags. The kernel calls them SCHED1..3; mh and sh read
 * flag-1 as "fallback" and flag-2 as "port" (ip_vs_mh.c, ip_vs_sh.c).
 */
export type SchedulerFlag = 'flag-1' | 'flag-2' | 'flag-3';

export interface AddressServiceKey {
  kind: 'address';
  family: Family;
  protocol: Protocol;
  /** Canonical address text. */
  address: string;
  port: number;
}

export interface FwmarkServiceKey {
  kind: 'fwmark';
  family: Family;
  fwmark: number;
}

export type ServiceKey = AddressServiceKey | FwmarkServiceKey;

export interface Persistence {
  /** Seconds. */
  timeout: number;
  /** Client netmask as a prefix length (IPv4 masks are converted). */
  prefix: number;
}

export interface VirtualService {
  key: ServiceKey;
  scheduler: string;
  /** Sorted, no duplicates. */
  schedulerFlags: SchedulerFlag[];
  onePacket: boolean;
  persistence: Persistence | undefined;
  /** Persistence engine (e.g. "sip"), rarely used. */
  persistenceEngine: string | undefined;
}

export interface DestinationKey {
  family: Family;
  address: string;
  port: number;
}

export interface RealServer extends DestinationKey {
  forward: ForwardMethod;
  weight: number;
  upperThreshold: number;
  lowerThreshold: number;
  /** Only for forward = tunnel; ipip when absent. */
  tunnelType?: TunnelType;
  tunnelPort?: number;
  tunnelFlags?: number;
}

export interface IpvsStats {
  connections: number;
  packetsIn: number;
  packetsOut: number;
  bytesIn: number;
  bytesOut: number;
  cps: number;
  ppsIn: number;
  ppsOut: number;
  bpsIn: number;
  bpsOut: number;
}

/** The counters of a service or real server that has seen no traffic. */
export const noTraffic = (): IpvsStats => ({
  connections: 0,
  packetsIn: 0,
  packetsOut: 0,
  bytesIn: 0,
  bytesOut: 0,
  cps: 0,
  ppsIn: 0,
  ppsOut: 0,
  bpsIn: 0,
  bpsOut: 0,
});

export interface RealServerState extends RealServer {
  activeConnections: number;
  inactiveConnections: number;
  persistentConnections: number;
  stats?: IpvsStats;
}

export interface ServiceState {
  service: VirtualService;
  stats?: IpvsStats;
  destinations: RealServerState[];
}

/**
 * A real server as the state cache knows it: its settings (often the very object the desired
 * state asked for: at 10,000 services x 10, a copy each was 18 MB) and its connection
 * counts when they came from a read (the data plane reads a service's counts again before
 * it removes one of its real servers).
 */
export type KnownRealServer = RealServer &
  Partial<Pick<RealServerState, 'activeConnections' | 'inactiveConnections' | 'persistentConnections'>>;

/** A service as the state cache knows it (a ServiceState read from the kernel is one). */
export interface KnownService {
  service: VirtualService;
  destinations: readonly KnownRealServer[];
}

/** What a caller wants: a service and its real servers. */
export interface ServiceSpec {
  service: VirtualService;
  destinations: RealServer[];
}

export interface IpvsInfo {
  /** e.g. "1.2.1" */
  version: string;
  connectionTableSize: number;
}

/** The IPVS sysctls (net.ipv4.vs.*) the load balancer reads or sets. */
/**
 * The per-namespace connection timeouts of IPVS, seconds (ipvsadm --set): established
 * TCP, TCP after the client's FIN, UDP. Writing 0 leaves one as it is.
 */
export interface IpvsTimeouts {
  tcp: number;
  tcpFin: number;
  udp: number;
}

export interface IpvsSysctls {
  conntrack: number;
  expire_nodest_conn: number;
  expire_quiescent_template: number;
  sloppy_tcp: number;
  sloppy_sctp: number;
  conn_reuse_mode: number;
  schedule_icmp: number;
}

export const SYSCTL_NAMES = [
  'conntrack',
  'expire_nodest_conn',
  'expire_quiescent_template',
  'sloppy_tcp',
  'sloppy_sctp',
  'conn_reuse_mode',
  'schedule_icmp',
] as const satisfies readonly (keyof IpvsSysctls)[];

export type IpvsOperation =
  | { op: 'add-service'; service: VirtualService }
  | { op: 'update-service'; service: VirtualService }
  | { op: 'delete-service'; key: ServiceKey }
  | { op: 'add-destination'; key: ServiceKey; destination: RealServer }
  | { op: 'update-destination'; key: ServiceKey; destination: RealServer }
  | { op: 'delete-destination'; key: ServiceKey; destination: DestinationKey };

export const SCHEDULERS = [
  'rr',
  'wrr',
  'lc',
  'wlc',
  'lblc',
  'lblcr',
  'dh',
  'sh',
  'sed',
  'nq',
  'fo',
  'ovf',
  'mh',
  'twos',
] as const;

/** Flag names users write (ipvsadm's), and the kernel flag each one sets. */
export const SCHEDULER_FLAG_NAMES = {
  'mh-fallback': { flag: 'flag-1', scheduler: 'mh' },
  'mh-port': { flag: 'flag-2', scheduler: 'mh' },
  'sh-fallback': { flag: 'flag-1', scheduler: 'sh' },
  'sh-port': { flag: 'flag-2', scheduler: 'sh' },
  'flag-1': { flag: 'flag-1' },
  'flag-2': { flag: 'flag-2' },
  'flag-3': { flag: 'flag-3' },
} as const satisfies Record<string, { flag: SchedulerFlag; scheduler?: string }>;

export type SchedulerFlagName = keyof typeof SCHEDULER_FLAG_NAMES;

/**
 * serviceId of a desired spec, made once per spec object (specs are the same objects pass
 * after pass while their Service is unchanged: at 10,000 services the ids' strings, made
 * and hashed afresh in every stage, were a good part of a pass).
 */
const specIdMemo = new WeakMap<ServiceSpec, string>();
export function specId(spec: ServiceSpec): string {
  let id = specIdMemo.get(spec);
  if (id === undefined) {
    id = serviceId(spec.service.key);
    specIdMemo.set(spec, id);
  }
  return id;
}

export function serviceId(key: ServiceKey): string {
  if (key.kind === 'fwmark') return `fwmark:${key.family}:${key.fwmark}`;
  const host = key.family === 'ipv6' ? `[${key.address}]` : key.address;
  return `${key.protocol}:${host}:${key.port}`;
}

/** destinationId(a) === destinationId(b), without the two strings (compared per real server per read-back). */
export const sameDestination = (a: DestinationKey, b: DestinationKey): boolean =>
  a.port === b.port && a.address === b.address && a.family === b.family;

export function destinationId(d: DestinationKey): string {
  return d.family === 'ipv6' ? `[${d.address}]:${d.port}` : `${d.address}:${d.port}`;
}
