import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseHealthCheckText } from '../health/spec.ts';
import { computeDesired, type DesiredState, DesiredTracker } from './desired.ts';
import { ep, intent } from './fixtures.ts';
import type { NodeInfo, ServiceIntent } from './types.ts';

const node: NodeInfo = { name: 'lb1', excluded: false, ready: true };
const owns = (a: string) => a.startsWith('203.0.113.');
const config = { owns };

/** The same service with other endpoints (what an EndpointSlice change makes of it). */
const withEndpoints = (
  s: ServiceIntent,
  endpoints: ServiceIntent['ports'][number]['endpoints'],
): ServiceIntent => ({
  ...s,
  ports: s.ports.map((p) => ({ ...p, endpoints })),
});

/** A desired state without its delta, for comparison with a full computation. */
const plain = ({ delta: _, ...rest }: DesiredState) => rest;

describe('desired state kept between passes (DesiredTracker)', () => {
  const services = [
    intent('a/one', '203.0.113.1', [ep('10.0.0.1'), ep('10.0.0.2')]),
    // Two services share a VIP: the VIP's facts come from both.
    intent('a/two', '203.0.113.2', [ep('10.0.1.1')]),
    intent('a/three', '203.0.113.2', [ep('10.0.2.1')], {
      ports: [{ name: '', protocol: 'tcp', port: 443, endpoints: [ep('10.0.2.1')] }],
    }),
    // Left out by desired state (outside the pools): its endpoints never matter.
    intent('b/foreign', '198.51.100.1', [ep('10.0.3.1')]),
  ];

  test('a patch equals the full computation of the same services, and names what changed', () => {
    const t = new DesiredTracker();
    const first = t.full(
      { services, skipped: [{ service: 'x/y', reason: 'NotOurClass', detail: 'd' }] },
      node,
      config,
    );
    assert.equal(first.skipped[0]!.service, 'x/y', 'the skips made before come first');
    const changed = withEndpoints(services[0]!, [ep('10.0.0.1'), ep('10.0.0.3')]);
    const now = [changed, ...services.slice(1)];
    const patched = t.patch([changed], node);
    assert.ok(patched, 'an endpoint change is patched');
    const full = computeDesired({ services: now }, node, config);
    assert.deepEqual(plain(patched), { ...full, skipped: [first.skipped[0]!, ...full.skipped] });
    assert.equal(patched.delta?.base, first);
    assert.deepEqual(
      patched.delta?.services.map((at) => patched.virtualServices[at]!.owner),
      ['a/one'],
    );
    assert.deepEqual(
      patched.delta?.vips.map((at) => patched.vips[at]!.address),
      ['203.0.113.1'],
    );
    // Everything the delta does not name is the very same object.
    patched.virtualServices.forEach((v, i) => {
      if (!patched.delta!.services.includes(i)) assert.equal(v, first.virtualServices[i]);
    });
    assert.equal(patched.skipped, first.skipped);
  });

  test('a VIP shared by two services is withheld only when neither has a backend left', () => {
    const t = new DesiredTracker();
    t.full({ services }, node, config);
    const two = withEndpoints(services[1]!, []);
    const p1 = t.patch([two], node)!;
    const vip = (d: DesiredState) => d.vips.find((v) => v.address === '203.0.113.2')!;
    assert.equal(vip(p1).announce, true, 'a/three still serves it');
    const three = withEndpoints(services[2]!, []);
    const p2 = t.patch([three], node)!;
    assert.equal(p2.delta?.base, p1, 'each patch is from the state handed out before it');
    assert.equal(vip(p2).announce, false);
    assert.equal(vip(p2).withheld, 'NoReadyBackends');
    assert.deepEqual(
      plain(p2),
      computeDesired({ services: [services[0]!, two, three, services[3]!] }, node, config),
    );
  });

  test('a service left out stays out: its endpoints change nothing', () => {
    const t = new DesiredTracker();
    const first = t.full({ services }, node, config);
    const p = t.patch([withEndpoints(services[3]!, [])], node)!;
    assert.deepEqual(p.delta?.services, []);
    assert.equal(p.virtualServices, first.virtualServices);
  });

  test('anything more than backends takes the full computation', () => {
    const cases: [string, ServiceIntent][] = [
      [
        'another port',
        {
          ...services[0]!,
          ports: [...services[0]!.ports, { name: 'b', protocol: 'tcp', port: 81, endpoints: [] }],
        },
      ],
      ['another VIP', { ...services[0]!, vips: ['203.0.113.9'] }],
      ['another forwarding (netfilter rules differ)', { ...services[0]!, forwarding: 'tunnel' }],
      ['another scheduler (the IPVS service and the sysctls differ)', { ...services[0]!, scheduler: 'rr' }],
      ['a new warning', { ...services[0]!, warnings: ['w'] }],
      ['a service not seen before', intent('c/new', '203.0.113.7', [ep('10.0.9.1')])],
    ];
    for (const [what, changed] of cases) {
      const t = new DesiredTracker();
      t.full({ services }, node, config);
      assert.equal(t.patch([changed], node), undefined, what);
    }
    const t = new DesiredTracker();
    t.full({ services }, node, config);
    assert.equal(t.patch([services[0]!], { ...node, ready: false }), undefined, 'another node state');
    assert.equal(new DesiredTracker().patch([services[0]!], node), undefined, 'nothing computed yet');
  });

  test('health-checked services take the full computation, and so does a change of their health', () => {
    const r = parseHealthCheckText('tcp');
    if (!r.ok) throw new Error(r.problem);
    const checked = intent('h/web', '203.0.113.5', [ep('10.0.5.1')], { healthCheck: r.spec });
    let version = 1;
    const health = { state: () => 'up' as const, version: () => version };
    const t = new DesiredTracker();
    t.full({ services: [...services, checked], health }, node, config);
    assert.equal(t.patch([withEndpoints(checked, [])], node, health), undefined, 'its own endpoints');
    t.full({ services: [...services, checked], health }, node, config);
    assert.ok(t.patch([withEndpoints(services[0]!, [])], node, health), 'another service: patched');
    version++;
    assert.equal(
      t.patch([withEndpoints(services[0]!, [ep('10.0.0.1')])], node, health),
      undefined,
      'its health changed',
    );
  });
});
