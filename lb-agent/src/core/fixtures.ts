// Builders of intents and endpoints for tests (of the core and of what consumes it).
import type { Endpoint, ServiceIntent } from './types.ts';

export const ep = (address: string, ready = true): Endpoint => ({
  address,
  family: 'ipv4',
  port: 8080,
  ready,
  serving: ready,
  terminating: false,
  nodeName: undefined,
});

/** A TCP/80 service on one VIP, mh, nat, Cluster policy. */
export const intent = (
  id: string,
  vip: string,
  endpoints: Endpoint[],
  extra: Partial<ServiceIntent> = {},
): ServiceIntent => ({
  id,
  vips: [vip],
  ports: [{ name: '', protocol: 'tcp', port: 80, endpoints }],
  scheduler: 'mh',
  schedulerFlags: [],
  forwarding: 'nat',
  persistence: undefined,
  trafficPolicy: 'Cluster',
  announce: true,
  warnings: [],
  ...extra,
});
