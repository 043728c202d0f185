import assert from 'node:assert/strict';
import { test } from 'node:test';
import { computeDesired, DesiredTracker } from '../core/desired.ts';
import { ep, intent } from '../core/fixtures.ts';
import type { ServiceIntent } from '../core/types.ts';
import { FakeIpvsClient } from '../ipvs/fake-client.ts';
import { serviceId } from '../ipvs/types.ts';
import { fakeDataPlane, testOwns as owns } from './fixtures.ts';
import { FakeNetfilter } from './netfilter.ts';
import { FakeAddressManager } from './vips.ts';

const desired = (intents: ServiceIntent[]) =>
  computeDesired({ services: intents }, { name: 'n1', excluded: false, ready: true }, { owns });
const id = (vip: string) =>
  serviceId({ kind: 'address', family: 'ipv4', protocol: 'tcp', address: vip, port: 80 });

test('a read-back made beside the passes: services written meanwhile keep what the cache knows; an external deletion is still found', async () => {
  const ipvs = new FakeIpvsClient();
  const dp = fakeDataPlane({ ipvs });
  const s1 = intent('a/one', '203.0.113.1', [ep('10.0.0.1')]);
  const s2 = intent('a/two', '203.0.113.2', [ep('10.0.0.2')]);
  await dp.apply(desired([s1, s2]), true);

  // Someone deletes s2; then the periodic read-back runs (it sees no s2)...
  await ipvs.execute([
    {
      op: 'delete-service',
      key: { kind: 'address', family: 'ipv4', protocol: 'tcp', address: '203.0.113.2', port: 80 },
    },
  ]);
  const readBack = await dp.readBack();
  // ...while incremental passes add s3 and change s1: the read-back has neither.
  const s1b = intent('a/one', '203.0.113.1', [ep('10.0.0.1'), ep('10.0.0.11')]);
  const s3 = intent('a/three', '203.0.113.3', [ep('10.0.0.3')]);
  const inc = await dp.apply(desired([s1b, s2, s3]), false);
  assert.deepEqual(inc.failures, []);

  const full = await dp.apply(desired([s1b, s2, s3]), true, readBack);
  assert.deepEqual(full.failures, [], 'nothing written twice (s3 is known to exist)');
  assert.deepEqual(full.vanished, [id('203.0.113.2')]);
  assert.equal(full.applied['add-service'], 1, 's2 recreated, and only s2');
  assert.equal(full.applied['add-destination'], 1);
  const table = await ipvs.getTable();
  assert.deepEqual(
    table.map((s) => serviceId(s.service.key)).sort(),
    [id('203.0.113.1'), id('203.0.113.2'), id('203.0.113.3')].sort(),
  );
  assert.equal(table.find((s) => serviceId(s.service.key) === id('203.0.113.1'))!.destinations.length, 2);

  // A read-back older than the cache's last reset is not used: the pass reads for itself.
  const stale = await dp.readBack();
  await dp.apply(desired([s1b, s2, s3]), true);
  await ipvs.execute([
    {
      op: 'delete-service',
      key: { kind: 'address', family: 'ipv4', protocol: 'tcp', address: '203.0.113.3', port: 80 },
    },
  ]);
  const again = await dp.apply(desired([s1b, s2, s3]), true, stale);
  assert.deepEqual(
    again.vanished,
    [id('203.0.113.3')],
    'the fresh read found the deletion the stale one could not',
  );
});

test('a read-back that began while a pass was writing does not undo that pass: nothing added twice, nothing "vanished"', async () => {
  const ipvs = new FakeIpvsClient();
  const dp = fakeDataPlane({ ipvs });
  const s1 = intent('a/one', '203.0.113.1', [ep('10.0.0.1')]);
  const s2 = intent('a/two', '203.0.113.2', [ep('10.0.0.2')]);
  // The first pass at 10,000 services writes for minutes; the periodic read-back starts meanwhile.
  const first = dp.apply(desired([s1, s2]), true);
  const during = dp.readBack(); // it reads a kernel the pass has not written yet
  assert.deepEqual((await first).failures, []);
  const full = await dp.apply(desired([s1, s2]), true, await during);
  assert.deepEqual(full.failures, [], 'no EEXIST: the pass knows what it wrote');
  assert.deepEqual(full.vanished, []);
  assert.equal(full.applied['add-service'], 0);
  assert.equal((await ipvs.getTable()).length, 2);
});

test('an incremental pass (a desired state with a delta) writes the changed services only, and keeps every drain going', async () => {
  const ipvs = new FakeIpvsClient();
  const addresses = new FakeAddressManager();
  const netfilter = new FakeNetfilter();
  const dp = fakeDataPlane({ ipvs, addresses, netfilter });
  const node = { name: 'n1', excluded: false, ready: true };
  const tracker = new DesiredTracker();
  const s1 = intent('a/one', '203.0.113.1', [ep('10.0.0.1'), ep('10.0.0.2')]);
  // rr: an add is one write (mh may move backends to keep its order).
  const s2 = intent('a/two', '203.0.113.2', [ep('10.0.1.1'), ep('10.0.1.2')], { scheduler: 'rr' });
  const s3 = intent('a/three', '203.0.113.3', [ep('10.0.2.1')], { scheduler: 'rr' });
  const first = await dp.apply(tracker.full({ services: [s1, s2, s3] }, node, { owns }), true);
  assert.deepEqual(first.failures, []);
  const before = { netfilter: netfilter.writes, addresses: addresses.changes };
  let listed = 0;
  const list = ipvs.listDestinations.bind(ipvs);
  ipvs.listDestinations = (key, o) => {
    listed++;
    return list(key, o);
  };

  // s1 loses a backend that still has a connection: it drains.
  ipvs.setConnections(
    { kind: 'address', family: 'ipv4', protocol: 'tcp', address: '203.0.113.1', port: 80 },
    { family: 'ipv4', address: '10.0.0.2', port: 8080 },
    1,
    0,
  );
  const s1b = intent('a/one', '203.0.113.1', [ep('10.0.0.1')]);
  const p1 = tracker.patch([s1b], node)!;
  const r1 = await dp.apply(p1, false);
  assert.equal(r1.incremental, true);
  assert.deepEqual(r1.failures, []);
  assert.equal(r1.applied['update-destination'], 1, 'the leaving backend quiesced (weight 0)');
  assert.deepEqual(
    r1.draining.map((d) => d.destination.address),
    ['10.0.0.2'],
  );
  assert.equal(listed, 1, "only s1's backends were read (for their connection counts)");
  assert.deepEqual(
    { netfilter: netfilter.writes, addresses: addresses.changes },
    before,
    'no netfilter or VIP work: neither changed',
  );
  assert.deepEqual(
    [...r1.services.keys()].sort(),
    [id('203.0.113.1'), id('203.0.113.2'), id('203.0.113.3')].sort(),
    'every service has an outcome (the others from the pass before)',
  );

  // s2 gains a backend; s1's drain carries on in the same incremental pass.
  const s2b = intent('a/two', '203.0.113.2', [ep('10.0.1.1'), ep('10.0.1.2'), ep('10.0.1.3')], {
    scheduler: 'rr',
  });
  const r2 = await dp.apply(tracker.patch([s2b], node)!, false);
  assert.equal(r2.incremental, true);
  assert.equal(r2.applied['add-destination'], 1);
  assert.deepEqual(
    r2.draining.map((d) => d.destination.address),
    ['10.0.0.2'],
    'the drain is not forgotten',
  );
  assert.equal(r2.services.get(id('203.0.113.2'))?.usable, 3);

  // Its connection closes: the next incremental pass (of another service) deletes it.
  ipvs.setConnections(
    { kind: 'address', family: 'ipv4', protocol: 'tcp', address: '203.0.113.1', port: 80 },
    { family: 'ipv4', address: '10.0.0.2', port: 8080 },
    0,
    0,
  );
  const s3b = intent('a/three', '203.0.113.3', [ep('10.0.2.1'), ep('10.0.2.2')], { scheduler: 'rr' });
  const r3 = await dp.apply(tracker.patch([s3b], node)!, false);
  assert.equal(r3.applied['delete-destination'], 1);
  assert.deepEqual(r3.draining, []);
  const table = new Map(
    (await ipvs.getTable()).map((s) => [serviceId(s.service.key), s.destinations.length]),
  );
  assert.deepEqual(
    [table.get(id('203.0.113.1')), table.get(id('203.0.113.2')), table.get(id('203.0.113.3'))],
    [1, 3, 2],
  );

  // A delta from a state this data plane did not apply: a whole pass, not an incremental one.
  const skipped = tracker.patch([intent('a/one', '203.0.113.1', [ep('10.0.0.9')])], node)!;
  const r4 = await dp.apply(tracker.patch([intent('a/one', '203.0.113.1', [ep('10.0.0.8')])], node)!, false);
  assert.ok(skipped.delta);
  assert.equal(r4.incremental, false);
  assert.deepEqual(
    (await ipvs.listDestinations(skipped.virtualServices[0]!.spec.service.key)).map((d) => d.address),
    ['10.0.0.8'],
  );
});

test('a full pass yields to the event loop as it goes: a change, a probe or a scrape is not held for its length', async () => {
  const ipvs = new FakeIpvsClient();
  // A budget of 0 ms: every slice point yields, so the count below does not depend on this machine's speed.
  const dp = fakeDataPlane({ ipvs, sliceMs: 0 });
  const intents = Array.from({ length: 200 }, (_, i) =>
    intent(`a/s${i}`, `203.0.113.${i + 1}`, [ep(`10.0.${i}.1`), ep(`10.0.${i}.2`)]),
  );
  assert.deepEqual((await dp.apply(desired(intents), true)).failures, []);
  let turns = 0;
  let running = true;
  const turn = () => {
    if (!running) return;
    turns++;
    setImmediate(turn);
  };
  setImmediate(turn);
  const report = await dp.apply(desired(intents), true);
  running = false;
  assert.deepEqual(report.failures, []);
  assert.equal(report.applied['add-destination'], 0, 'converged');
  // The fakes answer without reaching the event loop: only the pass's own slices let it run
  // (reading back, planning and recording each service: three times per service).
  assert.ok(turns >= 400, `the event loop ran ${turns} times during a full pass of 200 services`);
});

test('verify: a read-back against what the passes applied; what a pass wrote after the read began, and foreign services, are not compared', async () => {
  const ipvs = new FakeIpvsClient();
  const addresses = new FakeAddressManager();
  const dp = fakeDataPlane({ ipvs, addresses });
  const s1 = intent('a/one', '203.0.113.1', [ep('10.0.0.1'), ep('10.0.0.2')]);
  const s2 = intent('a/two', '203.0.113.2', [ep('10.0.0.3')]);
  assert.deepEqual((await dp.apply(desired([s1, s2]), true)).failures, []);
  assert.deepEqual(await dp.verify(await dp.readBack()), { verdict: 'clean' });

  // A foreign service appears; a pass changes s1 after the read began: still clean.
  const key1 = {
    kind: 'address',
    family: 'ipv4',
    protocol: 'tcp',
    address: '203.0.113.1',
    port: 80,
  } as const;
  await ipvs.addService({
    key: { ...key1, address: '198.51.100.7' },
    scheduler: 'rr',
    schedulerFlags: [],
  } as never);
  const before = await dp.readBack();
  const s1b = intent('a/one', '203.0.113.1', [ep('10.0.0.1'), ep('10.0.0.9')]);
  assert.deepEqual((await dp.apply(desired([s1b, s2]), false)).failures, []);
  assert.deepEqual(await dp.verify(before), { verdict: 'clean' });

  // A weight changed by hand: drift, named.
  await ipvs.updateDestination(key1, {
    family: 'ipv4',
    address: '10.0.0.9',
    port: 8080,
    forward: 'nat',
    weight: 7,
    upperThreshold: 0,
    lowerThreshold: 0,
  });
  assert.deepEqual(await dp.verify(await dp.readBack()), {
    verdict: 'drift',
    what: `IPVS service ${id('203.0.113.1')} differs`,
  });
  // The full pass repairs it; an owned service nobody asked for is drift too.
  assert.deepEqual((await dp.apply(desired([s1b, s2]), true)).failures, []);
  assert.equal((await dp.verify(await dp.readBack())).verdict, 'clean');
  await ipvs.addService({
    key: { ...key1, address: '203.0.113.99' },
    scheduler: 'rr',
    schedulerFlags: [],
  } as never);
  assert.equal((await dp.verify(await dp.readBack())).verdict, 'drift');
  await dp.apply(desired([s1b, s2]), true);

  // A read-back from before a full pass's reset tells nothing.
  const stale = await dp.readBack();
  await dp.apply(desired([s1b, s2]), true);
  assert.deepEqual(await dp.verify(stale), { verdict: 'unknown' });
  // Nor does one after a pass whose writes failed (the cache is reloaded by the next full pass).
  const failing = fakeDataPlane({
    ipvs: Object.assign(new FakeIpvsClient(), {
      execute: async (ops: readonly unknown[]) => ops.map(() => ({ code: 'KERNEL_ERROR', message: 'no' })),
    }) as never,
  });
  await failing.apply(desired([s1]), true);
  assert.deepEqual(await failing.verify(await failing.readBack()), { verdict: 'unknown' });
});

test('a read-back keeps what the cache holds where the kernel agrees (no second copy lives on), and the kernel answer where it differs', async () => {
  const ipvs = new FakeIpvsClient();
  const dp = fakeDataPlane({ ipvs });
  const s1 = intent('a/one', '203.0.113.1', [ep('10.0.0.1'), ep('10.0.0.2')]);
  const s2 = intent('a/two', '203.0.113.2', [ep('10.0.0.3')]);
  const state = desired([s1, s2]);
  assert.deepEqual((await dp.apply(state, true)).failures, []);
  // The cache holds the desired state's own real servers, not copies.
  const cached = new Map(dp.table().map((s) => [serviceId(s.service.key), s]));
  for (const v of state.virtualServices)
    for (const d of cached.get(serviceId(v.spec.service.key))!.destinations)
      assert.ok(v.spec.destinations.includes(d), 'a copy of a desired real server');
  await ipvs.updateDestination(
    { kind: 'address', family: 'ipv4', protocol: 'tcp', address: '203.0.113.2', port: 80 },
    {
      family: 'ipv4',
      address: '10.0.0.3',
      port: 8080,
      forward: 'nat',
      weight: 7,
      upperThreshold: 0,
      lowerThreshold: 0,
    },
  );
  const read = new Map((await dp.readBack()).table.map((s) => [serviceId(s.service.key), s]));
  assert.equal(read.get(id('203.0.113.1')), cached.get(id('203.0.113.1')));
  const two = read.get(id('203.0.113.2'))!;
  assert.notEqual(two, cached.get(id('203.0.113.2')));
  assert.equal(two.destinations[0]!.weight, 7);
});
