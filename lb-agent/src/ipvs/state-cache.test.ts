import assert from 'node:assert/strict';
import { test } from 'node:test';
import { applyOperations } from './apply.ts';
import { FakeIpvsClient } from './fake-client.ts';
import { realServer } from './fixtures.ts';
import { planIpvs } from './planner.ts';
import { IpvsStateCache } from './state-cache.ts';
import type { KnownService, ServiceSpec } from './types.ts';

/** Settings only: the cache knows no counts for what it recorded. */
const sortTable = (t: readonly KnownService[]) =>
  t
    .map((s) => ({
      service: s.service,
      destinations: s.destinations
        .map(({ activeConnections, inactiveConnections, persistentConnections, ...d }) => d)
        .sort((a, b) => a.address.localeCompare(b.address)),
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

const service = {
  key: { kind: 'address', family: 'ipv4', protocol: 'tcp', address: '10.96.1.1', port: 80 },
  scheduler: 'mh',
  schedulerFlags: [],
  onePacket: false,
  persistence: undefined,
  persistenceEngine: undefined,
} as const satisfies KnownService['service'];
const key = service.key;
const real = (address: string, weight = 1) => realServer(address, { weight });
const addresses = (s: KnownService | undefined) => s?.destinations.map((d) => `${d.address}/${d.weight}`);

test('the cache keeps the kernel order, and never changes an entry someone holds', () => {
  const cache = new IpvsStateCache();
  const read: KnownService = {
    service,
    destinations: [
      { ...real('10.0.0.1'), activeConnections: 3, inactiveConnections: 0, persistentConnections: 0 },
    ],
  };
  cache.reset([read], 0);
  const held = cache.get('tcp:10.96.1.1:80')!;
  const ok = (ops: import('./types.ts').IpvsOperation[]) => ({ applied: ops, failed: [] });
  cache.record(ok([{ op: 'add-destination', key, destination: real('10.0.0.2') }]));
  cache.record(ok([{ op: 'update-destination', key, destination: real('10.0.0.1', 5) }]));
  // An entry made in one call may be changed by the same call's later operations only.
  cache.record(
    ok([
      { op: 'add-destination', key, destination: real('10.0.0.3') },
      { op: 'delete-destination', key, destination: { family: 'ipv4', address: '10.0.0.2', port: 8080 } },
      { op: 'add-destination', key, destination: real('10.0.0.4') },
    ]),
  );
  // Adds go to the head (as the kernel puts them), an update keeps its place.
  assert.deepEqual(addresses(cache.get('tcp:10.96.1.1:80')), ['10.0.0.4/1', '10.0.0.3/1', '10.0.0.1/5']);
  assert.equal(held, read);
  assert.deepEqual(addresses(held), ['10.0.0.1/1']);
  assert.equal(held.destinations[0]!.activeConnections, 3);
  // Recorded settings carry no counts: unknown until read, never a made-up zero.
  assert.equal(cache.get('tcp:10.96.1.1:80')!.destinations[2]!.activeConnections, undefined);
  // A new service's list is built in place by the call that adds it.
  cache.record(
    ok([
      { op: 'add-service', service: { ...service, key: { ...key, port: 81 } } },
      { op: 'add-destination', key: { ...key, port: 81 }, destination: real('10.0.0.1') },
      { op: 'add-destination', key: { ...key, port: 81 }, destination: real('10.0.0.2') },
    ]),
  );
  assert.deepEqual(addresses(cache.get('tcp:10.96.1.1:81')), ['10.0.0.2/1', '10.0.0.1/1']);
});

test('the cache holds the planned real servers themselves, not copies', () => {
  const cache = new IpvsStateCache();
  const spec: ServiceSpec = { service, destinations: [real('10.0.0.1'), real('10.0.0.2')] };
  const plan = planIpvs({
    desired: [spec],
    actual: cache.byId(),
    owns: () => true,
    now: 0,
    draining: new Map(),
    drainTimeoutMs: 0,
  });
  cache.record({ applied: plan.operations, failed: [] });
  const cached = cache.get('tcp:10.96.1.1:80')!.destinations;
  assert.equal(cached.length, 2);
  for (const d of cached) assert.ok(spec.destinations.includes(d), `${d.address} is a copy`);
});
