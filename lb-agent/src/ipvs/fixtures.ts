// Builders of IPVS objects for tests (of the codec, the planner, the state cache, and the
// conformance and kernel suites): one default for every field the tests do not care about.
import type { AddressServiceKey, RealServer, ServiceKey, VirtualService } from './types.ts';

/** A TCP/80 (by default) address key; the family follows the address. */
export const addressKey = (
  address: string,
  port = 80,
  protocol: 'tcp' | 'udp' | 'sctp' = 'tcp',
): AddressServiceKey => ({
  kind: 'address',
  family: address.includes(':') ? 'ipv6' : 'ipv4',
  protocol,
  address,
  port,
});

/** A virtual service with no flags, no persistence. */
export const virtualService = (
  key: ServiceKey,
  scheduler = 'rr',
  extra: Partial<VirtualService> = {},
): VirtualService => ({
  key,
  scheduler,
  schedulerFlags: [],
  onePacket: false,
  persistence: undefined,
  persistenceEngine: undefined,
  ...extra,
});

/** A NAT real server on port 8080 with weight 1 and no thresholds; the family follows the address. */
export const realServer = (address: string, extra: Partial<RealServer> = {}): RealServer => ({
  family: address.includes(':') ? 'ipv6' : 'ipv4',
  address,
  port: 8080,
  forward: 'nat',
  weight: 1,
  upperThreshold: 0,
  lowerThreshold: 0,
  ...extra,
});
