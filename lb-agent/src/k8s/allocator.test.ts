import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Pool } from '../config/agent-config.ts';
import { type AddressBlock, parseAddressBlock } from '../net/pool.ts';
import { type AllocatorConfig, planAllocations as planWithSettings, poolUsage } from './allocator.ts';
import { leanService } from './objects.ts';
import { translateKubernetes } from './translate.ts';

const CLASS = 'portlb.io/portlb';
const cfg: AllocatorConfig = { loadBalancerClass: CLASS, serveServicesWithoutClass: false };
// biome-ignore lint/suspicious/noExplicitAny: API JSON as it arrives.
type Raw = Record<string, any>;

/** As the controller does it: lean objects, the settings in force from the translation. */
function planAllocations(raw: Raw[], p: Pool[], c: AllocatorConfig) {
  const services = raw.map(leanService);
  const t = translateKubernetes(
    { services, endpointSlices: [] },
    { ...c, defaultScheduler: 'mh', defaultForwarding: 'nat' },
  );
  return planWithSettings(services, t.settings, p, c);
}
const blocks = (...t: string[]) => t.map((x) => parseAddressBlock(x) as AddressBlock);
const pools: Pool[] = [
  { name: 'default', blocks: blocks('203.0.113.0/30', 'fd00:203::/126'), autoAssign: true },
  { name: 'special', blocks: blocks('198.51.100.7-198.51.100.8'), autoAssign: false },
];

let seq = 0;
function svc(
  name: string,
  o: {
    ips?: string[];
    annotations?: Record<string, string>;
    spec?: Record<string, unknown>;
    created?: string;
  } = {},
): Raw {
  return {
    metadata: {
      name,
      namespace: 'default',
      uid: `uid-${name}`,
      annotations: o.annotations,
      creationTimestamp: (o.created ?? `2026-01-01T00:00:${String(seq++).padStart(2, '0')}Z`) as never,
    },
    spec: {
      type: 'LoadBalancer',
      loadBalancerClass: CLASS,
      ports: [{ port: 80, protocol: 'TCP' }],
      ...(o.spec ?? {}),
    },
    status: { loadBalancer: { ingress: (o.ips ?? []).map((ip) => ({ ip, ipMode: 'Proxy' })) } },
  };
}

const ipsOf = (plan: ReturnType<typeof planAllocations>, name: string) =>
  plan.assignments.get(`default/${name}`);
const eventsOf = (plan: ReturnType<typeof planAllocations>, name: string) =>
  plan.events.filter((e) => e.service.name === name).map((e) => `${e.type} ${e.reason}`);

describe('planAllocations', () => {
  test('assigns the first free usable address (network and broadcast of a CIDR skipped), ipMode Proxy', () => {
    const plan = planAllocations([svc('a'), svc('b'), svc('c')], pools, cfg);
    assert.deepEqual(ipsOf(plan, 'a'), ['203.0.113.1']);
    assert.deepEqual(ipsOf(plan, 'b'), ['203.0.113.2']);
    assert.deepEqual(ipsOf(plan, 'c'), []);
    assert.deepEqual(eventsOf(plan, 'a'), ['Normal AddressAssigned']);
    assert.deepEqual(eventsOf(plan, 'c'), ['Warning PoolExhausted']);
    assert.deepEqual(
      plan.updates.map((u) => [u.service.name, u.ips]),
      [
        ['a', ['203.0.113.1']],
        ['b', ['203.0.113.2']],
      ],
    );
  });

  test('keeps valid existing assignments; writes nothing when converged', () => {
    const plan = planAllocations([svc('a', { ips: ['203.0.113.2'] }), svc('b')], pools, cfg);
    assert.deepEqual(ipsOf(plan, 'a'), ['203.0.113.2']);
    assert.deepEqual(ipsOf(plan, 'b'), ['203.0.113.1']);
    const again = planAllocations(
      [svc('a', { ips: ['203.0.113.2'] }), svc('b', { ips: ['203.0.113.1'] })],
      pools,
      cfg,
    );
    assert.deepEqual(again.updates, []);
    assert.deepEqual(again.events, []);
  });

  test('a status without ipMode Proxy is rewritten (kube-proxy would capture the VIP otherwise)', () => {
    const s = svc('a', { ips: ['203.0.113.1'] });
    s.status!.loadBalancer!.ingress = [{ ip: '203.0.113.1' }];
    assert.deepEqual(
      planAllocations([s], pools, cfg).updates.map((u) => u.ips),
      [['203.0.113.1']],
    );
  });

  test('requested addresses: annotation and spec.loadBalancerIP, in pool or refused', () => {
    const plan = planAllocations(
      [
        svc('ann', { annotations: { 'portlb.io/load-balancer-ips': '198.51.100.8' } }),
        svc('legacy', { spec: { loadBalancerIP: '203.0.113.2' } }),
        svc('outside', { annotations: { 'portlb.io/load-balancer-ips': '192.0.2.1' } }),
      ],
      pools,
      cfg,
    );
    assert.deepEqual(ipsOf(plan, 'ann'), ['198.51.100.8']);
    assert.deepEqual(ipsOf(plan, 'legacy'), ['203.0.113.2']);
    assert.deepEqual(ipsOf(plan, 'outside'), []);
    assert.deepEqual(eventsOf(plan, 'outside'), ['Warning AddressNotInPool']);
  });

  test('conflicts: the older Service keeps the address; sharing needs the same key and distinct ports', () => {
    const old = svc('old', { ips: ['203.0.113.1'], created: '2025-01-01T00:00:00Z' });
    const young = svc('young', {
      annotations: { 'portlb.io/load-balancer-ips': '203.0.113.1' },
      created: '2026-06-01T00:00:00Z',
    });
    const plan = planAllocations([young, old], pools, cfg);
    assert.deepEqual(ipsOf(plan, 'old'), ['203.0.113.1']);
    assert.deepEqual(ipsOf(plan, 'young'), []);
    assert.deepEqual(eventsOf(plan, 'young'), ['Warning AddressConflict']);

    const share = { 'portlb.io/allow-shared-ip': 'k' };
    const a = svc('sa', { annotations: share, ips: ['203.0.113.1'] });
    const b = svc('sb', { annotations: share, spec: { ports: [{ port: 53, protocol: 'UDP' }] } });
    const c = svc('sc', { annotations: { ...share, 'portlb.io/load-balancer-ips': '203.0.113.1' } });
    const shared = planAllocations([a, b, c], pools, cfg);
    assert.deepEqual(ipsOf(shared, 'sb'), ['203.0.113.1'], 'same key, other port: shares');
    assert.deepEqual(ipsOf(shared, 'sc'), [], 'same key, same port as sa: refused');
    assert.match(shared.events.find((e) => e.service.name === 'sc')!.message, /already uses TCP\/80/);
  });

  test('dual-stack per ipFamilies and ipFamilyPolicy', () => {
    const dual = svc('dual', { spec: { ipFamilies: ['IPv6', 'IPv4'], ipFamilyPolicy: 'RequireDualStack' } });
    const single6 = svc('six', { spec: { ipFamilies: ['IPv6', 'IPv4'], ipFamilyPolicy: 'SingleStack' } });
    const plan = planAllocations([dual, single6], pools, cfg);
    // fd00:203:: is the subnet-router anycast address (RFC 4291): never handed out.
    assert.deepEqual(ipsOf(plan, 'dual'), ['fd00:203::1', '203.0.113.1']);
    assert.deepEqual(ipsOf(plan, 'six'), ['fd00:203::2']);
  });

  test('pool annotation: only that pool; an unknown pool is an event', () => {
    const plan = planAllocations(
      [
        svc('p', { annotations: { 'portlb.io/address-pool': 'special' } }),
        svc('q', { annotations: { 'portlb.io/address-pool': 'nope' } }),
      ],
      pools,
      cfg,
    );
    assert.deepEqual(ipsOf(plan, 'p'), ['198.51.100.7']);
    assert.deepEqual(eventsOf(plan, 'q'), ['Warning UnknownPool']);
  });

  test('a Service that stops being ours gets its address cleared; a foreign address is left alone', () => {
    const gone = svc('gone', { ips: ['203.0.113.1'], spec: { type: 'ClusterIP' } });
    const other = svc('other', { ips: ['192.0.2.50'], spec: { loadBalancerClass: 'example.com/x' } });
    const plan = planAllocations([gone, other], pools, cfg);
    assert.deepEqual(
      plan.updates.map((u) => [u.service.name, u.ips]),
      [['gone', []]],
    );
    assert.deepEqual(eventsOf(plan, 'gone'), ['Normal AddressReleased']);
  });

  test('a garbage annotation keeps the current address (the translation reports the problem)', () => {
    const plan = planAllocations(
      [svc('x', { ips: ['203.0.113.2'], annotations: { 'portlb.io/scheduler': '??' } }), svc('y')],
      pools,
      cfg,
    );
    assert.deepEqual(eventsOf(plan, 'x'), []);
    assert.deepEqual(ipsOf(plan, 'y'), ['203.0.113.1'], 'the address of x is not handed out');
    assert.equal(
      plan.updates.some((u) => u.service.name === 'x'),
      false,
    );
  });

  test('10,000 Services in one pass', () => {
    const big: Pool[] = [{ name: 'big', blocks: blocks('10.96.0.0/16'), autoAssign: true }];
    const many = Array.from({ length: 10_000 }, (_, i) => svc(`s${i}`, { created: '2026-01-01T00:00:00Z' }));
    const plan = planAllocations(many, big, cfg);
    assert.equal(new Set([...plan.assignments.values()].map((x) => x[0])).size, 10_000);
  });

  test('a LoadBalancer of another class keeps its address even inside our pools', () => {
    const theirs = svc('theirs', { ips: ['203.0.113.1'], spec: { loadBalancerClass: 'example.com/other' } });
    const unclassed = {
      ...svc('unclassed', { ips: ['192.0.2.9'] }),
      spec: { type: 'LoadBalancer', ports: [{ port: 80 }] },
    };
    const plan = planAllocations([theirs, unclassed, svc('ours')], pools, cfg);
    assert.deepEqual(
      plan.updates.map((u) => u.service.name),
      ['ours'],
      'only ours is written',
    );
    assert.deepEqual(
      ipsOf(plan, 'ours'),
      ['203.0.113.2'],
      'an address another implementation uses is not handed out',
    );
  });

  test('Services share a VIP only with the same externalTrafficPolicy', () => {
    const share = { 'portlb.io/allow-shared-ip': 'k' };
    const cluster = svc('cluster', { annotations: share, ips: ['203.0.113.1'] });
    const local = svc('local', {
      annotations: { ...share, 'portlb.io/load-balancer-ips': '203.0.113.1' },
      spec: { ports: [{ port: 53, protocol: 'UDP' }], externalTrafficPolicy: 'Local' },
    });
    const plan = planAllocations([cluster, local], pools, cfg);
    assert.deepEqual(ipsOf(plan, 'local'), []);
    assert.match(
      plan.events.find((e) => e.service.name === 'local')!.message,
      /externalTrafficPolicy is Cluster, not Local/,
    );
  });
});

test('pool usage: usable addresses per pool and family, and the ones Services hold (shared once, others not counted)', () => {
  const services = [
    svc('a', { ips: ['203.0.113.1', 'fd00:203::1'] }),
    svc('b', { ips: ['203.0.113.1'] }),
    svc('c', { ips: ['198.51.100.8'] }),
    svc('elsewhere', { ips: ['192.0.2.9'] }),
  ].map(leanService);
  assert.deepEqual(poolUsage(pools, services), [
    { pool: 'default', family: 'ipv4', size: 2, inUse: 1 },
    { pool: 'default', family: 'ipv6', size: 3, inUse: 1 },
    { pool: 'special', family: 'ipv4', size: 2, inUse: 1 },
  ]);
});
