import assert from 'node:assert/strict';
import { test } from 'node:test';
import { computeDesired } from '../core/desired.ts';
import { ep, intent } from '../core/fixtures.ts';
import type { ServiceIntent } from '../core/types.ts';
import { FakeIpvsClient } from '../ipvs/fake-client.ts';
import { serviceId } from '../ipvs/types.ts';
import { fakeDataPlane, testOwns as owns } from './fixtures.ts';

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
