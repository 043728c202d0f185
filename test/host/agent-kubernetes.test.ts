// The agent in Kubernetes mode, whole chain, with the real client library against the
// fake API server and fakes at the kernel and speaker boundaries: a Service appears ->
// the leader writes its address (ipMode Proxy) -> IPVS is programmed -> the VIP is
// announced -> an Event says so; /readyz, /status and /metrics reflect it.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import type { Agent } from '../../lb-agent/src/agent/agent.ts';
import { FakeAddressManager } from '../../lb-agent/src/agent/vips.ts';
import { FakeBgpSpeaker } from '../../lb-agent/src/bgp/fake-speaker.ts';
import { FakeIpvsClient } from '../../lb-agent/src/ipvs/fake-client.ts';
import { FaultyIpvsClient, MemoryFaults } from '../../lb-agent/src/ipvs/faulty-client.ts';
import { helmTemplate } from '../../scripts/render-manifests.ts';
import { FakeKubeApi } from '../harness/fake-kube-api.ts';
import {
  createNode,
  createService as createServiceIn,
  startKubernetesAgent,
} from '../harness/kubernetes-agent.ts';
import { waitFor } from '../harness/netns.ts';
import { ungranted } from '../harness/rbac.ts';

describe('agent in Kubernetes mode (fake API server, fake kernel and speaker)', () => {
  const api = new FakeKubeApi();
  const ipvs = new FakeIpvsClient();
  const faults = new MemoryFaults();
  const addresses = new FakeAddressManager();
  const speaker = new FakeBgpSpeaker();
  const logs: { level: number; msg: string; service?: string; reason?: string }[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => logs.push(JSON.parse(line)) });
  let agent: Agent;
  let url: string;
  const metricsText = async () => (await fetch(`${url}/metrics`)).text();
  const createService = (name: string, o: Parameters<typeof createServiceIn>[2]) =>
    createServiceIn(api, name, o);

  before(async () => {
    await api.start();
    createNode(api, 'edge-1');
    ({ agent, url } = await startKubernetesAgent(api, {
      node: 'edge-1',
      ipvs: new FaultyIpvsClient(ipvs, faults),
      addresses,
      speaker,
      logger,
    }));
  });
  after(async () => {
    await agent.shutdown({ graceful: false });
    await api.stop();
  });

  test('a Service becomes an address, an IPVS service, an announcement and an Event', async () => {
    createService('web', { port: 80, endpoint: { address: '10.1.0.5', port: 8080 } });
    await waitFor('announced', () => speaker.announced().has('203.0.113.1/32'), { timeoutMs: 15_000 });
    assert.deepEqual(api.get('services', 'shop', 'web')?.status?.loadBalancer?.ingress, [
      { ip: '203.0.113.1', ipMode: 'Proxy' },
    ]);
    const [svc] = await ipvs.getTable();
    assert.equal(svc?.service.key.kind === 'address' && svc.service.key.address, '203.0.113.1');
    assert.deepEqual(
      svc?.destinations.map((d) => `${d.address}:${d.port}`),
      ['10.1.0.5:8080'],
    );
    assert.deepEqual([...addresses.addresses], ['203.0.113.1']);
    await waitFor('Announced event', () =>
      api
        .list('events', 'shop')
        .some((e) => e.reason === 'Announced' && /node edge-1 announces 203\.0\.113\.1/.test(e.message)),
    );
  });

  test('/readyz, /status and /metrics tell what the agent does', async () => {
    await waitFor('ready', async () => (await fetch(`${url}/readyz`)).status === 200);
    const status = (await (await fetch(`${url}/status`)).json()) as Record<string, any>;
    assert.equal(status.leader, true);
    assert.deepEqual(status.vips, [
      { address: '203.0.113.1', owners: ['shop/web'], announced: true, withheld: null, kept: false },
    ]);
    assert.equal(status.services[0].owner, 'shop/web');
    const metrics = await metricsText();
    for (const name of [
      'portlb_sync_duration_seconds_bucket',
      'portlb_announced_vips 1',
      'portlb_ipvs_services 1',
      'portlb_leader 1',
      'portlb_ipvs_service_connections_total{namespace="shop",service="web",vip="203.0.113.1",port="80",protocol="tcp"}',
      'portlb_build_info{version="0.1.0",',
    ]) {
      assert.ok(metrics.includes(name), `metrics have ${name}`);
    }
  });

  test('the kernel cannot be read for /status: the document says unknown (not empty) and why; the error is counted', async () => {
    faults.faults = { statsRead: 1 };
    const res = await fetch(`${url}/status`);
    assert.equal(res.status, 200);
    const status = (await res.json()) as Record<string, any>;
    assert.equal(status.services, null, 'unknown, not an empty table');
    assert.match(status.kernelError, /injected fault/);
    assert.equal(status.vips[0].announced, true, 'the last pass still speaks');
    assert.match(await metricsText(), /portlb_errors_total\{code="KERNEL_ERROR",step="status"\} 1/);
    const again = (await (await fetch(`${url}/status`)).json()) as Record<string, any>;
    assert.equal(again.services.length, 1, 'read again on the next request');
  });

  test('a bad Service is skipped with a reason (Event, metric); the others keep working', async () => {
    createService('typo', { port: 81, annotations: { 'portlb.io/scheduler': 'fastest' } });
    await waitFor('skipped with an Event', () =>
      api
        .list('events', 'shop')
        .some(
          (e) =>
            e.involvedObject?.name === 'typo' &&
            e.reason === 'SkippedInvalidAnnotation' &&
            /fastest/.test(e.message),
        ),
    );
    await waitFor('metric', async () =>
      /portlb_skipped_services\{reason="InvalidAnnotation"\} 1/.test(await metricsText()),
    );
    assert.ok(speaker.announced().has('203.0.113.1/32'));
    const told = logs.filter((l) => l.service === 'shop/typo' && l.reason === 'InvalidAnnotation');
    assert.equal(told.length, 1, 'logged once, not on every pass');
    assert.match(told[0]!.msg, /^service skipped: .*fastest/);
  });

  test('a tunnel Service whose pods listen on another port: programmed, with a warning (Event, metric, log)', async () => {
    createService('tun', {
      port: 80,
      annotations: { 'portlb.io/forwarding': 'tunnel' },
      endpoint: { address: '10.1.0.7', port: 8080 },
    });
    await waitFor('ServiceWarning event', () =>
      api
        .list('events', 'shop')
        .some(
          (e) =>
            e.involvedObject?.name === 'tun' &&
            e.reason === 'ServiceWarning' &&
            /tunnel forwarding cannot change ports: backend 10\.1\.0\.7 listens on 8080/.test(e.message),
        ),
    );
    await waitFor('metric', async () => /portlb_service_warnings 1/.test(await metricsText()));
    assert.ok(
      logs.some((l) => l.service === 'shop/tun' && /^service warning: tunnel forwarding/.test(l.msg)),
    );
    api.remove('services', 'shop', 'tun');
    await waitFor('warning gone', async () => /portlb_service_warnings 0/.test(await metricsText()));
  });

  test('portlb.io/health-check: a failing backend goes to weight 0 and the VIP is withheld (Event, metric, status); it comes back', async () => {
    // A real backend on loopback, probed by the agent's real HTTP check.
    let healthy = true;
    const backend = createServer((req, res) => {
      res.writeHead(req.url === '/healthz' && healthy ? 200 : 503);
      res.end();
    });
    await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
    const port = (backend.address() as AddressInfo).port;
    try {
      createService('checked', {
        port: 82,
        annotations: {
          'portlb.io/health-check':
            '{"type":"http","path":"/healthz","intervalSeconds":0.2,"timeoutSeconds":0.1,"rise":1,"fall":1}',
        },
        endpoint: { address: '127.0.0.1', port },
      });
      const vip = await waitFor(
        'an address',
        () => api.get('services', 'shop', 'checked')?.status?.loadBalancer?.ingress?.[0]?.ip,
      );
      const weight = async () =>
        (await ipvs.getTable()).find((s) => s.service.key.kind === 'address' && s.service.key.address === vip)
          ?.destinations[0]?.weight;
      await waitFor(
        'weight 1 and announced',
        async () => (await weight()) === 1 && speaker.announced().has(`${vip}/32`),
      );

      healthy = false;
      await waitFor('weight 0', async () => (await weight()) === 0);
      await waitFor('withdrawn', () => !speaker.announced().has(`${vip}/32`));
      await waitFor('BackendUnhealthy event', () =>
        api
          .list('events', 'shop')
          .some(
            (e) =>
              e.involvedObject?.name === 'checked' &&
              e.reason === 'BackendUnhealthy' &&
              new RegExp(
                `node edge-1: backend 127\\.0\\.0\\.1:${port} failed its health check \\(status 503`,
              ).test(e.message),
          ),
      );
      const metrics = await metricsText();
      assert.match(metrics, /portlb_backends_healthy\{namespace="shop",service="checked"\} 0/);
      assert.match(metrics, /portlb_backends_checked\{namespace="shop",service="checked"\} 1/);
      assert.match(metrics, /portlb_withheld_vips\{reason="NoHealthyBackends"\} 1/);
      const status = (await (await fetch(`${url}/status`)).json()) as {
        health: { service: string; healthy: number; total: number }[];
      };
      assert.deepEqual(
        status.health.map((h: { service: string; healthy: number; total: number }) => [
          h.service,
          h.healthy,
          h.total,
        ]),
        [['shop/checked', 0, 1]],
      );

      healthy = true;
      await waitFor(
        'weight 1 again',
        async () => (await weight()) === 1 && speaker.announced().has(`${vip}/32`),
      );
      await waitFor('BackendHealthy event', () =>
        api
          .list('events', 'shop')
          .some((e) => e.involvedObject?.name === 'checked' && e.reason === 'BackendHealthy'),
      );
      assert.equal(
        logs.filter((l) => l.msg === 'backend failed its health check: weight 0').length,
        1,
        'logged on the change, not on every probe',
      );
    } finally {
      api.remove('services', 'shop', 'checked');
      backend.close();
    }
  });

  test('the Service deleted: withdrawn, IPVS service and address removed', async () => {
    api.remove('services', 'shop', 'web');
    await waitFor('withdrawn', () => !speaker.announced().has('203.0.113.1/32'));
    await waitFor('IPVS removed', async () => (await ipvs.getTable()).length === 0);
    assert.deepEqual([...addresses.addresses], []);
  });

  test('every request the agent made is granted by the chart’s RBAC', () => {
    assert.ok(api.verbs.size >= 8, [...api.verbs].join(' '));
    assert.deepEqual(ungranted(api.verbs, helmTemplate()), []);
  });
});
