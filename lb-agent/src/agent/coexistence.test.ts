// Another IPVS user deleting portlb's services (kube-proxy in IPVS mode without
// --ipvs-exclude-cidrs): the read-back finds them missing, the data plane puts them back,
// and a pattern (more than one read-back within the window) is reported.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { computeDesired } from '../core/desired.ts';
import { ep, intent } from '../core/fixtures.ts';
import { FakeIpvsClient } from '../ipvs/fake-client.ts';
import { ManualClock } from '../util/clock.ts';
import { VanishDetector } from './coexistence.ts';
import { fakeDataPlane, testOwns as owns } from './fixtures.ts';

const web = intent('default/web', '203.0.113.10', [ep('10.0.0.1')]);

test('a service deleted behind the agent: found missing at the read-back, and put back', async () => {
  const ipvs = new FakeIpvsClient();
  const clock = new ManualClock();
  const dp = fakeDataPlane({ ipvs, drainTimeoutMs: 0, clock });
  const desired = computeDesired({ services: [web] }, { name: 'n', excluded: false, ready: true }, { owns });
  assert.deepEqual((await dp.apply(desired, true)).vanished, []);
  const [svc] = await ipvs.getTable();
  await ipvs.deleteService(svc!.service.key);
  const report = await dp.apply(desired, true);
  assert.deepEqual(report.vanished, ['tcp:203.0.113.10:80']);
  assert.equal((await ipvs.getTable()).length, 1, 'put back');
  assert.deepEqual((await dp.apply(desired, true)).vanished, [], 'nothing missing since');
});

test('one disappearance is a person with ipvsadm; a second within the window is a pattern', async () => {
  const clock = new ManualClock();
  const d = new VanishDetector(clock, { windowMs: 60_000 });
  assert.equal(d.observe(['tcp:203.0.113.10:80']), undefined);
  assert.equal(d.observe([]), undefined);
  await clock.advance(30_000);
  assert.deepEqual(d.observe(['tcp:203.0.113.11:80']), {
    count: 2,
    passes: 2,
    example: 'tcp:203.0.113.11:80',
  });
  assert.equal(d.quiet(), false);
  await clock.advance(61_000);
  assert.equal(d.observe([]), undefined, 'quiet for a window: no longer suspected');
  assert.equal(d.quiet(), true);
});
