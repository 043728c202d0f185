import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseHealthCheckText } from '../health/spec.ts';
import { computeDesired, DesiredMemo } from './desired.ts';
import { ep, intent } from './fixtures.ts';
import type { HealthState, HealthView, NodeInfo } from './types.ts';

const node: NodeInfo = { name: 'lb1', excluded: false, ready: true };
const config = { owns: () => true };
const check = (() => {
  const r = parseHealthCheckText('http');
  if (!r.ok) throw new Error(r.problem);
  return r.spec;
})();

/** A health view the test sets by hand. */
class Health implements HealthView {
  states = new Map<string, HealthState>();
  versions = new Map<string, number>();
  set(service: string, address: string, state: HealthState) {
    this.states.set(`${service}|${address}|8080`, state);
    this.versions.set(service, (this.versions.get(service) ?? 0) + 1);
  }
  state(service: string, address: string, port: number) {
    return this.states.get(`${service}|${address}|${port}`);
  }
  version(service: string) {
    return this.versions.get(service) ?? 0;
  }
}

const weights = (d: ReturnType<typeof computeDesired>) =>
  d.virtualServices[0]!.spec.destinations.map((x) => [x.address, x.weight]);

describe('desired state with health checks', () => {
  test('only backends that pass are weighted; pending and down are weight 0, and every selected one is a check', () => {
    const h = new Health();
    const svc = intent(
      'shop/web',
      '203.0.113.1',
      [ep('10.0.0.1'), ep('10.0.0.2'), ep('10.0.0.3'), ep('10.0.0.9', false)],
      {
        healthCheck: check,
      },
    );
    h.set('shop/web', '10.0.0.1', 'up');
    h.set('shop/web', '10.0.0.2', 'down');
    const d = computeDesired({ services: [svc], health: h }, node, config);
    assert.deepEqual(weights(d), [
      ['10.0.0.1', 1],
      ['10.0.0.2', 0],
      ['10.0.0.3', 0],
    ]);
    assert.deepEqual(
      d.checks.map((c) => c.address),
      ['10.0.0.1', '10.0.0.2', '10.0.0.3'],
      'not-ready endpoints are not probed: readiness decides first',
    );
    assert.equal(d.vips[0]!.announce, true);
  });

  test('every backend failing: the VIP is withheld as NoHealthyBackends (not NoReadyBackends)', () => {
    const h = new Health();
    const svc = intent('shop/web', '203.0.113.1', [ep('10.0.0.1')], { healthCheck: check });
    h.set('shop/web', '10.0.0.1', 'down');
    const d = computeDesired({ services: [svc], health: h }, node, config);
    assert.deepEqual([d.vips[0]!.announce, d.vips[0]!.withheld], [false, 'NoHealthyBackends']);
    const none = computeDesired(
      { services: [intent('shop/web', '203.0.113.1', [], { healthCheck: check })], health: h },
      node,
      config,
    );
    assert.equal(none.vips[0]!.withheld, 'NoReadyBackends');
  });

  test('without a check, or without a health view (portlb ipvs), weights are the configured ones', () => {
    const h = new Health();
    h.set('shop/web', '10.0.0.1', 'down');
    const plain = intent('shop/web', '203.0.113.1', [ep('10.0.0.1')]);
    assert.deepEqual(weights(computeDesired({ services: [plain], health: h }, node, config)), [
      ['10.0.0.1', 1],
    ]);
    assert.deepEqual(computeDesired({ services: [plain], health: h }, node, config).checks, []);
    const checked = intent('shop/web', '203.0.113.1', [ep('10.0.0.1')], { healthCheck: check });
    assert.deepEqual(weights(computeDesired({ services: [checked] }, node, config)), [['10.0.0.1', 1]]);
  });

  test('the memo recomputes a service when its health changes, and only then', () => {
    const h = new Health();
    const memo = new DesiredMemo();
    const svc = intent('shop/web', '203.0.113.1', [ep('10.0.0.1')], { healthCheck: check });
    h.set('shop/web', '10.0.0.1', 'up');
    const a = computeDesired({ services: [svc], health: h }, node, config, memo);
    const b = computeDesired({ services: [svc], health: h }, node, config, memo);
    assert.equal(a.virtualServices[0]!.spec, b.virtualServices[0]!.spec, 'unchanged: the same spec object');
    h.set('shop/web', '10.0.0.1', 'down');
    const c = computeDesired({ services: [svc], health: h }, node, config, memo);
    assert.deepEqual(weights(c), [['10.0.0.1', 0]]);
  });
});
