import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ipvsConformance } from '../../../test/ipvs/conformance.ts';
import { FakeIpvsClient } from './fake-client.ts';
import type { ServiceKey } from './types.ts';

ipvsConformance('fake', () => new FakeIpvsClient());

test('fake: counts successful writes only, and exposes connection counters for drain tests', async () => {
  const c = new FakeIpvsClient();
  const key: ServiceKey = { kind: 'address', family: 'ipv4', protocol: 'tcp', address: '10.0.0.1', port: 80 };
  const service = {
    key,
    scheduler: 'rr',
    schedulerFlags: [],
    onePacket: false,
    persistence: undefined,
    persistenceEngine: undefined,
  };
  await c.execute([
    { op: 'add-service', service },
    { op: 'add-service', service },
  ]);
  assert.equal(c.writes, 1);
  const dest = {
    family: 'ipv4' as const,
    address: '10.0.0.2',
    port: 80,
    forward: 'nat' as const,
    weight: 1,
    upperThreshold: 0,
    lowerThreshold: 0,
  };
  await c.addDestination(key, dest);
  c.setConnections(key, dest, 5, 2);
  const [d] = await c.listDestinations(key);
  assert.equal(d?.activeConnections, 5);
  assert.equal(d?.inactiveConnections, 2);
});
