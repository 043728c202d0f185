// Address pools (PortlbAddressPool) and BGP peers (PortlbBgpPeer) as objects, changed
// while the agents run (fake API server, the real client, fake kernel and speaker): a
// new pool gives a Service its address and a new peer a session without a restart; a
// bad change is refused with the Accepted condition and an Event while the last valid
// spec keeps serving; a fix renumbers as the allocator does, and the data plane removes
// what it programmed at the old address.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Agent } from '../../lb-agent/src/agent/agent.ts';
import { AgentMetrics } from '../../lb-agent/src/agent/metrics.ts';
import { FakeBgpSpeaker } from '../../lb-agent/src/bgp/fake-speaker.ts';
import { FakeIpvsClient } from '../../lb-agent/src/ipvs/fake-client.ts';
import { helmTemplate } from '../../scripts/render-manifests.ts';
import { FakeKubeApi, type Obj } from '../harness/fake-kube-api.ts';
import { createNode, createService, startKubernetesAgent } from '../harness/kubernetes-agent.ts';
import { waitFor } from '../harness/netns.ts';
import { ungranted } from '../harness/rbac.ts';

describe('address pools as objects, applied live', () => {
  const api = new FakeKubeApi();
  const ipvs = new FakeIpvsClient();
  const speaker = new FakeBgpSpeaker();
  let agent: Agent;
  // The source's own metrics (the agent passes it its registry; a test-built source gets this one).
  const sourceMetrics = new AgentMetrics();
  const pool = () => api.get('portlbaddresspools', undefined, 'public');
  const accepted = (o: Obj | undefined) => o?.status?.conditions?.find((c: Obj) => c.type === 'Accepted');
  const ingress = () =>
    api.get('services', 'shop', 'web')?.status?.loadBalancer?.ingress?.map((i: Obj) => i.ip);
  const vips = async () =>
    (await ipvs.getTable())
      .map((s) => (s.service.key.kind === 'address' ? s.service.key.address : '?'))
      .sort();
  const poolEvents = (reason: string) =>
    api
      .list('events', 'default')
      .filter((e) => e.involvedObject?.kind === 'PortlbAddressPool' && e.reason === reason);
  const setSpec = (spec: Obj) =>
    api.mutate('portlbaddresspools', undefined, 'public', (o) => {
      o.spec = spec;
    });

  before(async () => {
    await api.start();
    createNode(api, 'edge-1');
    ({ agent } = await startKubernetesAgent(api, { node: 'edge-1', ipvs, speaker, metrics: sourceMetrics }));
  });
  after(async () => {
    await agent.shutdown({ graceful: false });
    await api.stop();
  });

  test('a new pool object: accepted (its condition says so), and a Service that names it gets an address from it', async () => {
    api.create('portlbaddresspools', {
      metadata: { name: 'public' },
      spec: { addresses: ['198.51.100.0/29'], autoAssign: false },
    });
    await waitFor('Accepted True', () => accepted(pool())?.status === 'True', { timeoutMs: 15_000 });
    assert.deepEqual(
      [accepted(pool()).reason, accepted(pool()).observedGeneration, accepted(pool()).message],
      ['Accepted', 1, 'in force: 198.51.100.0/29'],
    );
    createService(api, 'web', {
      port: 80,
      annotations: { 'portlb.io/address-pool': 'public' },
      endpoint: { address: '10.1.0.5', port: 8080 },
    });
    // The first usable address of 198.51.100.0/29 (the allocator skips the network address).
    await waitFor('announced from the new pool', () => speaker.announced().has('198.51.100.1/32'), {
      timeoutMs: 15_000,
    });
    assert.deepEqual(ingress(), ['198.51.100.1']);
    assert.deepEqual(await vips(), ['198.51.100.1']);
  });

  test('a bad change is refused (condition, Event, metric); the last valid spec keeps serving', async () => {
    setSpec({ addresses: ['198.51.100.0/33'], autoAssign: false });
    await waitFor('Accepted False', () => accepted(pool())?.status === 'False', { timeoutMs: 15_000 });
    const c = accepted(pool());
    assert.equal(c.reason, 'Invalid');
    assert.equal(c.observedGeneration, 2);
    assert.match(
      c.message,
      /^spec\.addresses\[0\]: .*198\.51\.100\.0\/33.*: the last valid spec \(generation 1\) stays in force$/,
    );
    await waitFor('PoolRefused Event', () => poolEvents('PoolRefused').length === 1);
    const metrics = await sourceMetrics.registry.metrics();
    assert.ok(
      metrics.includes('portlb_config_objects{kind="PortlbAddressPool",state="refused"} 1'),
      'the refusal is counted',
    );
    // Nothing moved: the address, the kernel, the announcement.
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(ingress(), ['198.51.100.1']);
    assert.deepEqual(await vips(), ['198.51.100.1']);
    assert.ok(speaker.announced().has('198.51.100.1/32'));
  });

  test('a pool that overlaps another is refused as a conflict; the first one stays', async () => {
    api.create('portlbaddresspools', {
      metadata: { name: 'clash' },
      spec: { addresses: ['203.0.113.0/30'] },
    });
    await waitFor(
      'clash refused',
      () => accepted(api.get('portlbaddresspools', undefined, 'clash'))?.status === 'False',
      { timeoutMs: 15_000 },
    );
    const c = accepted(api.get('portlbaddresspools', undefined, 'clash'));
    assert.equal(c.reason, 'Conflict');
    assert.match(c.message, /"203\.0\.113\.0\/30" overlaps "203\.0\.113\.0\/28" of pool default/);
    api.remove('portlbaddresspools', undefined, 'clash');
  });

  test('fixed to other addresses: accepted again, the Service renumbered, the old address removed from the kernel', async () => {
    setSpec({ addresses: ['198.51.100.8/29'], autoAssign: false });
    await waitFor(
      'renumbered and programmed',
      async () => {
        const t = await vips();
        return ingress()?.[0] === '198.51.100.9' && t.length === 1 && t[0] === '198.51.100.9';
      },
      { timeoutMs: 15_000 },
    );
    assert.equal(accepted(pool()).status, 'True');
    assert.equal(accepted(pool()).observedGeneration, 3);
    await waitFor('PoolAccepted Event', () => poolEvents('PoolAccepted').length === 1);
    await waitFor('withdrawn at the old address', () => !speaker.announced().has('198.51.100.1/32'));
    assert.ok(speaker.announced().has('198.51.100.9/32'));
  });

  test('every request the agent made is granted by the chart’s RBAC', () => {
    assert.ok(api.verbs.has('portlb.io|portlbaddresspools/status|patch'));
    assert.ok(api.verbs.has('portlb.io|portlbaddresspools|watch'));
    assert.deepEqual(ungranted(api.verbs, helmTemplate()), []);
  });
});

for (const [kind, plural, option] of [
  ['PortlbAddressPool', 'portlbaddresspools', 'poolObjects'],
  ['PortlbBgpPeer', 'portlbbgppeers', 'peerObjects'],
] as const) {
  describe(`${kind} objects: the CRD not installed`, () => {
    const api = new FakeKubeApi({ missing: [plural] });
    let agent: Agent;
    let url: string;
    before(async () => {
      await api.start();
      createNode(api, 'edge-1');
      createService(api, 'web', { port: 80, endpoint: { address: '10.1.0.5', port: 8080 } });
      ({ agent, url } = await startKubernetesAgent(api, { node: 'edge-1' }));
    });
    after(async () => {
      await agent.shutdown({ graceful: false });
      await api.stop();
    });

    test('the agent stays unready and says what to do; nothing is allocated or programmed meanwhile', async () => {
      await waitFor('the failed list', () => [...api.requests.keys()].some((k) => k.includes(plural)));
      await new Promise((r) => setTimeout(r, 1000));
      const ready = await fetch(`${url}/readyz`);
      assert.equal(ready.status, 503);
      assert.match(await ready.text(), /kubernetes not synced/);
      const status = (await (await fetch(`${url}/status`)).json()) as Obj;
      assert.match(status.source.error, /404 page not found/);
      assert.ok(
        status.source.error.includes(
          `the ${kind} CRD is not installed: apply the chart, or set kubernetes.${option}: false`,
        ),
        status.source.error,
      );
      assert.equal(
        api.get('services', 'shop', 'web')?.status?.loadBalancer?.ingress,
        undefined,
        'no allocation',
      );
      assert.deepEqual(status.vips, []);
    });
  });
}

describe('BGP peers as objects, applied live', () => {
  const api = new FakeKubeApi();
  /** Every peer list the agent gave its speaker. */
  class RecordingSpeaker extends FakeBgpSpeaker {
    readonly sets: string[][] = [];
    override async setPeers(peers: Parameters<FakeBgpSpeaker['setPeers']>[0]): Promise<void> {
      this.sets.push(peers.map((p) => p.address));
      return super.setPeers(peers);
    }
  }
  const speaker = new RecordingSpeaker();
  const agents: Agent[] = [];
  const peer = () => api.get('portlbbgppeers', undefined, 'core-b');
  const accepted = (o: Obj | undefined) => o?.status?.conditions?.find((c: Obj) => c.type === 'Accepted');
  const peers = async (s: FakeBgpSpeaker = speaker) =>
    (await s.listPeers()).map((p) => `${p.address} AS${p.asn}`).sort();
  const setSpec = (spec: Obj) =>
    api.mutate('portlbbgppeers', undefined, 'core-b', (o) => {
      o.spec = spec;
    });

  before(async () => {
    await api.start();
    createNode(api, 'edge-1');
    createNode(api, 'edge-2');
    agents.push((await startKubernetesAgent(api, { node: 'edge-1', speaker })).agent);
  });
  after(async () => {
    for (const a of agents) await a.shutdown({ graceful: false });
    await api.stop();
  });

  test('a new peer object: accepted, and every agent peers with it, no restart', async () => {
    await waitFor('the file’s peer set', async () => (await peers()).join() === '192.0.2.1 AS65000');
    api.create('portlbbgppeers', {
      metadata: { name: 'core-b' },
      spec: { address: '192.0.2.2', asn: 65000 },
    });
    await waitFor(
      'peering with it',
      async () => (await peers()).join() === '192.0.2.1 AS65000,192.0.2.2 AS65000',
      {
        timeoutMs: 15_000,
      },
    );
    await waitFor('Accepted True', () => accepted(peer())?.status === 'True', { timeoutMs: 15_000 });
    assert.equal(accepted(peer()).message, 'in force: 192.0.2.2 AS65000');
  });

  test('an agent that starts while peer objects exist never sets the file’s peers alone (a session would reset)', async () => {
    const late = new RecordingSpeaker();
    agents.push((await startKubernetesAgent(api, { node: 'edge-2', speaker: late })).agent);
    await waitFor('peering with both', async () => (await peers(late)).length === 2, { timeoutMs: 15_000 });
    assert.deepEqual(late.sets, [['192.0.2.1', '192.0.2.2']]);
  });

  test('a bad change is refused with its reason; the session keeps its last valid spec', async () => {
    setSpec({ address: '192.0.2.2', asn: 65000, holdTime: 9, keepaliveInterval: 20 });
    await waitFor('Accepted False', () => accepted(peer())?.status === 'False', { timeoutMs: 15_000 });
    assert.match(
      accepted(peer()).message,
      /^spec\.keepaliveInterval: must be below holdTime 9 \(got 20\): the last valid spec \(generation 1\) stays in force$/,
    );
    await waitFor('PeerRefused Event', () =>
      api
        .list('events', 'default')
        .some((e) => e.involvedObject?.kind === 'PortlbBgpPeer' && e.reason === 'PeerRefused'),
    );
    assert.deepEqual(await peers(), ['192.0.2.1 AS65000', '192.0.2.2 AS65000']);
  });

  test('changed to another router, then deleted: the speaker follows each time', async () => {
    setSpec({ address: '192.0.2.3', asn: 65010 });
    await waitFor('moved', async () => (await peers()).join() === '192.0.2.1 AS65000,192.0.2.3 AS65010', {
      timeoutMs: 15_000,
    });
    api.remove('portlbbgppeers', undefined, 'core-b');
    await waitFor('gone', async () => (await peers()).join() === '192.0.2.1 AS65000', { timeoutMs: 15_000 });
  });

  test('every request the agents made is granted by the chart’s RBAC', () => {
    assert.ok(api.verbs.has('portlb.io|portlbbgppeers/status|patch'));
    assert.deepEqual(ungranted(api.verbs, helmTemplate()), []);
  });
});
