// One canonical form for services and destinations, whether they came from a file, the
// desired-state computation or a kernel dump, so that a converged system compares equal
// and a sync pass issues zero writes.

import type { Family } from '../net/ip.ts';
import { canonicalIp } from '../net/ip.ts';
import {
  type DestinationKey,
  destinationId,
  type IpvsOperation,
  type RealServer,
  type SchedulerFlag,
  type ServiceKey,
  type VirtualService,
} from './types.ts';

/** Only IPv6 has more than one spelling (validated IPv4 text is already canonical). */
const canonical = (address: string, family: Family): string =>
  family === 'ipv4' ? address : (canonicalIp(address) ?? address);

export function normalizeServiceKey(key: ServiceKey): ServiceKey {
  if (key.kind === 'fwmark') return { kind: 'fwmark', family: key.family, fwmark: key.fwmark };
  return {
    kind: 'address',
    family: key.family,
    protocol: key.protocol,
    address: canonical(key.address, key.family),
    port: key.port,
  };
}

export function canonicalDestinationId(d: DestinationKey): string {
  return destinationId(d.family === 'ipv4' ? d : { ...d, address: canonical(d.address, d.family) });
}

/** Already canonical (the desired state's are): the service itself, no copy. */
function isNormalService(s: VirtualService): boolean {
  const k = s.key;
  if (k.kind === 'address' && k.family !== 'ipv4' && canonical(k.address, k.family) !== k.address)
    return false;
  const f = s.schedulerFlags;
  for (let i = 1; i < f.length; i++) if (f[i - 1]! >= f[i]!) return false;
  return s.persistenceEngine !== '';
}

/** The canonical form; a service already in it is returned as it is (callers never modify the result). */
export function normalizeService(s: VirtualService): VirtualService {
  if (isNormalService(s)) return s;
  return {
    key: normalizeServiceKey(s.key),
    scheduler: s.scheduler,
    schedulerFlags: [...new Set<SchedulerFlag>(s.schedulerFlags)].sort(),
    onePacket: s.onePacket,
    persistence: s.persistence ? { timeout: s.persistence.timeout, prefix: s.persistence.prefix } : undefined,
    persistenceEngine: s.persistenceEngine || undefined,
  };
}

/** Already in the canonical form (the desired state's are): no copy needed. */
function isNormalRealServer(d: RealServer): boolean {
  if (d.family !== 'ipv4' && canonical(d.address, d.family) !== d.address) return false;
  if (d.forward !== 'tunnel')
    return d.tunnelType === undefined && d.tunnelPort === undefined && d.tunnelFlags === undefined;
  return d.tunnelType !== undefined && d.tunnelPort !== 0 && d.tunnelFlags !== 0;
}

/**
 * Tunnel fields exist only for tunnel forwarding; the kernel reports ipip when none is set.
 * A destination already canonical is returned as it is (callers never modify the result).
 */
export function normalizeRealServer(d: RealServer): RealServer {
  return isNormalRealServer(d) ? d : realServerSettings(d);
}

/** A canonical copy of a real server's settings, and nothing else (no counts, no stats). */
export function realServerSettings(d: RealServer): RealServer {
  const out: RealServer = {
    family: d.family,
    address: canonical(d.address, d.family),
    port: d.port,
    forward: d.forward,
    weight: d.weight,
    upperThreshold: d.upperThreshold,
    lowerThreshold: d.lowerThreshold,
  };
  if (d.forward === 'tunnel') {
    out.tunnelType = d.tunnelType ?? 'ipip';
    if (d.tunnelPort) out.tunnelPort = d.tunnelPort;
    if (d.tunnelFlags) out.tunnelFlags = d.tunnelFlags;
  }
  return out;
}

const sameFlags = (a: readonly SchedulerFlag[], b: readonly SchedulerFlag[]): boolean =>
  a.length === b.length
    ? a.every((f) => b.includes(f))
    : new Set(a).size === new Set(b).size && a.every((f) => b.includes(f));

/** Whether two services (same key) differ in anything SET_SERVICE would change. Hot path: no copies. */
export function serviceSettingsEqual(a: VirtualService, b: VirtualService): boolean {
  return (
    a.scheduler === b.scheduler &&
    a.onePacket === b.onePacket &&
    sameFlags(a.schedulerFlags, b.schedulerFlags) &&
    a.persistence?.timeout === b.persistence?.timeout &&
    a.persistence?.prefix === b.persistence?.prefix &&
    (a.persistenceEngine || undefined) === (b.persistenceEngine || undefined)
  );
}

/** Whether two destinations (same address and port) differ in anything SET_DEST would change. */
export function realServerSettingsEqual(a: RealServer, b: RealServer): boolean {
  if (
    a.forward !== b.forward ||
    a.weight !== b.weight ||
    a.upperThreshold !== b.upperThreshold ||
    a.lowerThreshold !== b.lowerThreshold
  ) {
    return false;
  }
  if (a.forward !== 'tunnel') return true;
  return (
    (a.tunnelType ?? 'ipip') === (b.tunnelType ?? 'ipip') &&
    (a.tunnelPort ?? 0) === (b.tunnelPort ?? 0) &&
    (a.tunnelFlags ?? 0) === (b.tunnelFlags ?? 0)
  );
}

/** The same operation with canonical keys and fields. */
export function normalizeOperation(op: IpvsOperation): IpvsOperation {
  switch (op.op) {
    case 'add-service':
    case 'update-service':
      return { op: op.op, service: normalizeService(op.service) };
    case 'delete-service':
      return { op: op.op, key: normalizeServiceKey(op.key) };
    case 'add-destination':
    case 'update-destination':
      return {
        op: op.op,
        key: normalizeServiceKey(op.key),
        destination: normalizeRealServer(op.destination),
      };
    case 'delete-destination':
      return {
        op: op.op,
        key: normalizeServiceKey(op.key),
        destination: {
          family: op.destination.family,
          address: canonicalIp(op.destination.address) ?? op.destination.address,
          port: op.destination.port,
        },
      };
  }
}
