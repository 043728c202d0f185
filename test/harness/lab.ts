// The lab topology, inside the kernel harness (UML): a core router (BIRD2, ECMP, L4
// hash), LB replicas (the real lb-agent + its own gobgpd each, standalone mode), HTTP
// backends and a client, in network namespaces on one L2 segment:
//
//   client 192.168.1.2 --- router 192.168.1.1 / 10.0.0.1 --- [bridge 10.0.0.0/24]
//                                                  lb1..N 10.0.0.11.. , be1..M 10.0.0.21..
//
// Used by `npm run lab` (scripts/lab.ts) and the end-to-end tests (test/e2e).

import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { AGENT_NODE_FLAGS } from '../../lb-agent/src/node-flags.ts';
import {
  type Bird,
  birdc,
  birdProtocolState,
  type Gobgpd,
  startBfdResponder,
  startBird,
  startGobgpd,
} from './bgp.ts';
import { lastJsonLine } from './child-output.ts';
import { KubeApiClient } from './kube-api-client.ts';
import type { LoadResult } from './load-client.ts';
import { type Daemon, fibNextHops, NetnsLab, run, waitFor } from './netns.ts';

const repo = path.resolve(import.meta.dirname, '..', '..');
const node = process.execPath;

export interface LabService {
  name: string;
  vip: string;
  port: number;
  forwarding: 'nat' | 'tunnel' | 'dr';
  backendPort: number;
  /** Backend numbers (1-based) and their readiness. */
  backends: { n: number; ready?: boolean; weight?: number }[];
  scheduler?: string;
  /** The services file's healthCheck, as a YAML flow map ("{ type: http, path: / }"). */
  healthCheck?: string;
}

export interface LabOptions {
  prefix?: string;
  /** Replicas configured on the router (started later with startReplica). */
  maxReplicas: number;
  backends: number;
  services: LabService[];
  drainTimeoutSeconds?: number;
  resyncSeconds?: number;
  gracefulShutdownSeconds?: number;
  /**
   * Kubernetes mode: the agents watch a fake API server (its own process, HTTPS, in the
   * guest's root namespace on the lab bridge) instead of a services file; the lab's
   * services are Services and EndpointSlices there.
   */
  kubernetes?: boolean;
  /**
   * BFD toward the router: each replica runs the bfd entrypoint (a BFD-only BIRD) that its
   * agent provisions; the router ties the BGP sessions to BFD. Replicas listed in
   * `without` have no BFD (and the hold time `holdTimeWithout`), for comparison.
   */
  bfd?: {
    intervalMs: number;
    multiplier: number;
    deadManSeconds: number;
    without?: number[];
    holdTimeWithout?: number;
  };
  say?: (line: string) => void;
}

export interface AgentStartOptions {
  agentArgs?: string[];
  configOverrides?: string[];
  /** Extra environment (e.g. PORTLB_TEST_FAULTS). */
  env?: Record<string, string>;
}

export const API_HOST = '10.0.0.254';
export const API_PORT = 6443;

/** The lab's two VIPs: one with IPIP tunnel forwarding (DSR), one with NAT; mh on both. */
export const TUNNEL_VIP = '203.0.113.10';
export const NAT_VIP = '203.0.113.11';
/** Direct routing: needs LB and backends on one L2 segment, which the lab has. */
export const DR_VIP = '203.0.113.12';
export function labServices(backends: LabService['backends'] = [{ n: 1 }, { n: 2 }, { n: 3 }]): LabService[] {
  return [
    { name: 'web', vip: TUNNEL_VIP, port: 80, forwarding: 'tunnel', backendPort: 80, backends },
    { name: 'web-nat', vip: NAT_VIP, port: 80, forwarding: 'nat', backendPort: 8080, backends },
  ];
}

export const lbAddress = (i: number) => `10.0.0.${10 + i}`;
export const beAddress = (n: number) => `10.0.0.${20 + n}`;
export const ROUTER = '10.0.0.1';
export const CLIENT = '192.168.1.2';

interface Replica {
  gobgpd?: Gobgpd;
  agent?: Daemon;
  bfd?: Daemon;
}

/** One line per load run: failures, then what users feel (stalls, retransmissions), then latency. */
export function describeLoad(r: LoadResult): string {
  const parts = [`${r.failed} failed of ${r.requests}${r.failed ? ` ${JSON.stringify(r.failures)}` : ''}`];
  if (r.connections)
    parts.push(
      `${r.connections.broken} of ${r.connections.opened} long-lived connections broken${r.connections.breaks?.length ? ` (${r.connections.breaks.map((b) => `closed at ${b.at} s by ${b.how}, last on ${b.backend}, client port ${b.port}`).join('; ')})` : ''}`,
    );
  if (r.stalls)
    parts.push(
      `${r.stalls.over900ms} over 900 ms${r.stalls.at.length ? ` (at ${r.stalls.at.join(', ')} s; client ports ${r.stalls.ports?.join(', ')})` : ''}, ${r.stalls.synRetrans} SYN retransmissions, ${r.stalls.retransSegs} segments retransmitted`,
    );
  const latency = r.latencyMs
    ? ` (latency p50 ${r.latencyMs.p50} ms, p99 ${r.latencyMs.p99} ms, max ${r.latencyMs.max} ms)`
    : '';
  return parts.join(', ') + latency;
}

export class Lab {
  readonly net: NetnsLab;
  readonly o: LabOptions;
  bird!: Bird;
  services: LabService[];
  /** Kubernetes mode: the API server's client, and its process. */
  kube: KubeApiClient | undefined;
  private api: Daemon | undefined;
  private readonly replicas = new Map<number, Replica>();
  private readonly say: (line: string) => void;

  constructor(o: LabOptions) {
    this.o = o;
    this.services = o.services;
    this.net = new NetnsLab(o.prefix ?? 'lab');
    this.say = o.say ?? (() => {});
  }

  get dir(): string {
    return this.net.dir;
  }

  get servicesFile(): string {
    return path.join(this.dir, 'services.yaml');
  }

  get kubeconfigFile(): string {
    return path.join(this.dir, 'kubeconfig.yaml');
  }

  /** Kubernetes mode: the fake API server, a kubeconfig for the agents, the nodes. */
  private async startApi(): Promise<void> {
    const tlsDir = path.join(this.dir, 'api');
    this.api = this.net.spawnHost('kube-api', node, [
      path.join(repo, 'test', 'harness', 'fake-kube-api-server.ts'),
      '--host',
      API_HOST,
      '--port',
      String(API_PORT),
      '--tls-dir',
      tlsDir,
    ]);
    await waitFor('the API server', () => this.net.log(this.api!).includes('listening'), {
      timeoutMs: 60_000,
      intervalMs: 200,
    });
    const ca = readFileSync(path.join(tlsDir, 'ca.crt'), 'utf8');
    this.kube = new KubeApiClient(`https://${API_HOST}:${API_PORT}`, ca);
    writeFileSync(
      this.kubeconfigFile,
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters:',
        `- name: lab`,
        `  cluster: { server: "https://${API_HOST}:${API_PORT}", certificate-authority-data: ${Buffer.from(ca).toString('base64')} }`,
        'users:',
        '- name: agent',
        '  user: { token: lab-token }',
        'contexts:',
        '- name: lab',
        '  context: { cluster: lab, user: agent }',
        'current-context: lab',
        '',
      ].join('\n'),
    );
    for (let i = 1; i <= this.o.maxReplicas; i++) {
      await this.kube.create('nodes', {
        metadata: { name: `lb${i}`, labels: { 'portlb.io/edge': 'true' } },
        status: { conditions: [{ type: 'Ready', status: 'True' }] },
      });
    }
  }

  /** Kubernetes mode: the lab's services as Services (VIP pinned) and EndpointSlices. */
  private async writeKubeServices(services: LabService[]): Promise<void> {
    const kube = this.kube!;
    for (const s of services) {
      const service = {
        metadata: {
          name: s.name,
          namespace: 'default',
          annotations: {
            'portlb.io/load-balancer-ips': s.vip,
            'portlb.io/forwarding': s.forwarding,
            'portlb.io/scheduler': s.scheduler ?? 'mh',
            ...((s.scheduler ?? 'mh') === 'mh' ? { 'portlb.io/scheduler-flags': 'mh-port' } : {}),
          },
        },
        spec: {
          type: 'LoadBalancer',
          loadBalancerClass: 'portlb.io/portlb',
          ports: [{ name: 'http', port: s.port, protocol: 'TCP' }],
        },
      };
      const slice = {
        metadata: {
          name: `${s.name}-1`,
          namespace: 'default',
          labels: { 'kubernetes.io/service-name': s.name },
        },
        addressType: 'IPv4',
        ports: [{ name: 'http', port: s.backendPort, protocol: 'TCP' }],
        endpoints: s.backends.map((b) => ({
          addresses: [beAddress(b.n)],
          conditions: { ready: b.ready ?? true },
        })),
      };
      const exists = await kube.get('services', 'default', s.name).catch(() => undefined);
      if (exists) {
        await kube.patch('services', 'default', s.name, {
          metadata: { annotations: service.metadata.annotations },
          spec: service.spec,
        });
        await kube.patch('endpointslices', 'default', slice.metadata.name, {
          endpoints: slice.endpoints,
          ports: slice.ports,
        });
      } else {
        await kube.create('services', service);
        await kube.create('endpointslices', slice);
      }
    }
  }

  /** Writes the services file every agent reads (and reloads when it changes), or the API objects. */
  async writeServices(services: LabService[] = this.services): Promise<void> {
    this.services = services;
    if (this.o.kubernetes) return this.writeKubeServices(services);
    const lines = ['pools: [203.0.113.0/24]', 'services:'];
    for (const s of services) {
      lines.push(
        `  - name: ${s.name}`,
        `    vip: ${s.vip}`,
        `    port: ${s.port}`,
        `    scheduler: ${s.scheduler ?? 'mh'}`,
        ...((s.scheduler ?? 'mh') === 'mh' ? ['    schedulerFlags: [mh-port]'] : []),
        `    forwarding: ${s.forwarding}`,
        ...(s.healthCheck ? [`    healthCheck: ${s.healthCheck}`] : []),
        '    backends:',
        ...s.backends.map(
          (b) =>
            `      - { address: ${beAddress(b.n)}, port: ${s.backendPort}, ready: ${b.ready ?? true}, weight: ${b.weight ?? 1} }`,
        ),
      );
    }
    // Atomically, as a ConfigMap update is: a reader never sees half a file.
    writeFileSync(`${this.servicesFile}.tmp`, `${lines.join('\n')}\n`);
    renameSync(`${this.servicesFile}.tmp`, this.servicesFile);
  }

  /**
   * The niceness of what runs on the LB nodes and the router (agents, gobgpd, the BFD
   * responders, the router's BIRD), against the world around them (backends, the load
   * client, the test) at 0. With BFD, the sessions (100 ms x 3) and the agent's liveness
   * (the dead-man switch, 1 s here) are measured in hundreds of milliseconds, the
   * comparison replica's BGP hold time is 3 s, and this guest's one CPU runs all of it.
   * Measured at nice 0 under a second busy guest: agents went 1.0-2.5 s without being
   * scheduled (40-260 ms of CPU used in that time) and the switch held BFD down; the
   * router's BIRD declared both BFD sessions down while a third replica was being cut
   * (every path gone for 1.8 s). With only the agents and BFD raised, a gobgpd left at 0
   * missed its 3 s hold time (every path gone once more). In a cluster the pod's CPU
   * request gives these their share (docs/bfd.md), and a router runs BFD and BGP before
   * anything else; here nice does. For the router's BIRD, nice was not enough: measured
   * with a stall monitor at nice -20 seeing nothing, the router's BIRD still went 300 ms
   * without reading its BFD socket (three packets of each replica queued, both sessions
   * expired at once) while agents started; it runs SCHED_FIFO when the lab has BFD.
   */
  private get nice(): number {
    return this.o.bfd ? -10 : 0;
  }

  hasBfd(i: number): boolean {
    return !!this.o.bfd && !(this.o.bfd.without ?? []).includes(i);
  }

  bfdDir(i: number): string {
    return path.join(this.dir, `bfd-lb${i}`);
  }

  agentConfig(i: number, overrides: string[] = []): string {
    const file = path.join(this.dir, `agent-lb${i}.yaml`);
    const source = this.o.kubernetes
      ? [
          'mode: kubernetes',
          'kubernetes:',
          `  kubeconfig: ${this.kubeconfigFile}`,
          '  leaderElection: { namespace: portlb-system, leaseDurationSeconds: 15, renewDeadlineSeconds: 10, retryPeriodSeconds: 2 }',
        ]
      : ['mode: standalone', `standalone: { servicesFile: ${this.servicesFile} }`];
    writeFileSync(
      file,
      [
        ...source,
        `nodeName: lb${i}`,
        'pools: [{ name: lab, addresses: [203.0.113.0/24] }]',
        `defaults: { scheduler: mh, forwarding: nat, drainTimeoutSeconds: ${this.o.drainTimeoutSeconds ?? 10} }`,
        'bgp:',
        '  asn: 65001',
        `  routerId: ${lbAddress(i)}`,
        '  listenPort: 179',
        `  listenAddresses: [${lbAddress(i)}]`,
        `  speakerSocket: unix://${path.join(this.dir, `gobgp-lb${i}.sock`)}`,
        `  gracefulShutdownSeconds: ${this.o.gracefulShutdownSeconds ?? 3}`,
        `  peers: [{ address: ${ROUTER}, asn: 65000, holdTime: ${this.hasBfd(i) || !this.o.bfd ? 9 : (this.o.bfd.holdTimeWithout ?? 9)}${this.o.bfd ? `, bfd: ${this.hasBfd(i)}` : ''} }]`,
        ...(this.o.bfd
          ? [
              `bfd: { socket: ${path.join(this.bfdDir(i), 'bird-bfd.ctl')}, configFile: ${path.join(this.bfdDir(i), 'bird-bfd.conf')}, intervalMs: ${this.o.bfd.intervalMs}, multiplier: ${this.o.bfd.multiplier}, deadManSeconds: ${this.o.bfd.deadManSeconds} }`,
            ]
          : []),
        'ipvs: { snat: auto }',
        `http: { listen: "${lbAddress(i)}:9180" }`,
        `sync: { minIntervalMs: 100, resyncSeconds: ${this.o.resyncSeconds ?? 5}, retryMaxSeconds: 5 }`,
        ...overrides,
        '',
      ].join('\n'),
    );
    return file;
  }

  async up(): Promise<void> {
    const net = this.net;
    run('ip', ['link', 'add', `${net.prefix}br`, 'type', 'bridge']);
    run('ip', ['addr', 'add', '10.0.0.254/24', 'dev', `${net.prefix}br`]);
    run('ip', ['link', 'set', `${net.prefix}br`, 'up']);
    const attach = (name: string, address: string) => {
      const host = `${net.prefix}${name}h`.slice(0, 15);
      run('ip', ['link', 'add', host, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', net.ns(name)]);
      run('ip', ['link', 'set', host, 'master', `${net.prefix}br`]);
      run('ip', ['link', 'set', host, 'up']);
      net.exec(name, 'ip', ['addr', 'add', `${address}/24`, 'dev', 'eth0']);
      net.exec(name, 'ip', ['link', 'set', 'eth0', 'up']);
    };
    const quiet = { 'net.ipv4.conf.all.rp_filter': '0', 'net.ipv4.conf.default.rp_filter': '0' };
    net.addNamespace('router', { ...quiet, 'net.ipv4.ip_forward': '1' });
    attach('router', ROUTER);
    net.addNamespace('client');
    net.link('router', 'r-client', ['192.168.1.1/24'], 'client', 'c-router', [`${CLIENT}/24`]);
    net.exec('client', 'ip', ['route', 'add', 'default', 'via', '192.168.1.1']);
    this.say('namespaces: router, client');

    for (let i = 1; i <= this.o.maxReplicas; i++) {
      net.addNamespace(`lb${i}`, { ...quiet, 'net.ipv4.ip_forward': '1' });
      attach(`lb${i}`, lbAddress(i));
      net.exec(`lb${i}`, 'ip', ['route', 'add', 'default', 'via', ROUTER]);
    }
    const vipsOf = (f: LabService['forwarding']) =>
      this.services.filter((s) => s.forwarding === f).map((s) => s.vip);
    const servers: Daemon[] = [];
    for (let n = 1; n <= this.o.backends; n++) {
      const name = `be${n}`;
      net.addNamespace(name, quiet);
      attach(name, beAddress(n));
      net.exec(name, 'ip', ['route', 'add', 'default', 'via', ROUTER]);
      // Tunnel (IPIP) backends decapsulate and own the VIP; they reply to the client directly.
      net.exec(name, 'ip', ['link', 'set', 'tunl0', 'up']);
      net.exec(name, 'sysctl', ['-qw', 'net.ipv4.conf.tunl0.rp_filter=0']);
      for (const vip of vipsOf('tunnel')) net.exec(name, 'ip', ['addr', 'add', `${vip}/32`, 'dev', 'tunl0']);
      // Direct routing backends own the VIP too (on lo) but must never answer ARP for it,
      // or the segment would learn the VIP at a backend's MAC.
      net.exec(name, 'sysctl', ['-qw', 'net.ipv4.conf.all.arp_ignore=1', 'net.ipv4.conf.all.arp_announce=2']);
      for (const vip of vipsOf('dr')) net.exec(name, 'ip', ['addr', 'add', `${vip}/32`, 'dev', 'lo']);
      const ports = [...new Set(this.services.map((s) => String(s.backendPort)))];
      servers.push(
        net.spawn(name, `backend-${name}`, node, [
          path.join(repo, 'test', 'harness', 'backend-server.ts'),
          name,
          ...ports,
        ]),
      );
    }
    this.say(`namespaces: lb1..lb${this.o.maxReplicas}, be1..be${this.o.backends} on one L2 segment`);

    this.bird = await startBird(this.net, 'router', {
      routerId: ROUTER,
      asn: 65000,
      holdTime: 9,
      bfd: this.o.bfd,
      nice: this.nice,
      realtime: !!this.o.bfd,
      neighbors: Array.from({ length: this.o.maxReplicas }, (_, k) => ({
        name: `lb${k + 1}`,
        address: lbAddress(k + 1),
        asn: 65001,
        family: 'ipv4' as const,
        bfd: this.hasBfd(k + 1),
      })),
    });
    this.say('router: BIRD 2 with multipath (merge paths) and L4 ECMP hashing');
    if (this.o.kubernetes) {
      await this.startApi();
      this.say(
        `Kubernetes: a fake API server on https://${API_HOST}:${API_PORT}, nodes lb1..lb${this.o.maxReplicas}`,
      );
      await this.writeKubeServices(this.services);
      return;
    }
    await Promise.all(
      servers.map((d) =>
        waitFor(`${d.name}`, () => this.net.log(d).includes('listening'), {
          timeoutMs: 60_000,
          intervalMs: 200,
        }),
      ),
    );
    this.say(`backends: be1..be${this.o.backends} answer HTTP with their name`);
    this.writeServices();
  }

  /** The processes in backend n's namespace (its server). */
  backendPids(n: number): number[] {
    const pids = run('ip', ['netns', 'pids', this.net.ns(`be${n}`)])
      .split('\n')
      .filter(Boolean)
      .map(Number);
    if (!pids.length) throw new Error(`no process in be${n}`);
    return pids;
  }

  /**
   * Sends a signal to backend n's server (SIGSTOP freezes it, SIGKILL takes it away);
   * returns when the signals went (after finding the processes).
   */
  signalBackend(n: number, signal: 'SIGSTOP' | 'SIGCONT' | 'SIGKILL'): number {
    const pids = this.backendPids(n);
    const at = Date.now();
    for (const pid of pids) process.kill(pid, signal);
    return at;
  }

  /** Starts backend n's server again (after SIGKILL), and waits until it listens. */
  async restartBackend(n: number): Promise<void> {
    const ports = [...new Set(this.services.map((s) => String(s.backendPort)))];
    const d = this.net.spawn(`be${n}`, `backend-be${n}-again`, node, [
      path.join(repo, 'test', 'harness', 'backend-server.ts'),
      `be${n}`,
      ...ports,
    ]);
    await waitFor(d.name, () => this.net.log(d).includes('listening'), {
      timeoutMs: 60_000,
      intervalMs: 200,
    });
  }

  /** Runs a command in backend n's namespace (e.g. a firewall rule). */
  inBackend(n: number, cmd: string, args: string[]): string {
    return this.net.exec(`be${n}`, cmd, args);
  }

  /** Starts a replica: its gobgpd, then its agent. */
  async startReplica(i: number, options: AgentStartOptions = {}): Promise<void> {
    const r = this.replica(i);
    if (!r.gobgpd || r.gobgpd.daemon.child.exitCode !== null || r.gobgpd.daemon.child.signalCode !== null) {
      r.gobgpd = await startGobgpd(this.net, `lb${i}`, path.join(this.dir, `gobgp-lb${i}.sock`), this.nice);
    }
    if (this.hasBfd(i) && (!r.bfd || r.bfd.child.exitCode !== null || r.bfd.child.signalCode !== null)) {
      r.bfd = await startBfdResponder(this.net, `lb${i}`, this.bfdDir(i), this.nice);
    }
    await this.startAgent(i, options);
  }

  async startAgent(i: number, options: AgentStartOptions = {}): Promise<Daemon> {
    const r = this.replica(i);
    const config = this.agentConfig(i, options.configOverrides);
    r.agent = this.net.spawn(
      `lb${i}`,
      `agent-lb${i}`,
      'nice',
      [
        '-n',
        String(this.nice),
        node,
        ...AGENT_NODE_FLAGS,
        path.join(repo, 'lb-agent', 'bin', 'portlb.js'),
        'agent',
        '--config',
        config,
        ...(options.agentArgs ?? []),
      ],
      { ...process.env, ...options.env },
    );
    await waitFor(
      `agent lb${i} ready`,
      async () => {
        if (r.agent!.child.exitCode !== null)
          throw new Error(`agent lb${i} exited: ${this.net.log(r.agent!).slice(-2000)}`);
        const res = await fetch(`http://${lbAddress(i)}:9180/readyz`, {
          signal: AbortSignal.timeout(2000),
        }).catch(() => undefined);
        return res?.status === 200;
      },
      { timeoutMs: 150_000, intervalMs: 250 },
    );
    return r.agent;
  }

  private replica(i: number): Replica {
    const r = this.replicas.get(i) ?? {};
    this.replicas.set(i, r);
    return r;
  }

  agent(i: number): Daemon | undefined {
    return this.replicas.get(i)?.agent;
  }

  gobgpd(i: number): Gobgpd | undefined {
    return this.replicas.get(i)?.gobgpd;
  }

  /** Restarts gobgpd alone (as a crashed sidecar), on the same socket. */
  async restartGobgpd(i: number): Promise<void> {
    const r = this.replicas.get(i)!;
    r.gobgpd = await startGobgpd(this.net, `lb${i}`, path.join(this.dir, `gobgp-lb${i}.sock`), this.nice);
  }

  /** SIGKILL of everything of a replica (a node dying). */
  async killReplica(i: number): Promise<void> {
    const r = this.replicas.get(i);
    if (r?.agent) await this.net.kill(r.agent, 'SIGKILL');
    if (r?.gobgpd) await this.net.kill(r.gobgpd.daemon, 'SIGKILL');
    if (r?.bfd) await this.net.kill(r.bfd, 'SIGKILL');
  }

  /** What Kubernetes does to a pod: SIGTERM to the agent (graceful), then to the speaker. */
  async gracefulStop(i: number): Promise<void> {
    const r = this.replicas.get(i);
    if (r?.agent) await this.net.kill(r.agent, 'SIGTERM', 60_000);
    if (r?.gobgpd) await this.net.kill(r.gobgpd.daemon, 'SIGTERM');
    if (r?.bfd) await this.net.kill(r.bfd, 'SIGTERM');
  }

  /** Each replica's IPVS connection entries for a client port (post-mortems of broken flows). */
  ipvsConnectionsOf(clientPort: number): string[] {
    const hex = clientPort.toString(16).toUpperCase().padStart(4, '0');
    const ip = (h: string) => (h.match(/../g) ?? []).map((b) => Number.parseInt(b, 16)).join('.');
    const out: string[] = [];
    for (const i of this.replicas.keys()) {
      const text = this.net.exec(`lb${i}`, 'cat', ['/proc/net/ip_vs_conn']);
      for (const line of text.split('\n').slice(1)) {
        const f = line.trim().split(/\s+/);
        if (f[2] === hex) out.push(`lb${i}: to ${ip(f[5] ?? '')} ${f[7]} expires ${f[8]} s`);
      }
    }
    return out;
  }

  nextHops(vip: string): string[] {
    return fibNextHops(this.net, 'router', `${vip}/32`);
  }

  waitNextHops(vip: string, count: number, timeoutMs = 30_000): Promise<string[]> {
    return waitFor(
      `${count} next hops for ${vip}`,
      () => {
        const hops = this.nextHops(vip);
        return hops.length === count ? hops : undefined;
      },
      // Each poll spawns `ip`, which is costly in UML: poll gently, the load runs meanwhile.
      { timeoutMs, intervalMs: 400 },
    ).catch((err) => {
      throw new Error(`${(err as Error).message}\n${this.diagnostics()}`);
    });
  }

  /** What the router and the replicas say, for a failure message. */
  diagnostics(): string {
    const out: string[] = [];
    try {
      out.push(`router: ${birdc(this.net, 'router', this.bird, 'show protocols')}`);
      out.push(`router routes: ${birdc(this.net, 'router', this.bird, 'show route')}`);
    } catch (err) {
      out.push(`router: ${(err as Error).message}`);
    }
    for (const [i, r] of this.replicas) {
      if (r.agent) out.push(`--- agent lb${i} ---\n${this.net.log(r.agent).slice(-2500)}`);
      if (r.gobgpd) out.push(`--- gobgpd lb${i} ---\n${this.net.log(r.gobgpd.daemon).slice(-1500)}`);
    }
    return out.join('\n');
  }

  /** The router's count of route withdraws received from replica i (BIRD's import stats). */
  routerWithdraws(i: number): number {
    const out = birdc(this.net, 'router', this.bird, `show protocols all lb${i}`);
    const m = /Import withdraws:\s+(\d+)/.exec(out);
    if (!m) throw new Error(`no import stats for lb${i}: ${out}`);
    return Number(m[1]);
  }

  sessionState(i: number): string {
    return birdProtocolState(this.net, 'router', this.bird, `lb${i}`);
  }

  // biome-ignore lint/suspicious/noExplicitAny: the agent's status document.
  async status(i: number): Promise<any> {
    const res = await fetch(`http://${lbAddress(i)}:9180/status`, { signal: AbortSignal.timeout(30_000) });
    return res.json();
  }

  /** IPVS connections scheduled per service on a replica (its kernel counters). */
  async connections(i: number): Promise<Record<string, number>> {
    const s = await this.status(i);
    return Object.fromEntries(
      (s.services as { id: string; connections: number }[]).map((x) => [x.id, x.connections]),
    );
  }

  ipvsadm(i: number, args: string[]): string {
    return this.net.exec(`lb${i}`, 'ipvsadm', args);
  }

  /** The real servers of a TCP VIP:port on replica i, as its kernel has them. */
  backendsIn(i: number, vip: string, port = 80): { address: string; weight: number; active: number }[] {
    const out = this.ipvsadm(i, ['-Ln', '-t', `${vip}:${port}`]);
    return out
      .split('\n')
      .map((l) => /->\s+([\d.]+):\d+\s+\S+\s+(\d+)\s+(\d+)/.exec(l))
      .filter((m): m is RegExpExecArray => !!m)
      .map((m) => ({ address: m[1]!, weight: Number(m[2]), active: Number(m[3]) }));
  }

  /**
   * Starts the load client in the client namespace against `http://VIP/`; resolves with
   * its JSON summary. `keepalive` N holds N long-lived connections (a request every
   * `intervalMs` on each) instead of a new connection per request.
   */
  load(o: {
    vips: string[];
    seconds: number;
    concurrency?: number;
    keepalive?: number;
    intervalMs?: number;
    /** A request slower than this fails (and ends its long-lived connection); default 10 s. */
    timeoutMs?: number;
  }): {
    done: Promise<LoadResult>;
    child: ChildProcess;
    stop: () => void;
    started: Promise<void>;
  } {
    const child = spawn(
      'ip',
      [
        'netns',
        'exec',
        this.net.ns('client'),
        node,
        path.join(repo, 'test', 'harness', 'load-client.ts'),
        ...o.vips.flatMap((vip) => ['--url', `http://${vip}/`]),
        '--seconds',
        String(o.seconds),
        ...(o.concurrency === undefined ? [] : ['--concurrency', String(o.concurrency)]),
        ...(o.keepalive === undefined ? [] : ['--keepalive', String(o.keepalive)]),
        ...(o.intervalMs === undefined ? [] : ['--interval-ms', String(o.intervalMs)]),
        ...(o.timeoutMs === undefined ? [] : ['--timeout-ms', String(o.timeoutMs)]),
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let markStarted: () => void = () => {};
    const started = new Promise<void>((resolve) => {
      markStarted = resolve;
    });
    child.on('exit', () => markStarted());
    const done = lastJsonLine<LoadResult>(child, 'load client', (err) => {
      if (err.includes('load started')) markStarted();
    });
    // ip netns exec execs node, so the signal reaches the client itself.
    return { done, child, stop: () => child.kill('SIGTERM'), started };
  }

  async down(): Promise<void> {
    await this.net.cleanup();
    try {
      run('ip', ['link', 'del', `${this.net.prefix}br`]);
    } catch {
      // gone already
    }
  }
}

export type { LoadResult } from './load-client.ts';
