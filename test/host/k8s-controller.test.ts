// The Kubernetes side against a fake API server at the HTTP level, through the real
// @kubernetes/client-node: informers (list, watch, 410 relist, the server going away),
// leader election over Leases, allocation with status writes and Events.
import assert from 'node:assert/strict';
import { after, afterEach, describe, test } from 'node:test';
import { parseAgentConfig } from '../../lb-agent/src/config/agent-config.ts';
import { KubeClient } from '../../lb-agent/src/k8s/client.ts';
import { KubernetesController, type KubernetesSync } from '../../lb-agent/src/k8s/controller.ts';
import { systemClock } from '../../lb-agent/src/util/clock.ts';
import { FakeKubeApi, type Obj } from '../harness/fake-kube-api.ts';
import { waitFor } from '../harness/netns.ts';

const CLASS = 'portlb.io/portlb';

function config(addresses = ['203.0.113.0/28']) {
  return parseAgentConfig(
    {
      pools: [{ name: 'default', addresses }],
      kubernetes: {
        leaderElection: { leaseDurationSeconds: 3, renewDeadlineSeconds: 2, retryPeriodSeconds: 1 },
      },
    },
    'test',
  );
}

let created = 0;
const service = (name: string, extra: Obj = {}): Obj => ({
  // Distinct creation times: the older Service wins conflicts, so order must be explicit.
  metadata: {
    name,
    namespace: 'default',
    creationTimestamp: new Date(Date.UTC(2026, 0, 1, 0, 0, created++)).toISOString(),
    ...(extra.metadata ?? {}),
  },
  spec: {
    type: 'LoadBalancer',
    loadBalancerClass: CLASS,
    ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
    ...(extra.spec ?? {}),
  },
  status: {},
});
const slice = (svc: string, endpoints: Obj[], name = `${svc}-1`): Obj => ({
  metadata: { name, namespace: 'default', labels: { 'kubernetes.io/service-name': svc } },
  addressType: 'IPv4',
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  endpoints,
});
const ep = (ip: string, conditions: Obj = { ready: true }) => ({
  addresses: [ip],
  conditions,
  nodeName: 'edge-1',
});
const node = (name: string): Obj => ({
  metadata: { name },
  status: { conditions: [{ type: 'Ready', status: 'True' }] },
});

const ingressOf = (api: FakeKubeApi, name: string) =>
  (api.get('services', 'default', name)?.status?.loadBalancer?.ingress ?? []) as {
    ip: string;
    ipMode?: string;
  }[];
const eventsOf = (api: FakeKubeApi, name: string) =>
  api
    .list('events', 'default')
    .filter((e) => e.involvedObject?.name === name)
    .map((e) => `${e.type} ${e.reason}`);
const backends = (s: KubernetesSync) =>
  s.desired.virtualServices.flatMap((v) => v.spec.destinations.map((d) => `${d.address}:${d.port}`)).sort();

describe('Kubernetes controller against a fake API server', () => {
  const controllers: KubernetesController[] = [];
  const apis: FakeKubeApi[] = [];
  afterEach(async () => {
    await Promise.all(controllers.splice(0).map((c) => c.stop()));
    await Promise.all(apis.splice(0).map((a) => a.stop()));
  });
  after(() => {});

  async function setup(
    opts: {
      goneAs?: 'status' | 'event';
      dropIpMode?: boolean;
      pools?: string[];
      identity?: string;
      api?: FakeKubeApi;
      apiDeadlineMs?: number;
    } = {},
  ) {
    let api = opts.api;
    if (!api) {
      api = new FakeKubeApi({
        goneAs: opts.goneAs,
        dropIpMode: opts.dropIpMode,
        unsolicitedBookmarksMs: 200,
      });
      await api.start();
      apis.push(api);
      api.create('nodes', node('edge-1'));
    }
    let changes = 0;
    const dropped: string[] = [];
    const ctl = new KubernetesController({
      onIpModeDropped: (service) => dropped.push(service),
      client: new KubeClient(api.connection()),
      config: config(opts.pools),
      nodeName: 'edge-1',
      identity: opts.identity,
      clock: systemClock,
      onChange: () => changes++,
      informerBackoffMs: { initial: 50, max: 400 },
      apiDeadlineMs: opts.apiDeadlineMs,
    });
    controllers.push(ctl);
    ctl.start();
    await waitFor('informers synced', () => ctl.synced());
    return { api, ctl, changes: () => changes, dropped };
  }

  const syncUntil = (
    ctl: KubernetesController,
    what: string,
    pred: (s: KubernetesSync) => boolean,
    timeoutMs = 10_000,
  ) =>
    waitFor(
      what,
      async () => {
        const s = await ctl.sync();
        return pred(s) ? s : undefined;
      },
      { timeoutMs, intervalMs: 100 },
    );

  test('add: the leader assigns an address (ipMode Proxy), every replica programs the backends', async () => {
    const { api, ctl } = await setup();
    await waitFor('leader', () => ctl.isLeader());
    api.create('services', service('web'));
    api.create('endpointslices', slice('web', [ep('10.0.0.1'), ep('10.0.0.2')]));
    const s = await syncUntil(ctl, 'programmed', (x) => backends(x).length === 2);
    assert.deepEqual(ingressOf(api, 'web'), [{ ip: '203.0.113.1', ipMode: 'Proxy' }]);
    assert.deepEqual(backends(s), ['10.0.0.1:8080', '10.0.0.2:8080']);
    assert.equal(s.desired.vips[0]?.announce, true);
    assert.ok(eventsOf(api, 'web').includes('Normal AddressAssigned'));
    // Converged: another pass writes no status.
    await ctl.lane.idle();
    const writes = ctl.writer.statusWrites;
    ctl.sync();
    ctl.sync();
    await ctl.lane.idle();
    assert.equal(ctl.writer.statusWrites, writes);
  });

  test('update: endpoints turning terminating, then gone; delete: status and desired state follow', async () => {
    const { api, ctl } = await setup();
    await waitFor('leader', () => ctl.isLeader());
    api.create('services', service('web'));
    api.create('endpointslices', slice('web', [ep('10.0.0.1'), ep('10.0.0.2')]));
    await syncUntil(ctl, 'two backends', (x) => backends(x).length === 2);
    api.mutate('endpointslices', 'default', 'web-1', (o) => {
      o.endpoints = [
        ep('10.0.0.1', { ready: false, serving: true, terminating: true }),
        ep('10.0.0.2', { ready: false, serving: true, terminating: true }),
      ];
    });
    const draining = await syncUntil(
      ctl,
      'serving-terminating fallback',
      (x) => backends(x).length === 2 && x.desired.vips[0]?.announce === true,
    );
    assert.ok(draining);
    api.mutate('endpointslices', 'default', 'web-1', (o) => {
      o.endpoints = [ep('10.0.0.3')];
    });
    await syncUntil(ctl, 'ready one preferred', (x) => backends(x).join() === '10.0.0.3:8080');
    api.mutate('endpointslices', 'default', 'web-1', (o) => {
      o.endpoints = [ep('10.0.0.3', { ready: false, serving: false })];
    });
    const none = await syncUntil(ctl, 'no backends', (x) => backends(x).length === 0);
    assert.equal(none.desired.vips[0]?.withheld, 'NoReadyBackends');
    // Type change: no longer ours -> the leader clears the status it wrote.
    api.mutate('services', 'default', 'web', (o) => {
      o.spec.type = 'ClusterIP';
    });
    await syncUntil(ctl, 'status cleared', () => ingressOf(api, 'web').length === 0);
    api.remove('services', 'default', 'web');
    const gone = await syncUntil(ctl, 'nothing desired', (x) => x.desired.virtualServices.length === 0);
    assert.deepEqual(gone.desired.vips, []);
  });

  test('an EndpointSlice change is computed for its Service alone (a delta), with the same result as the whole computation', async () => {
    const { api, ctl, changes } = await setup();
    await waitFor('leader', () => ctl.isLeader());
    api.create('services', service('web'));
    api.create('services', service('api'));
    api.create('services', service('internal', { spec: { type: 'ClusterIP' } }));
    api.create('endpointslices', slice('web', [ep('10.0.0.1'), ep('10.0.0.2')]));
    api.create('endpointslices', slice('api', [ep('10.0.1.1')]));
    api.create('endpointslices', slice('internal', [ep('10.0.2.1')]));
    await syncUntil(
      ctl,
      'both allocated and programmed',
      (x) => backends(x).length === 3 && x.desired.vips.length === 2,
    );
    await ctl.lane.idle();
    // The status writes come back as Service events: wait until they are in, then absorb them.
    await waitFor('status seen', () =>
      ctl.services.list().every((s) => s.type !== 'LoadBalancer' || s.ingress.length > 0),
    );
    const before = ctl.sync().desired;
    assert.equal(ctl.sync().desired.delta?.base, before, 'nothing changed: a delta from the state before');

    let seen = changes();
    api.mutate('endpointslices', 'default', 'web-1', (o) => {
      o.endpoints = [ep('10.0.0.1'), ep('10.0.0.3')];
    });
    await waitFor('slice event', () => changes() > seen);
    const after = ctl.sync().desired;
    assert.ok(after.delta, 'a delta');
    assert.deepEqual(
      after.delta.services.map((at) => after.virtualServices[at]!.owner),
      ['default/web'],
    );
    assert.deepEqual(backends({ desired: after, node: { name: '', excluded: false, ready: true } }), [
      '10.0.0.1:8080',
      '10.0.0.3:8080',
      '10.0.1.1:8080',
    ]);

    // Another controller computes everything from scratch: the same desired state.
    const fresh = await setup({ api });
    const whole = fresh.ctl.sync().desired;
    assert.equal(whole.delta, undefined);
    const { delta: _, ...patched } = after;
    assert.deepEqual(patched, whole);

    // A slice of a Service that is not ours: nothing to compute.
    seen = changes();
    api.mutate('endpointslices', 'default', 'internal-1', (o) => {
      o.endpoints = [ep('10.0.2.2')];
    });
    await waitFor('slice event', () => changes() > seen);
    const quiet = ctl.sync().desired;
    assert.deepEqual(quiet.delta?.services, []);
    assert.equal(quiet.virtualServices, after.virtualServices);

    // The Service itself changed: the whole computation.
    seen = changes();
    api.mutate('services', 'default', 'web', (o) => {
      o.metadata.annotations = { 'portlb.io/scheduler': 'rr' };
    });
    await waitFor('service event', () => changes() > seen);
    const whole2 = ctl.sync().desired;
    assert.equal(whole2.delta, undefined);
    assert.equal(whole2.virtualServices.find((v) => v.owner === 'default/web')?.spec.service.scheduler, 'rr');
  });

  for (const goneAs of ['status', 'event'] as const) {
    test(`410 Gone (${goneAs}): the informer relists and sees what changed meanwhile`, async () => {
      const { api, ctl } = await setup({ goneAs });
      api.create('services', service('a', { metadata: {} }));
      api.create('endpointslices', slice('a', [ep('10.0.0.1')]));
      await syncUntil(ctl, 'a allocated', () => ingressOf(api, 'a').length === 1);
      const lists = api.requests.get('GET /api/v1/services') ?? 0;
      // History is compacted and every watch is cut: resuming from the old version must fail with 410.
      api.compact();
      if (goneAs === 'event') api.expireWatches();
      else api.endWatches();
      api.create('services', service('b'));
      api.create('endpointslices', slice('b', [ep('10.0.0.9')]));
      const s = await syncUntil(ctl, 'b seen after relist', (x) => backends(x).includes('10.0.0.9:8080'));
      assert.ok((api.requests.get('GET /api/v1/services') ?? 0) > lists, 'a new list was made');
      assert.ok(backends(s).includes('10.0.0.1:8080'), 'a kept');
    });
  }

  test('the API server goes away: the last state is kept; it comes back: the agent recovers', async () => {
    const { api, ctl } = await setup();
    api.create('services', service('web'));
    api.create('endpointslices', slice('web', [ep('10.0.0.1')]));
    const before = await syncUntil(ctl, 'programmed', (x) => backends(x).length === 1);
    await api.stop();
    await waitFor('disconnect noticed', () => !ctl.connected());
    const during = await ctl.sync();
    assert.deepEqual(backends(during), backends(before), 'the last known state, not an empty one');
    // Changes while the agent cannot see them...
    api.mutate('endpointslices', 'default', 'web-1', (o) => {
      o.endpoints = [ep('10.0.0.1'), ep('10.0.0.5')];
    });
    await api.start();
    const after = await syncUntil(ctl, 'recovered', (x) => backends(x).length === 2, 15_000);
    assert.deepEqual(backends(after), ['10.0.0.1:8080', '10.0.0.5:8080']);
    await waitFor('connected again', () => ctl.connected());
    assert.ok(ctl.services.restarts > 0);
  });

  test('two replicas race for the Lease: one writer at a time, and a handover when it leaves', async () => {
    const first = await setup({ identity: 'replica-a' });
    const second = await setup({ identity: 'replica-b', api: first.api });
    await waitFor('a leader', () => first.ctl.isLeader() || second.ctl.isLeader());
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal([first.ctl, second.ctl].filter((c) => c.isLeader()).length, 1, 'exactly one leader');
    const [leader, follower] = first.ctl.isLeader() ? [first.ctl, second.ctl] : [second.ctl, first.ctl];
    first.api.create('services', service('web'));
    await waitFor('the leader allocates', async () => {
      await leader.sync();
      return ingressOf(first.api, 'web').length === 1;
    });
    await syncUntil(follower, 'the follower sees the address', (x) => x.desired.vips.length === 1);
    assert.equal(follower.writer.statusWrites, 0, 'the follower never writes');
    const lease = first.api.get('leases', 'portlb-system', 'portlb-controller');
    assert.equal(lease?.spec.holderIdentity, first.ctl.isLeader() ? 'replica-a' : 'replica-b');
    await leader.stop();
    await waitFor('handover', () => follower.isLeader(), { timeoutMs: 5000 });
    first.api.create('services', service('api'));
    await syncUntil(follower, 'new leader allocates', () => ingressOf(first.api, 'api').length === 1);
    assert.ok(follower.writer.statusWrites > 0);
  });

  test('VIP conflict and an exhausted pool are reported as Events, never silently', async () => {
    const { api, ctl } = await setup({ pools: ['203.0.113.0/30'] });
    await waitFor('leader', () => ctl.isLeader());
    api.create(
      'services',
      service('old', { metadata: { annotations: { 'portlb.io/load-balancer-ips': '203.0.113.2' } } }),
    );
    await syncUntil(ctl, 'old has it', () => ingressOf(api, 'old').length === 1);
    api.create(
      'services',
      service('young', { metadata: { annotations: { 'portlb.io/load-balancer-ips': '203.0.113.2' } } }),
    );
    api.create('services', service('next'));
    api.create('services', service('late'));
    await syncUntil(
      ctl,
      'events',
      () =>
        eventsOf(api, 'young').includes('Warning AddressConflict') &&
        eventsOf(api, 'late').includes('Warning PoolExhausted'),
    );
    assert.deepEqual(ingressOf(api, 'young'), []);
    assert.deepEqual(ingressOf(api, 'next'), [{ ip: '203.0.113.1', ipMode: 'Proxy' }]);
    assert.deepEqual(ingressOf(api, 'late'), []);
    const msg = api.list('events', 'default').find((e) => e.reason === 'PoolExhausted')?.message;
    assert.match(msg, /no free ipv4 address in pool default/);
  });

  test('the API server hangs on the leader: desired state never waits for it, writes time out, the leader steps down at its renew deadline', async () => {
    const { api, ctl } = await setup({ apiDeadlineMs: 500 });
    await waitFor('leader', () => ctl.isLeader());
    api.create('services', service('web'));
    api.create('endpointslices', slice('web', [ep('10.0.0.1')]));
    await syncUntil(ctl, 'programmed', (x) => backends(x).length === 1);
    api.hang = true;
    // An endpoint change still arrives (the open watch streams it) and desired state follows
    // at once, while the leader's writes are stuck.
    api.create('services', service('stuck'));
    api.mutate('endpointslices', 'default', 'web-1', (o) => {
      o.endpoints = [ep('10.0.0.1'), ep('10.0.0.2')];
    });
    const t0 = performance.now();
    const s = await syncUntil(ctl, 'the change', (x) => backends(x).length === 2);
    const ms = performance.now() - t0;
    const started = performance.now();
    for (let i = 0; i < 20; i++) ctl.sync();
    const syncMs = (performance.now() - started) / 20;
    assert.ok(s);
    console.log(
      `# measured: API server hung: endpoint change -> desired state ${ms.toFixed(0)} ms; one sync ${syncMs.toFixed(2)} ms`,
    );
    assert.ok(syncMs < 100, 'sync never waits for the API server');
    await waitFor('writes time out in the lane', () => ctl.lane.stats.timedOut > 0, { timeoutMs: 5000 });
    // renewDeadline 2 s: every Lease call is aborted at it, and leadership ends.
    await waitFor('stepped down', () => !ctl.isLeader(), { timeoutMs: 5000 });
    api.hang = false;
    await waitFor('leader again', () => ctl.isLeader(), { timeoutMs: 10_000 });
    await syncUntil(
      ctl,
      'the stuck Service allocated after recovery',
      () => ingressOf(api, 'stuck').length === 1,
    );
  });

  test('an API server that drops ipMode: said once, and status is not rewritten in a loop', async () => {
    const { api, ctl, dropped } = await setup({ dropIpMode: true });
    await waitFor('leader', () => ctl.isLeader());
    api.create('services', service('web'));
    await syncUntil(ctl, 'allocated', () => ingressOf(api, 'web').length === 1);
    assert.deepEqual(
      ingressOf(api, 'web'),
      [{ ip: '203.0.113.1' }],
      'the server kept the address, not ipMode',
    );
    await ctl.lane.idle();
    await waitFor('noticed', () => dropped.length === 1);
    const writes = ctl.writer.statusWrites;
    for (let i = 0; i < 10; i++) {
      ctl.sync();
      await new Promise((r) => setTimeout(r, 20));
    }
    api.create('services', service('other'));
    await syncUntil(ctl, 'a real change is still written', () => ingressOf(api, 'other').length === 1);
    await ctl.lane.idle();
    assert.equal(ctl.writer.statusWrites, writes + 1, 'only the new Service was written, no ipMode loop');
    assert.deepEqual(dropped, ['default/web']);
  });
});
