// The product as users install it: the two real images, run by a real container engine
// with the pod spec exactly as the Helm chart renders it, with a kubelet's capability
// semantics, on a node where ip_vs is not loaded yet, peering a real BIRD router, against
// the (fake) API server over HTTPS with in-cluster credentials. Inside the UML kernel, so
// IPVS is real: a Service becomes a VIP, a route on the router and answered requests.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { IMAGES } from '../../images/podman.ts';
import { birdc } from '../harness/bgp.ts';
import type { Obj } from '../harness/fake-kube-api.ts';
import { requireKernelHarness } from '../harness/kernel.ts';
import { KubeApiClient } from '../harness/kube-api-client.ts';
import { beAddress, CLIENT, Lab, labServices, lbAddress, ROUTER } from '../harness/lab.ts';
import { waitFor } from '../harness/netns.ts';
import {
  capMask,
  type GuestPodman,
  guestPodman,
  loadedModules,
  type PlayedPod,
  type PodPlan,
  playPod,
  podSpec,
  processSecurity,
  renderChart,
  unmountUnder,
} from '../harness/pod.ts';

const NAMESPACE = 'portlb-system';
const NODE = 'lb1';
const API = { host: '10.0.0.254', port: 6443 };
const repo = path.resolve(import.meta.dirname, '..', '..');
const figures: string[] = [];
const record = (line: string) => {
  figures.push(line);
  console.log(`# measured: ${line}`);
};

describe('the shipped pod (real images, rendered chart, CRI semantics)', () => {
  requireKernelHarness();
  const work = mkdtempSync(path.join(tmpdir(), 'pod-'));
  const lab = new Lab({
    prefix: 'pod',
    maxReplicas: 1,
    backends: 2,
    services: labServices([{ n: 1 }, { n: 2 }]),
    // The router ties its BGP session to BFD, as docs/routers.md tells users to.
    bfd: { intervalMs: 300, multiplier: 3, deadManSeconds: 2 },
  });
  let engine: GuestPodman;
  let api: ChildProcess;
  let kube: KubeApiClient;
  let objects: Obj[];
  let plan: PodPlan;
  let pod: PlayedPod;
  let ipvsBefore: boolean;

  before(async () => {
    ipvsBefore = loadedModules().has('ip_vs');
    engine = guestPodman(work);
    await lab.up();
    api = spawn(
      process.execPath,
      [
        path.join(repo, 'test', 'harness', 'fake-kube-api-server.ts'),
        '--host',
        API.host,
        '--port',
        String(API.port),
        '--tls-dir',
        path.join(work, 'api'),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      api.stdout!.on('data', (d) => {
        out += d;
        const m = /listening (\S+)/.exec(out);
        if (m) resolve(m[1]!);
      });
      api.on('exit', (code) => reject(new Error(`fake API server exited ${code}`)));
    });
    const ca = readFileSync(path.join(work, 'api', 'ca.crt'), 'utf8');
    kube = new KubeApiClient(url, ca);
    await kube.create('nodes', {
      metadata: { name: NODE, labels: { 'portlb.io/edge': 'true' } },
      status: {
        conditions: [{ type: 'Ready', status: 'True' }],
        addresses: [{ type: 'InternalIP', address: lbAddress(1) }],
      },
    });
    objects = renderChart(
      {
        config: {
          pools: [{ name: 'default', addresses: ['203.0.113.0/24'] }],
          bgp: { asn: 65001, listenPort: 179, peers: [{ address: ROUTER, asn: 65000, holdTime: 9 }] },
          sync: { resyncSeconds: 10 },
        },
      },
      NAMESPACE,
      work,
    );
    plan = podSpec(objects, {
      podName: 'portlb-lb1',
      namespace: NAMESPACE,
      nodeName: NODE,
      hostIP: lbAddress(1),
      apiServer: { ...API, ca },
      workDir: work,
    });
    pod = playPod(engine, plan, lab.net.ns('lb1'), work);
  });

  after(async () => {
    if (figures.length) console.log(`# pod test figures:\n#   ${figures.join('\n#   ')}`);
    if (process.env.PORTLB_POD_LOGS) console.log(diagnose());
    pod?.down();
    api?.kill('SIGTERM');
    await lab.down();
    unmountUnder(work);
    rmSync(work, { recursive: true, force: true });
  });

  const container = (name: string) => (plan.pod.spec.containers as Obj[]).find((c) => c.name === name)!;
  const diagnose = () =>
    ['lb-agent', 'bgp-speaker', 'bfd'].map((c) => `--- ${c} ---\n${pod.logs(c).slice(-3000)}`).join('\n');

  test('the images are the ones built here, referenced as the chart renders them', () => {
    assert.equal(container('lb-agent').image, IMAGES.agent);
    assert.equal(container('bgp-speaker').image, IMAGES.speaker);
    assert.equal(container('bfd').image, IMAGES.speaker);
    assert.equal(
      ipvsBefore,
      false,
      'ip_vs must not be loaded before the pod starts (a node that loads it on demand)',
    );
  });

  test('every container runs with exactly the uid, capabilities, no_new_privs and read-only root the manifest gives it', async () => {
    await waitFor('every container running', () => Object.values(pod.pids()).every((p) => p > 0), {
      timeoutMs: 60_000,
      intervalMs: 500,
    });
    // gobgpd is the speaker's process once its entrypoint has exec'd it.
    await waitFor(
      'gobgpd running',
      () => readFileSync(`/proc/${pod.pids()['bgp-speaker']}/comm`, 'utf8').trim() === 'gobgpd',
      {
        timeoutMs: 60_000,
        intervalMs: 500,
      },
    ).catch((err) => {
      throw new Error(`${(err as Error).message}\n${diagnose()}`);
    });
    // So is bird the bfd container's (with its file capability, NET_ADMIN).
    await waitFor(
      'bird running',
      () => readFileSync(`/proc/${pod.pids().bfd}/comm`, 'utf8').trim() === 'bird',
      {
        timeoutMs: 60_000,
        intervalMs: 500,
      },
    ).catch((err) => {
      throw new Error(`${(err as Error).message}\n${diagnose()}`);
    });
    assert.deepEqual(Object.keys(pod.pids()).sort(), ['bfd', 'bgp-speaker', 'lb-agent']);
    const podGroups = (plan.pod.spec.securityContext?.supplementalGroups ?? []) as number[];
    for (const [name, pid] of Object.entries(pod.pids())) {
      const sc = container(name).securityContext as Obj;
      const got = processSecurity(pid);
      const added = capMask(sc.capabilities?.add ?? []);
      const label = `${name} (pid ${pid})`;
      assert.deepEqual(sc.capabilities?.drop, ['ALL'], `${label}: the manifest drops every capability`);
      assert.equal(got.uid, sc.runAsUser, `${label}: uid`);
      assert.equal(got.gid, sc.runAsGroup, `${label}: gid`);
      for (const g of podGroups) assert.ok(got.groups.includes(g), `${label}: in supplemental group ${g}`);
      assert.equal(got.capBnd, added, `${label}: bounding set = the added capabilities`);
      assert.equal(got.capAmb, 0n, `${label}: no ambient capabilities (CRI semantics)`);
      assert.equal(got.capInh, 0n, `${label}: no inheritable capabilities`);
      assert.equal(got.noNewPrivs, sc.allowPrivilegeEscalation === false, `${label}: no_new_privs`);
      assert.equal(got.rootReadOnly, sc.readOnlyRootFilesystem === true, `${label}: read-only root`);
      // What the process can really use: all of it for root; for a non-root user, only
      // what a file capability grants (gobgpd's cap_net_bind_service).
      assert.equal(got.capEff, added, `${label}: effective capabilities`);
      record(
        `${name}: uid ${got.uid} gid ${got.gid} groups [${got.groups}] CapEff 0x${got.capEff.toString(16)} CapBnd 0x${got.capBnd.toString(16)} CapAmb 0x${got.capAmb.toString(16)} NoNewPrivs ${got.noNewPrivs ? 1 : 0} root ${got.rootReadOnly ? 'ro' : 'rw'}`,
      );
    }
  });

  test('the agent reaches gobgpd, the BGP session is Established, SNAT is set up, the readiness probe turns ready', async () => {
    const probe = plan.readiness.get('lb-agent')!;
    const established = await waitFor(
      'BGP session Established on the router',
      () => lab.sessionState(1) === 'Established' && Date.now(),
      {
        timeoutMs: 120_000,
        intervalMs: 300,
      },
    ).catch((err) => {
      throw new Error(`${(err as Error).message}\n${diagnose()}`);
    });
    record(`pod start -> BGP session Established: ${((established - pod.startedAt) / 1000).toFixed(1)} s`);
    const ready = await waitFor(
      'readiness probe 200',
      async () => {
        const res = await fetch(`http://${lbAddress(1)}:${probe.port}${probe.path}`, {
          signal: AbortSignal.timeout(2000),
        }).catch(() => undefined);
        return res?.status === 200 && Date.now();
      },
      { timeoutMs: 120_000, intervalMs: 500 },
    ).catch((err) => {
      throw new Error(`${(err as Error).message}\n${diagnose()}`);
    });
    record(`pod start -> ready: ${((ready - pod.startedAt) / 1000).toFixed(1)} s`);
    const status = (await (await fetch(`http://${lbAddress(1)}:9180/status`)).json()) as Obj;
    assert.equal(status.bgp.connected, true, 'the agent is connected to gobgpd');
    // BFD: the agent provisioned the bfd container's BIRD; the router sees the session up;
    // the dead-man switch's guard is in place (legacy iptables + ipset here).
    const bfdUp = await waitFor(
      'BFD session up at the router',
      () =>
        /10\.0\.0\.11\s+\S+\s+Up/.test(birdc(lab.net, 'router', lab.bird, 'show bfd sessions')) && Date.now(),
      { timeoutMs: 60_000, intervalMs: 300 },
    ).catch((err) => {
      throw new Error(`${(err as Error).message}\n${diagnose()}`);
    });
    record(`pod start -> BFD session up at the router: ${((bfdUp - pod.startedAt) / 1000).toFixed(1)} s`);
    const withBfd = (await (await fetch(`http://${lbAddress(1)}:9180/status`)).json()) as Obj;
    assert.equal(withBfd.bfd.reachable, true, "the agent reaches the bfd container's BIRD");
    assert.deepEqual(withBfd.bfd.sessions, [{ peer: ROUTER, state: 'up' }]);
    assert.equal(withBfd.bfd.deadMan.holding, null);
    assert.match(lab.net.exec('lb1', 'iptables-legacy', ['-S', 'OUTPUT']), /-j PORTLB-BFD/);
    assert.match(lab.net.exec('lb1', 'ipset', ['list', 'portlb-bfd4']), /10\.0\.0\.1 timeout \d/);
    assert.ok(loadedModules().has('ip_vs'), 'the agent had the kernel load ip_vs');
    const logs = pod.logs('lb-agent');
    assert.match(
      logs,
      /"netfilter":"iptables-legacy"/,
      'netfilter backend chosen from the image (this kernel has no nftables ip family)',
    );
  });

  test('a Service gets a VIP; the router installs it; a request through it is answered', async () => {
    await kube.create('services', {
      metadata: { name: 'web', namespace: 'default' },
      spec: {
        type: 'LoadBalancer',
        loadBalancerClass: 'portlb.io/portlb',
        ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }],
      },
    });
    const created = Date.now();
    await kube.create('endpointslices', {
      metadata: { name: 'web-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4',
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      endpoints: [1, 2].map((n) => ({ addresses: [beAddress(n)], conditions: { ready: true } })),
    });
    const vip = await waitFor(
      'the VIP in the Service status',
      async () => {
        const ingress = (await kube.get('services', 'default', 'web')).status?.loadBalancer?.ingress?.[0];
        return ingress?.ipMode === 'Proxy' && (ingress.ip as string);
      },
      { timeoutMs: 60_000, intervalMs: 300 },
    );
    await waitFor('the route at the router', () => lab.nextHops(vip).join() === lbAddress(1), {
      timeoutMs: 60_000,
      intervalMs: 200,
    }).catch((err) => {
      throw new Error(`${(err as Error).message}\n${diagnose()}`);
    });
    const routed = Date.now();
    record(
      `pod start -> route installed: ${((routed - pod.startedAt) / 1000).toFixed(1)} s (Service created -> route: ${((routed - created) / 1000).toFixed(1)} s)`,
    );
    const answer = await waitFor(
      'an answer through the VIP',
      () => {
        try {
          return lab.net.exec('client', 'bash', [
            '-c',
            `exec 3<>/dev/tcp/${vip}/80 && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 5 cat <&3`,
          ]);
        } catch {
          return undefined;
        }
      },
      { timeoutMs: 30_000, intervalMs: 300 },
    );
    record(`pod start -> first answered request: ${((Date.now() - pod.startedAt) / 1000).toFixed(1)} s`);
    assert.match(answer, /be[12]/, 'a backend answered');
    assert.ok(answer.includes(lbAddress(1)), 'NAT: the backend saw the LB node (SNAT) as the source');
    assert.ok(!answer.includes(CLIENT));
    // The VIP filter, set up by the image's own iptables and ipset: only service ports pass.
    assert.match(
      lab.net.exec('lb1', 'ipset', ['list', 'portlb-vips4']),
      new RegExp(`^${vip.replaceAll('.', '\\.')}$`, 'm'),
    );
    assert.match(lab.net.exec('lb1', 'iptables-legacy', ['-S', 'INPUT']), /-j PORTLB-FILTER/);
  });
});
