import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { addressKey, realServer, virtualService } from './fixtures.ts';
import { drainKey, type PlanInput, planIpvs, planIpvsSliced, summarizePlan } from './planner.ts';
import type { RealServer, RealServerState, ServiceKey, ServiceSpec, ServiceState } from './types.ts';

const key = (address: string, port = 80, protocol: 'tcp' | 'udp' = 'tcp') =>
  addressKey(address, port, protocol);
const service = virtualService;
const real = (address: string, weight = 1, extra: Partial<RealServer> = {}) =>
  realServer(address, { weight, ...extra });
const state = (d: RealServer, active = 0, inactive = 0): RealServerState => ({
  ...d,
  activeConnections: active,
  inactiveConnections: inactive,
  persistentConnections: 0,
});
const owns = (k: ServiceKey) => k.kind === 'address' && k.address.startsWith('10.96.');

function plan(desired: ServiceSpec[], actual: ServiceState[], extra: Partial<PlanInput> = {}) {
  return planIpvs({
    desired,
    actual,
    owns,
    now: 1_000_000,
    draining: new Map(),
    drainTimeoutMs: 60_000,
    ...extra,
  });
}

describe('planIpvs', () => {
  const vip = key('10.96.0.1');
  const spec: ServiceSpec = { service: service(vip), destinations: [real('10.0.0.1'), real('10.0.0.2')] };

  test('creates a missing service, then its destinations', () => {
    const p = plan([spec], []);
    assert.deepEqual(
      p.operations.map((o) => o.op),
      ['add-service', 'add-destination', 'add-destination'],
    );
  });

  test('a converged table plans nothing, whatever spelling the desired state used', () => {
    const actual: ServiceState[] = [
      { service: service(vip), destinations: spec.destinations.map((d) => state(d)) },
    ];
    assert.equal(plan([spec], actual).operations.length, 0);
    // Same service written with a non-canonical IPv6 address and unsorted flags.
    const v6 = key('fd00:96::1');
    const desired6: ServiceSpec = {
      service: service({ ...v6, address: 'FD00:0096:0:0::1' }, 'mh', {
        schedulerFlags: ['flag-2', 'flag-1'],
      }),
      destinations: [{ ...real('fd00::5'), family: 'ipv6', address: 'fd00:0::5' }],
    };
    const actual6: ServiceState[] = [
      {
        service: service(v6, 'mh', { schedulerFlags: ['flag-1', 'flag-2'] }),
        destinations: [state({ ...real('fd00::5'), family: 'ipv6' })],
      },
    ];
    assert.equal(plan([desired6], actual6, { owns: () => true }).operations.length, 0);
  });

  test('updates only what differs', () => {
    const actual: ServiceState[] = [
      { service: service(vip, 'wrr'), destinations: [state(real('10.0.0.1', 5)), state(real('10.0.0.2'))] },
    ];
    const p = plan([spec], actual);
    assert.deepEqual(p.operations, [
      { op: 'update-service', service: service(vip) },
      { op: 'update-destination', key: vip, destination: real('10.0.0.1', 1) },
    ]);
  });

  test('never plans a write to a service it does not own', () => {
    const foreign = key('192.168.1.1');
    const actual: ServiceState[] = [{ service: service(foreign), destinations: [state(real('10.0.0.9'))] }];
    const p = plan([], actual);
    assert.equal(p.operations.length, 0);
    assert.equal(p.foreign, 1);
    const refused = plan([{ service: service(foreign, 'mh'), destinations: [] }], actual);
    assert.equal(refused.operations.length, 0);
    assert.equal(refused.refused.length, 1);
  });

  test('deletes an owned service that is no longer desired', () => {
    const actual: ServiceState[] = [{ service: service(key('10.96.0.9')), destinations: [] }];
    assert.deepEqual(plan([], actual).operations, [{ op: 'delete-service', key: key('10.96.0.9') }]);
  });

  test('drains a removed TCP destination: weight 0 first, delete once idle', () => {
    const gone = real('10.0.0.3');
    const actual: ServiceState[] = [
      { service: service(vip), destinations: [...spec.destinations.map((d) => state(d)), state(gone, 4, 2)] },
    ];
    const first = plan([spec], actual);
    assert.deepEqual(first.operations, [
      { op: 'update-destination', key: vip, destination: { ...gone, weight: 0 } },
    ]);
    const dk = drainKey(vip, gone);
    assert.equal(first.draining.get(dk), 1_000_000);
    assert.equal(first.drainingNow[0]?.activeConnections, 4);

    // Still busy at weight 0: keep waiting, remember when the drain began.
    const busy: ServiceState[] = [
      {
        service: service(vip),
        destinations: [...spec.destinations.map((d) => state(d)), state({ ...gone, weight: 0 }, 1)],
      },
    ];
    const second = plan([spec], busy, { now: 1_030_000, draining: first.draining });
    assert.equal(second.operations.length, 0);
    assert.equal(second.draining.get(dk), 1_000_000);

    // Idle: delete.
    const idle: ServiceState[] = [
      {
        service: service(vip),
        destinations: [...spec.destinations.map((d) => state(d)), state({ ...gone, weight: 0 })],
      },
    ];
    const third = plan([spec], idle, { now: 1_031_000, draining: second.draining });
    assert.deepEqual(third.operations, [
      {
        op: 'delete-destination',
        key: vip,
        destination: { family: 'ipv4', address: '10.0.0.3', port: 8080 },
      },
    ]);
    assert.equal(third.draining.size, 0);

    // Busy past the timeout: delete anyway (the drain is bounded).
    const late = plan([spec], busy, { now: 1_060_000, draining: first.draining });
    assert.equal(late.operations[0]?.op, 'delete-destination');
  });

  test('an idle removed destination is deleted at once, and UDP ones never drain', () => {
    const udpVip = key('10.96.0.2', 53, 'udp');
    const actual: ServiceState[] = [
      {
        service: service(vip),
        destinations: [...spec.destinations.map((d) => state(d)), state(real('10.0.0.3'))],
      },
      { service: service(udpVip), destinations: [state(real('10.0.0.4'), 3)] },
    ];
    const p = plan([spec, { service: service(udpVip), destinations: [] }], actual);
    assert.deepEqual(
      p.operations.map((o) => o.op),
      ['delete-destination', 'delete-destination'],
    );
  });

  test('drainTimeoutMs 0 deletes busy destinations at once', () => {
    const actual: ServiceState[] = [
      {
        service: service(vip),
        destinations: [...spec.destinations.map((d) => state(d)), state(real('10.0.0.3'), 9)],
      },
    ];
    assert.deepEqual(
      plan([spec], actual, { drainTimeoutMs: 0 }).operations.map((o) => o.op),
      ['delete-destination'],
    );
  });

  test('a destination that comes back during its drain is restored, not re-added', () => {
    const back = real('10.0.0.2');
    const actual: ServiceState[] = [
      { service: service(vip), destinations: [state(real('10.0.0.1')), state({ ...back, weight: 0 }, 3)] },
    ];
    const draining = new Map([[drainKey(vip, back), 999_000]]);
    const p = plan([spec], actual, { draining });
    assert.deepEqual(p.operations, [{ op: 'update-destination', key: vip, destination: back }]);
    assert.equal(p.draining.size, 0);
  });

  test('orders adds before updates before deletes, and summarizes', () => {
    const actual: ServiceState[] = [
      { service: service(key('10.96.0.9')), destinations: [] },
      { service: service(vip, 'wrr'), destinations: [state(real('10.0.0.1'))] },
    ];
    const p = plan([spec], actual);
    assert.deepEqual(
      p.operations.map((o) => o.op),
      ['add-destination', 'update-service', 'delete-service'],
    );
    assert.deepEqual(summarizePlan(p.operations), {
      addServices: 0,
      updateServices: 1,
      deleteServices: 1,
      addDestinations: 1,
      updateDestinations: 0,
      deleteDestinations: 0,
    });
  });

  test('a converged table of 10,000 services x 10 destinations plans zero operations', () => {
    const desired: ServiceSpec[] = [];
    const actual: ServiceState[] = [];
    for (let i = 0; i < 10_000; i++) {
      const k = key(`10.96.${i >> 8}.${i & 255}`);
      const dests = Array.from({ length: 10 }, (_, j) => real(`10.1.${i >> 8}.${j}`));
      desired.push({ service: service(k), destinations: dests });
      actual.push({ service: service(k), destinations: dests.map((d) => state(d)) });
    }
    const p = plan(desired, actual);
    assert.equal(p.operations.length, 0);
  });

  test('unchanged services are trusted (not compared) unless missing or draining', () => {
    const drifted: ServiceState[] = [{ service: service(vip, 'wrr'), destinations: [] }];
    assert.equal(plan([spec], drifted, { unchanged: () => true }).operations.length, 0);
    assert.equal(plan([spec], [], { unchanged: () => true }).operations[0]?.op, 'add-service');
    const gone = real('10.0.0.3');
    const busy: ServiceState[] = [
      {
        service: service(vip),
        destinations: [...spec.destinations.map((d) => state(d)), state({ ...gone, weight: 0 })],
      },
    ];
    const draining = new Map([[drainKey(vip, gone), 999_000]]);
    assert.equal(
      plan([spec], busy, { unchanged: () => true, draining }).operations[0]?.op,
      'delete-destination',
    );
    // Unchanged services still count as desired: nothing of theirs is deleted.
    assert.equal(plan([spec], drifted, { unchanged: () => true }).operations.length, 0);
  });

  test('planned in slices, the plan is the same, with a pause between services', async () => {
    const specs: ServiceSpec[] = [];
    const actual: ServiceState[] = [];
    for (let i = 0; i < 40; i++) {
      const k = key(`10.96.1.${i}`);
      const s: ServiceSpec = {
        service: service(k, i % 2 ? 'mh' : 'rr'),
        destinations: [real(`10.1.${i}.2`), real(`10.1.${i}.1`, i % 5 === 0 ? 3 : 1)],
      };
      if (i % 3) specs.push(s);
      // The kernel: some converged, some with another weight or an extra backend, some missing.
      if (i % 4)
        actual.push({
          service: s.service,
          destinations: [
            state(real(`10.1.${i}.1`)),
            state(real(`10.1.${i}.2`)),
            ...(i % 7 ? [] : [state(real('10.9.9.9'), 2)]),
          ],
        });
    }
    const input: PlanInput = {
      desired: specs,
      actual,
      owns,
      now: 1,
      draining: new Map(),
      drainTimeoutMs: 60_000,
    };
    let pauses = 0;
    const sliced = await planIpvsSliced(input, async () => {
      pauses++;
    });
    const whole = planIpvs(input);
    assert.ok(whole.operations.length > 10);
    assert.deepEqual(sliced, whole);
    assert.ok(pauses >= specs.length, `${pauses} pauses for ${specs.length} services`);
  });

  describe('mh: one destination order whatever the history', () => {
    const mhSvc = service(key('10.96.0.9'), 'mh');
    const ops = (r: ReturnType<typeof plan>) =>
      r.operations.map((o) =>
        o.op === 'add-destination' || o.op === 'delete-destination' || o.op === 'update-destination'
          ? `${o.op} ${o.destination.address}`
          : o.op,
      );

    test('a new mh service adds its backends last-first, so that the list reads in canonical order', () => {
      const r = plan(
        [{ service: mhSvc, destinations: [real('10.0.0.2'), real('10.0.0.10'), real('10.0.0.1')] }],
        [],
      );
      assert.deepEqual(ops(r), [
        'add-service',
        'add-destination 10.0.0.10',
        'add-destination 10.0.0.2',
        'add-destination 10.0.0.1',
      ]);
    });

    test('a backend added to a running service: it and the ones before it are (re)inserted, the rest untouched', () => {
      const have = ['10.0.0.2', '10.0.0.4', '10.0.0.6'].map((a) => state(real(a), 3));
      const r = plan(
        [
          {
            service: mhSvc,
            destinations: [...['10.0.0.2', '10.0.0.4', '10.0.0.5', '10.0.0.6'].map((a) => real(a))],
          },
        ],
        [{ service: mhSvc, destinations: have }],
      );
      assert.deepEqual(ops(r), [
        'add-destination 10.0.0.5',
        'delete-destination 10.0.0.4',
        'add-destination 10.0.0.4',
        'delete-destination 10.0.0.2',
        'add-destination 10.0.0.2',
      ]);
      assert.equal(r.moved, 2);
    });

    test('a list out of order (another history) is put in order; a weight change keeps its place', () => {
      const have = ['10.0.0.3', '10.0.0.1', '10.0.0.2'].map((a) => state(real(a)));
      const r = plan(
        [{ service: mhSvc, destinations: [real('10.0.0.1'), real('10.0.0.2'), real('10.0.0.3', 2)] }],
        [{ service: mhSvc, destinations: have }],
      );
      // 10.0.0.3 at the head must move to the tail: 1 and 2 go in front of it again.
      assert.deepEqual(ops(r), [
        'delete-destination 10.0.0.2',
        'add-destination 10.0.0.2',
        'delete-destination 10.0.0.1',
        'add-destination 10.0.0.1',
        'update-destination 10.0.0.3',
      ]);
    });

    test('planned twice, a new mh service is added in the same order (its sorted list is kept, never modified)', () => {
      const s = { service: mhSvc, destinations: [real('10.0.0.2'), real('10.0.0.10'), real('10.0.0.1')] };
      const first = ops(plan([s], []));
      assert.deepEqual(ops(plan([s], [])), first);
      assert.deepEqual(first.slice(1), [
        'add-destination 10.0.0.10',
        'add-destination 10.0.0.2',
        'add-destination 10.0.0.1',
      ]);
    });

    test('other schedulers keep whatever order the kernel has', () => {
      const rr = service(key('10.96.0.9'), 'rr');
      const have = ['10.0.0.3', '10.0.0.1'].map((a) => state(real(a)));
      const r = plan(
        [{ service: rr, destinations: [real('10.0.0.1'), real('10.0.0.3')] }],
        [{ service: rr, destinations: have }],
      );
      assert.deepEqual(r.operations, []);
    });

    test('a draining backend stays where it is; a removed one just goes', () => {
      const have = ['10.0.0.1', '10.0.0.2', '10.0.0.3'].map((a, i) => state(real(a), i === 1 ? 4 : 0));
      const r = plan(
        [{ service: mhSvc, destinations: [real('10.0.0.3')] }],
        [{ service: mhSvc, destinations: have }],
      );
      assert.deepEqual(ops(r), ['update-destination 10.0.0.2', 'delete-destination 10.0.0.1']);
    });
  });
});
