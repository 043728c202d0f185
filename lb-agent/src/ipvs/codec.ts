import { PortlbError } from '../errors.ts';
// IPVS objects <-> generic netlink attributes. Every wire quirk lives here and nowhere
// else: 16-byte address fields decoded by family, big-endian ports, IPv4 netmasks as a
// big-endian mask but IPv6 ones as a prefix length, flags as {flags, mask} with the
// kernel's HASHED bit masked out, stats in two layouts.
import { ipFromKernelBytes, ipv4MaskToPrefix, prefixToIpv4Mask, writeKernelAddress } from '../net/ip.ts';
import { AttrIndex, type Attrs, type NlWriter, readU32 } from '../netlink/wire.ts';
import * as K from './constants.ts';
import type {
  DestinationKey,
  Family,
  ForwardMethod,
  IpvsInfo,
  IpvsStats,
  IpvsTimeouts,
  Protocol,
  RealServer,
  RealServerState,
  SchedulerFlag,
  ServiceKey,
  TunnelType,
  VirtualService,
} from './types.ts';

const AF_BY_FAMILY: Record<Family, number> = { ipv4: K.AF_INET, ipv6: K.AF_INET6 };
const PROTO_NUMBERS: Record<Protocol, number> = {
  tcp: K.IPPROTO_TCP,
  udp: K.IPPROTO_UDP,
  sctp: K.IPPROTO_SCTP,
};
const FORWARD_BITS: Record<ForwardMethod, number> = {
  nat: K.IP_VS_CONN_F_MASQ,
  local: K.IP_VS_CONN_F_LOCALNODE,
  tunnel: K.IP_VS_CONN_F_TUNNEL,
  dr: K.IP_VS_CONN_F_DROUTE,
  bypass: K.IP_VS_CONN_F_BYPASS,
};
const TUNNEL_TYPES: Record<TunnelType, number> = {
  ipip: K.IP_VS_CONN_F_TUNNEL_TYPE_IPIP,
  gue: K.IP_VS_CONN_F_TUNNEL_TYPE_GUE,
  gre: K.IP_VS_CONN_F_TUNNEL_TYPE_GRE,
};
const SCHED_FLAG_BITS: Record<SchedulerFlag, number> = {
  'flag-1': K.IP_VS_SVC_F_SCHED1,
  'flag-2': K.IP_VS_SVC_F_SCHED2,
  'flag-3': K.IP_VS_SVC_F_SCHED3,
};

const invert = <V extends string>(o: Record<V, number>): Map<number, V> =>
  new Map(Object.entries(o).map(([k, v]) => [v as number, k as V]));
const FAMILY_BY_AF = invert(AF_BY_FAMILY);
const PROTO_BY_NUMBER = invert(PROTO_NUMBERS);
const FORWARD_BY_BITS = invert(FORWARD_BITS);
const TUNNEL_BY_NUMBER = invert(TUNNEL_TYPES);

/** Thrown when the kernel sends something this codec cannot represent. */
export class CodecError extends PortlbError<'IPVS_DECODE'> {
  constructor(message: string) {
    super('IPVS_DECODE', message);
  }
}

/**
 * The attributes of one service, real server or stats nest, each index reused by every
 * decode (synchronous, one at a time): at 10,000 services every /metrics scrape and every
 * read-back decodes each service, and a Buffer view per attribute was a quarter of what
 * the agent allocated while resyncing and scraped (bench agent --alloc-profile).
 */
const svcAttrs = new AttrIndex(K.IPVS_SVC_ATTR_STATS64 + 1);
const statsAttrs = new AttrIndex(K.IPVS_STATS_ATTR_OUTBPS + 1);
const destAttrs = new AttrIndex(K.IPVS_DEST_ATTR_TUN_FLAGS + 1);

/** An address attribute of an index; IPv4 read in place (no view), IPv6 through one. */
function indexedAddress(a: AttrIndex, type: number, family: Family, what: string): string {
  const length = a.length(type);
  if (length < 0) throw new CodecError(`IPVS reply without ${what}`);
  if (family !== 'ipv4' || length < 4) return address(a.bytes(type)!, family, what);
  const b = a.buffer;
  const at = a.offset(type);
  return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
}

function address(bytes: Buffer, family: Family, what: string): string {
  if (bytes.length < (family === 'ipv4' ? 4 : 16))
    throw new CodecError(`${what}: ${bytes.length} bytes for an ${family} address`);
  return ipFromKernelBytes(bytes, family);
}

export function fullNetmaskPrefix(family: Family): number {
  return family === 'ipv4' ? 32 : 128;
}

// ---- encode ------------------------------------------------------------------------

/** The attributes that identify a service (inside IPVS_CMD_ATTR_SERVICE). */
function writeServiceKeyAttrs(w: NlWriter, key: ServiceKey): void {
  w.attrU16(K.IPVS_SVC_ATTR_AF, AF_BY_FAMILY[key.family]);
  if (key.kind === 'fwmark') {
    w.attrU32(K.IPVS_SVC_ATTR_FWMARK, key.fwmark);
  } else {
    w.attrU16(K.IPVS_SVC_ATTR_PROTOCOL, PROTO_NUMBERS[key.protocol]);
    writeKernelAddress(w.buffer, w.attrSpace(K.IPVS_SVC_ATTR_ADDR, 16), key.address, key.family);
    w.attrBe16(K.IPVS_SVC_ATTR_PORT, key.port);
  }
}

export function serviceFlagBits(service: VirtualService): number {
  let flags = 0;
  if (service.persistence) flags |= K.IP_VS_SVC_F_PERSISTENT;
  if (service.onePacket) flags |= K.IP_VS_SVC_F_ONEPACKET;
  for (const f of service.schedulerFlags) flags |= SCHED_FLAG_BITS[f];
  return flags;
}

/** IPVS_CMD_ATTR_SERVICE with only the key (delete, and the service of a destination op). */
export function writeServiceKey(w: NlWriter, key: ServiceKey): void {
  const nest = w.beginNest(K.IPVS_CMD_ATTR_SERVICE);
  writeServiceKeyAttrs(w, key);
  w.endNest(nest);
}

/**
 * IPVS_CMD_ATTR_SERVICE with every field: the kernel's SET_SERVICE replaces the whole
 * object, so new and set send the same thing. Same attribute order as ipvsadm.
 */
export function writeService(w: NlWriter, service: VirtualService): void {
  const { key } = service;
  const nest = w.beginNest(K.IPVS_CMD_ATTR_SERVICE);
  writeServiceKeyAttrs(w, key);
  w.attrString(K.IPVS_SVC_ATTR_SCHED_NAME, service.scheduler);
  if (service.persistenceEngine) w.attrString(K.IPVS_SVC_ATTR_PE_NAME, service.persistenceEngine);
  // The mask covers every bit, so the kernel keeps none of its old flags (it re-adds HASHED itself).
  w.attrU32Pair(K.IPVS_SVC_ATTR_FLAGS, serviceFlagBits(service), 0xffffffff);
  w.attrU32(K.IPVS_SVC_ATTR_TIMEOUT, service.persistence?.timeout ?? 0);
  const prefix = service.persistence?.prefix ?? fullNetmaskPrefix(key.family);
  if (key.family === 'ipv4') w.attrBe32(K.IPVS_SVC_ATTR_NETMASK, prefixToIpv4Mask(prefix));
  else w.attrU32(K.IPVS_SVC_ATTR_NETMASK, prefix);
  w.endNest(nest);
}

/**
 * IPVS_CMD_ATTR_DEST; `full` for new/set (the kernel requires every field), key only for
 * delete. Same attribute order as ipvsadm.
 */
export function writeDestination(w: NlWriter, dest: RealServer | DestinationKey, full: boolean): void {
  const nest = w.beginNest(K.IPVS_CMD_ATTR_DEST);
  // Always sent: a destination of the other family than its service needs it.
  w.attrU16(K.IPVS_DEST_ATTR_ADDR_FAMILY, AF_BY_FAMILY[dest.family]);
  writeKernelAddress(w.buffer, w.attrSpace(K.IPVS_DEST_ATTR_ADDR, 16), dest.address, dest.family);
  w.attrBe16(K.IPVS_DEST_ATTR_PORT, dest.port);
  if (full && 'forward' in dest) {
    w.attrU32(K.IPVS_DEST_ATTR_FWD_METHOD, FORWARD_BITS[dest.forward]);
    w.attrU32(K.IPVS_DEST_ATTR_WEIGHT, dest.weight);
    w.attrU8(K.IPVS_DEST_ATTR_TUN_TYPE, TUNNEL_TYPES[dest.tunnelType ?? 'ipip']);
    w.attrBe16(K.IPVS_DEST_ATTR_TUN_PORT, dest.tunnelPort ?? 0);
    w.attrU16(K.IPVS_DEST_ATTR_TUN_FLAGS, dest.tunnelFlags ?? 0);
    w.attrU32(K.IPVS_DEST_ATTR_U_THRESH, dest.upperThreshold);
    w.attrU32(K.IPVS_DEST_ATTR_L_THRESH, dest.lowerThreshold);
  }
  w.endNest(nest);
}

// ---- decode ------------------------------------------------------------------------

function need<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new CodecError(`IPVS reply without ${what}`);
  return value;
}

/**
 * The attributes nested in `outer`'s attribute `type`, parsed into `into` in place: from
 * an index, without a view of the nest either.
 */
function nested(outer: Attrs | AttrIndex, type: number, into: AttrIndex, what: string): AttrIndex {
  if (!(outer instanceof AttrIndex)) return into.parse(need(outer[type], what));
  if (!outer.has(type)) throw new CodecError(`IPVS reply without ${what}`);
  const at = outer.offset(type);
  return into.parse(outer.buffer, at, at + outer.length(type));
}

function decodeFamily(af: number | undefined, what: string): Family {
  const family = FAMILY_BY_AF.get(need(af, `${what} address family`));
  if (!family) throw new CodecError(`${what}: unknown address family ${af}`);
  return family;
}

export function decodeStats(buf: Buffer | undefined, is64: boolean): IpvsStats | undefined {
  return buf ? statsOf(statsAttrs.parse(buf), is64) : undefined;
}

function statsOf(a: AttrIndex, is64: boolean): IpvsStats {
  const small = (t: number): number => (is64 ? a.u64(t) : a.u32(t)) ?? 0;
  const big = (t: number): number => a.u64(t) ?? 0;
  return {
    connections: small(K.IPVS_STATS_ATTR_CONNS),
    packetsIn: small(K.IPVS_STATS_ATTR_INPKTS),
    packetsOut: small(K.IPVS_STATS_ATTR_OUTPKTS),
    bytesIn: big(K.IPVS_STATS_ATTR_INBYTES),
    bytesOut: big(K.IPVS_STATS_ATTR_OUTBYTES),
    cps: small(K.IPVS_STATS_ATTR_CPS),
    ppsIn: small(K.IPVS_STATS_ATTR_INPPS),
    ppsOut: small(K.IPVS_STATS_ATTR_OUTPPS),
    bpsIn: small(K.IPVS_STATS_ATTR_INBPS),
    bpsOut: small(K.IPVS_STATS_ATTR_OUTBPS),
  };
}

function pickStats(a: AttrIndex, stats: number, stats64: number): IpvsStats | undefined {
  if (a.has(stats64)) return statsOf(nested(a, stats64, statsAttrs, 'stats'), true);
  return a.has(stats) ? statsOf(nested(a, stats, statsAttrs, 'stats'), false) : undefined;
}

/** The service nested in one GET_SERVICE reply (attributes after the genl header). */
export function decodeService(
  cmdAttrs: Attrs | AttrIndex,
  withStats: boolean,
): { service: VirtualService; stats: IpvsStats | undefined } {
  const a = nested(cmdAttrs, K.IPVS_CMD_ATTR_SERVICE, svcAttrs, 'service attribute');
  const family = decodeFamily(a.u16(K.IPVS_SVC_ATTR_AF), 'service');
  const fwmark = a.u32(K.IPVS_SVC_ATTR_FWMARK);
  let key: ServiceKey;
  if (fwmark !== undefined && !a.has(K.IPVS_SVC_ATTR_ADDR)) {
    key = { kind: 'fwmark', family, fwmark };
  } else {
    const protoNumber = need(a.u16(K.IPVS_SVC_ATTR_PROTOCOL), 'service protocol');
    const protocol = PROTO_BY_NUMBER.get(protoNumber);
    if (!protocol) throw new CodecError(`service with unknown protocol ${protoNumber}`);
    key = {
      kind: 'address',
      family,
      protocol,
      address: indexedAddress(a, K.IPVS_SVC_ATTR_ADDR, family, 'service address'),
      port: need(a.be16(K.IPVS_SVC_ATTR_PORT), 'service port'),
    };
  }
  // Dumps carry mask 0xffffffff and the kernel's own HASHED bit: keep only what we set.
  const flags = (a.u32(K.IPVS_SVC_ATTR_FLAGS) ?? 0) & ~K.IP_VS_SVC_F_HASHED;
  const netmask = a.u32(K.IPVS_SVC_ATTR_NETMASK);
  let prefix = fullNetmaskPrefix(family);
  if (netmask !== undefined) {
    prefix =
      family === 'ipv4' ? (ipv4MaskToPrefix(a.be32(K.IPVS_SVC_ATTR_NETMASK)!) ?? 32) : Math.min(netmask, 128);
  }
  const schedulerFlags = (Object.keys(SCHED_FLAG_BITS) as SchedulerFlag[]).filter(
    (f) => (flags & SCHED_FLAG_BITS[f]) !== 0,
  );
  const service: VirtualService = {
    key,
    scheduler: a.string(K.IPVS_SVC_ATTR_SCHED_NAME) ?? '',
    schedulerFlags,
    onePacket: (flags & K.IP_VS_SVC_F_ONEPACKET) !== 0,
    persistence:
      flags & K.IP_VS_SVC_F_PERSISTENT ? { timeout: a.u32(K.IPVS_SVC_ATTR_TIMEOUT) ?? 0, prefix } : undefined,
    persistenceEngine: a.string(K.IPVS_SVC_ATTR_PE_NAME) || undefined,
  };
  return {
    service,
    stats: withStats ? pickStats(a, K.IPVS_SVC_ATTR_STATS, K.IPVS_SVC_ATTR_STATS64) : undefined,
  };
}

/** The destination nested in one GET_DEST reply. */
export function decodeDestination(
  cmdAttrs: Attrs | AttrIndex,
  serviceFamily: Family,
  withStats: boolean,
): RealServerState {
  // Indexed, not sliced into a Buffer view per attribute (see AttrIndex).
  const a = nested(cmdAttrs, K.IPVS_CMD_ATTR_DEST, destAttrs, 'destination attribute');
  const af = a.u16(K.IPVS_DEST_ATTR_ADDR_FAMILY);
  // Kernels before 4.x send no family: the destination then has the service's.
  const family = af === undefined ? serviceFamily : decodeFamily(af, 'destination');
  const fwd = (a.u32(K.IPVS_DEST_ATTR_FWD_METHOD) ?? 0) & K.IP_VS_CONN_F_FWD_MASK;
  const forward = FORWARD_BY_BITS.get(fwd);
  if (!forward) throw new CodecError(`destination with unknown forwarding method ${fwd}`);
  const dest: RealServerState = {
    family,
    address: indexedAddress(a, K.IPVS_DEST_ATTR_ADDR, family, 'destination address'),
    port: need(a.be16(K.IPVS_DEST_ATTR_PORT), 'destination port'),
    forward,
    weight: a.i32(K.IPVS_DEST_ATTR_WEIGHT) ?? 0,
    upperThreshold: a.u32(K.IPVS_DEST_ATTR_U_THRESH) ?? 0,
    lowerThreshold: a.u32(K.IPVS_DEST_ATTR_L_THRESH) ?? 0,
    activeConnections: a.u32(K.IPVS_DEST_ATTR_ACTIVE_CONNS) ?? 0,
    inactiveConnections: a.u32(K.IPVS_DEST_ATTR_INACT_CONNS) ?? 0,
    persistentConnections: a.u32(K.IPVS_DEST_ATTR_PERSIST_CONNS) ?? 0,
  };
  if (forward === 'tunnel') {
    const tunType = a.u8(K.IPVS_DEST_ATTR_TUN_TYPE) ?? 0;
    dest.tunnelType = TUNNEL_BY_NUMBER.get(tunType) ?? 'ipip';
    const tunPort = a.be16(K.IPVS_DEST_ATTR_TUN_PORT) ?? 0;
    const tunFlags = a.u16(K.IPVS_DEST_ATTR_TUN_FLAGS) ?? 0;
    if (tunPort) dest.tunnelPort = tunPort;
    if (tunFlags) dest.tunnelFlags = tunFlags;
  }
  if (withStats) {
    const stats = pickStats(a, K.IPVS_DEST_ATTR_STATS, K.IPVS_DEST_ATTR_STATS64);
    if (stats) dest.stats = stats;
  }
  return dest;
}

export function decodeTimeouts(attrs: Attrs): IpvsTimeouts {
  return {
    tcp: readU32(attrs[K.IPVS_CMD_ATTR_TIMEOUT_TCP]) ?? 0,
    tcpFin: readU32(attrs[K.IPVS_CMD_ATTR_TIMEOUT_TCP_FIN]) ?? 0,
    udp: readU32(attrs[K.IPVS_CMD_ATTR_TIMEOUT_UDP]) ?? 0,
  };
}

/** IPVS_CMD_SET_CONFIG's attributes: only the timeouts given (the kernel keeps the others). */
export function writeTimeouts(w: NlWriter, t: Partial<IpvsTimeouts>): void {
  if (t.tcp) w.attrU32(K.IPVS_CMD_ATTR_TIMEOUT_TCP, t.tcp);
  if (t.tcpFin) w.attrU32(K.IPVS_CMD_ATTR_TIMEOUT_TCP_FIN, t.tcpFin);
  if (t.udp) w.attrU32(K.IPVS_CMD_ATTR_TIMEOUT_UDP, t.udp);
}

export function decodeInfo(attrs: Attrs): IpvsInfo {
  const v = readU32(attrs[K.IPVS_INFO_ATTR_VERSION]) ?? 0;
  return {
    version: `${(v >> 16) & 0xff}.${(v >> 8) & 0xff}.${v & 0xff}`,
    connectionTableSize: readU32(attrs[K.IPVS_INFO_ATTR_CONN_TAB_SIZE]) ?? 0,
  };
}
