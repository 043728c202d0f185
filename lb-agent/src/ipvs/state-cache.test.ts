import assert from 'node:assert/strict';
import { test } from 'node:test';
import { applyOperations } from './apply.ts';
import { FakeIpvsClient } from './fake-client.ts';
import { planIpvs } from './planner.ts';
import { IpvsStateCache } from './state-cache.ts';
import type { ServiceSpec, ServiceState } from './types.ts';

const sortTable = (t: ServiceState[]) =>
  t
    .map((s) => ({
      ...s,
      destinations: [...s.destinations].sort((a, b) => a.address.localeCompare(b.address)),
    }))
    .sort((a, b) => JSON.stringify(a.service.key).localeCompare(JSON.stringify(b.service.key)));

test('the state cache tracks exactly what the kernel accepted', async () => {
  const kernel = new FakeIpvsClient();
  const cache = new IpvsStateCache();
  cache.reset(await kernel.getTable(), 0);
  const spec = (n: number, weights: number[], scheduler = 'rr'): ServiceSpec => ({
    service: {
      key: { kind: 'address', family: 'ipv4', protocol: 'tcp', address: `10.96.0.${n}`, port: 80 },
      scheduler,
      schedulerFlags: [],
      onePacket: false,
      persistence: undefined,
      persistenceEngine: undefined,
    },
    destinations: weights.map((w, i) => ({
      family: 'ipv4',
      address: `10.0.${n}.${i + 1}`,
      port: 8080,
      forward: 'nat',
      weight: w,
      upperThreshold: 0,
      lowerThreshold: 0,
    })),
  });
  const rounds: ServiceSpec[][] = [
    [spec(1, [1, 1]), spec(2, [1])],
    [spec(1, [3, 1, 1], 'mh'), spec(3, [1])],
    [spec(1, [3]), spec(3, [])],
  ];
  for (const desired of rounds) {
    const plan = planIpvs({
      desired,
      actual: cache.table(),
      owns: () => true,
      now: 0,
      draining: new Map(),
      drainTimeoutMs: 0,
    });
    // One operation fails (an unknown scheduler on a service nobody asked for): not recorded.
    const bogus = { op: 'add-service' as const, service: { ...spec(9, []).service, scheduler: 'nope' } };
    cache.record(await applyOperations(kernel, [...plan.operations, bogus]));
    assert.deepEqual(sortTable(cache.table()), sortTable(await kernel.getTable()));
  }
});
