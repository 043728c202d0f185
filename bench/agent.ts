// The whole agent (npm run bench -- agent), inside the kernel harness: lb-agent in
// Kubernetes mode as a process of its own, the fake API server as another (HTTPS, loaded
// with N Services x M endpoints before it listens), the real kernel IPVS, no speaker.
// The benchmark process only watches: /proc for the agent's memory, its /metrics, and the
// kernel (netlink) for what it programmed. Per size:
// - start -> ready (informers listed, first full pass programmed);
// - the agent's RSS and heap after sync, and again after the changes;
// - EndpointSlice change on the API server -> the kernel has it, over C changes one at a
//   time (the API write's own share split out);
// - event-loop delay while full resyncs run and /metrics (which reads every service's
//   counters) is scraped every second;
// - Service created on the API server -> its address allocated and in its status -> IPVS
//   has it with its endpoints -> the VIP filter lets its port in, over K creates one at a
//   time (announcing is not measured: no speaker here).
// With --reps N each size runs N times, each from the same starting state, and the
// figures against the targets are medians with min and max.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { NetlinkIpvsClient } from '../lb-agent/src/ipvs/netlink-client.ts';
import type { ServiceKey } from '../lb-agent/src/ipvs/types.ts';
import { AGENT_NODE_FLAGS } from '../lb-agent/src/node-flags.ts';
import { KubeApiClient } from '../test/harness/kube-api-client.ts';
import { waitFor } from '../test/harness/netns.ts';
import {
  type CpuProfile,
  fmtMs,
  freshIpvsModule,
  median,
  percentile,
  profileWindows,
  sh,
  spread,
  topFunctions,
  writeResults,
} from './lib.ts';

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '0,1000,10000' },
    endpoints: { type: 'string', default: '10' },
    changes: { type: 'string', default: '300' },
    /** Services created one at a time at the end of each size. */
    creates: { type: 'string', default: '10' },
    /** Runs of each size, each from the same starting state (a fresh ip_vs, API server and agent). */
    reps: { type: 'string', default: '1' },
    'resync-seconds': { type: 'string', default: '10' },
    'scrape-seconds': { type: 'string', default: '30' },
    /** A portlb.io/health-check value for every Service (every backend is then probed). */
    'health-check': { type: 'string' },
    /** The agent runs with --cpu-prof; the functions with the most self time are printed per size. */
    profile: { type: 'boolean', default: false },
    /** The agent records its late event-loop turns with how long its main thread ran and waited for the CPU (implied by --profile). */
    'loop-watch': { type: 'boolean', default: false },
    /** After sync, the agent writes a V8 heap snapshot (SIGUSR2) into the bench directory: read it with bench/heap-summary.ts. */
    'heap-snapshot': { type: 'boolean', default: false },
    /** Every allocation of the resync-and-scrape window, sampled (V8's sampling heap profiler): read it with bench/alloc-summary.ts. */
    'alloc-profile': { type: 'boolean', default: false },
    /** Node/V8 flags for the agent's process (default: AGENT_NODE_FLAGS, as the image runs it; "" for none). */
    'node-flags': { type: 'string' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  console.log(
    'Usage: npm run bench -- agent [--sizes 0,1000,10000] [--endpoints 10] [--changes 300] [--creates 10] [--reps 1] [--resync-seconds 10] [--scrape-seconds 30] [--profile] [--loop-watch] [--heap-snapshot] [--alloc-profile] [--health-check \'{"type":"tcp","intervalSeconds":1}\']\n' +
      '  size 0: the agent with no Service, the baseline of its memory (code, libraries, runtime)\n' +
      '  --reps N: N runs of each size in this boot, each from a freshly loaded ip_vs, a new API server and agent;\n' +
      '    the figures against the targets are then medians with min and max\n' +
      '  --profile: the agent runs under --cpu-prof; its top functions by self time are printed and written, and\n' +
      '    what ran in each event-loop turn over 50 ms of the resync-and-scrape window (implies --loop-watch)\n' +
      '  --loop-watch: each event-loop turn over 50 ms of that window, with how long the main thread ran in it and\n' +
      '    how long it waited for the CPU (in UML the one CPU is shared with the API server and this benchmark)\n' +
      '  --heap-snapshot: after sync the agent writes a heap snapshot (summarise it: node bench/heap-summary.ts FILE)\n' +
      '  --alloc-profile: what the agent allocates over the resync-and-scrape window, by function (the garbage\n' +
      '    its collector pays for; the profile is written: node bench/alloc-summary.ts FILE)\n' +
      '  --health-check: every backend is probed (its address is made local, a listener answers); results in bench/results/agent-health-checks.json',
  );
  process.exit(0);
}
if (process.env.PORTLB_IN_UML !== '1') {
  console.error('bench/agent.ts runs inside the kernel harness: npm run bench -- agent');
  process.exit(2);
}
const sizes = values.sizes.split(',').map(Number);
const M = Number(values.endpoints);
/** Changes per size: one count for all, or one per size of --sizes (10k takes seconds a change in UML). */
const CHANGE_COUNTS = values.changes.split(',').map(Number);
const changesFor = (n: number) => CHANGE_COUNTS[CHANGE_COUNTS.length === 1 ? 0 : sizes.indexOf(n)] ?? 0;
const CREATES = Number(values.creates);
const REPS = Number(values.reps);
if (!Number.isInteger(REPS) || REPS < 1) {
  console.error(`--reps ${JSON.stringify(values.reps)}: a whole number of runs, at least 1`);
  process.exit(2);
}
const RESYNC = Number(values['resync-seconds']);
const SCRAPE = Number(values['scrape-seconds']);
const CHECK = values['health-check'];
const PROFILE = values.profile;
const LOOP_WATCH = values['loop-watch'];
const HEAP_SNAPSHOT = values['heap-snapshot'];
const ALLOC_PROFILE = values['alloc-profile'];
// As the image and the systemd unit run the agent, unless told otherwise.
const NODE_FLAGS = values['node-flags']?.split(/\s+/).filter(Boolean) ?? AGENT_NODE_FLAGS;
const TARGETS = { rssMb10k: 150, p99Ms10k: 100, loopMaxMs: 50 };

const repo = path.resolve(import.meta.dirname, '..');
// On the host's file system (the guest's /tmp is its own): the logs stay for a post-mortem.
const dir = '/root/.cache/portlb/bench-agent';
const API = '127.0.0.1';
const API_PORT = 6443;
const METRICS = 'http://127.0.0.1:9180';
const mb = (b: number) => b / 1024 / 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const vip = (i: number) => `10.${96 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
const endpointIp = (i: number, j: number, salt = 0) => {
  const k = i * M + j;
  return `172.${16 + salt + (k >> 16)}.${(k >> 8) & 255}.${k & 255}`;
};
const ns = (i: number) => `ns-${i % 50}`;
const slice = (i: number, endpoints: string[]) => ({
  metadata: { name: `svc-${i}-abc`, namespace: ns(i), labels: { 'kubernetes.io/service-name': `svc-${i}` } },
  addressType: 'IPv4',
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  endpoints: endpoints.map((a) => ({ addresses: [a], conditions: { ready: true }, nodeName: 'lb1' })),
});

function seed(n: number, check: string | undefined): string {
  const file = path.join(dir, `seed-${n}${check ? '-checked' : ''}.json`);
  const services = Array.from({ length: n }, (_, i) => ({
    metadata: {
      name: `svc-${i}`,
      namespace: ns(i),
      creationTimestamp: '2026-01-01T00:00:00Z',
      ...(check ? { annotations: { 'portlb.io/health-check': check } } : {}),
    },
    spec: {
      type: 'LoadBalancer',
      loadBalancerClass: 'portlb.io/portlb',
      ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
    },
    status: { loadBalancer: { ingress: [{ ip: vip(i), ipMode: 'Proxy' }] } },
  }));
  const slices = Array.from({ length: n }, (_, i) =>
    slice(
      i,
      Array.from({ length: M }, (_, j) => endpointIp(i, j)),
    ),
  );
  const nodes = [{ metadata: { name: 'lb1' }, status: { conditions: [{ type: 'Ready', status: 'True' }] } }];
  writeFileSync(file, JSON.stringify({ nodes, services, endpointslices: slices }));
  return file;
}

function start(name: string, args: string[], env: Record<string, string> = {}): ChildProcess {
  const log = openSync(path.join(dir, `${name}.log`), 'w');
  return spawn(process.execPath, args, { stdio: ['ignore', log, log], env: { ...process.env, ...env } });
}

const rssOf = (pid: number) =>
  mb(Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024);

/** Clock ticks per second of /proc's CPU figures (USER_HZ: 100 on Linux). */
const USER_HZ = 100;

/**
 * CPU seconds a process has used (user + system, its threads and its waited-for children
 * included); with `mainThread`, its main thread's alone (the event loop's: the rest is
 * the collector's helper threads, libuv's pool, the children).
 */
function cpuOf(pid: number, o: { mainThread?: boolean } = {}): number {
  const stat = readFileSync(o.mainThread ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`, 'utf8');
  // The fields after the command name (which may hold spaces): utime, stime, cutime, cstime are 14-17.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12]) + (o.mainThread ? 0 : Number(f[13]) + Number(f[14]))) / USER_HZ;
}

/** A process's CPU seconds by thread name (V8's helpers, libuv's pool...), its waited-for children apart. */
function threadsOf(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name =
        tid === String(pid) ? 'main thread' : stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(name, (out.get(name) ?? 0) + (Number(f[11]) + Number(f[12])) / USER_HZ);
    }
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const g = f.slice(f.lastIndexOf(')') + 2).split(' ');
    out.set('its commands (waited-for children)', (Number(g[13]) + Number(g[14])) / USER_HZ);
  } catch {
    // Gone meanwhile: what was read.
  }
  return out;
}

/** The guest's CPU seconds: busy and idle (one CPU here: the processes share it). */
function guestCpu(): { busy: number; idle: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  return { busy: (f.reduce((a, b) => a + b, 0) - idle) / USER_HZ, idle: idle / USER_HZ };
}

/** Every process's CPU seconds (its threads included, its waited-for children not), by "pid command". */
function allProcesses(): Map<string, number> {
  const out = new Map<string, number>();
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(`${pid} ${name}`, (Number(f[11]) + Number(f[12])) / USER_HZ);
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

/** The guest's CPU time by kind (/proc/stat's first line), in seconds. */
function guestCpuByKind(): Record<string, number> {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const kinds = ['user', 'nice', 'system', 'idle', 'iowait', 'irq', 'softirq', 'steal'];
  return Object.fromEntries(kinds.map((k, i) => [k, (f[i] ?? 0) / USER_HZ]));
}

/** Who used the (single) CPU over a phase: a change's latency is the agent's CPU only if nothing else took it. */
function cpuShare(pids: { agent: number; api: number }) {
  const processes = allProcesses();
  const threads = threadsOf(pids.agent);
  const kinds = guestCpuByKind();
  const start = {
    agent: cpuOf(pids.agent),
    agentMain: cpuOf(pids.agent, { mainThread: true }),
    api: cpuOf(pids.api),
    bench: process.cpuUsage(),
    guest: guestCpu(),
  };
  const t0 = performance.now();
  return () => {
    const guest = guestCpu();
    const bench = process.cpuUsage(start.bench);
    return {
      wallS: (performance.now() - t0) / 1000,
      agentS: cpuOf(pids.agent) - start.agent,
      agentMainThreadS: cpuOf(pids.agent, { mainThread: true }) - start.agentMain,
      apiServerS: cpuOf(pids.api) - start.api,
      benchS: (bench.user + bench.system) / 1e6,
      guestBusyS: guest.busy - start.guest.busy,
      guestIdleS: guest.idle - start.guest.idle,
      /** The guest's time by kind over the phase (user, system, softirq...). */
      guestByKindS: Object.fromEntries(
        Object.entries(guestCpuByKind()).map(([k, v]) => [k, Math.round((v - kinds[k]!) * 100) / 100]),
      ),
      /** The agent's CPU by thread name, and its commands'. */
      agentThreadsS: Object.fromEntries(
        [...threadsOf(pids.agent)]
          .map(([t, v]) => [t, Math.round((v - (threads.get(t) ?? 0)) * 100) / 100] as const)
          .filter(([, v]) => v > 0)
          .sort((a, b) => b[1] - a[1]),
      ),
      /** The processes that used the most CPU over the phase (kernel threads included). */
      topProcessesS: [...allProcesses()]
        .map(([p, s]) => ({ process: p, s: Math.round((s - (processes.get(p) ?? 0)) * 100) / 100 }))
        .sort((a, b) => b.s - a.s)
        .slice(0, 6),
    };
  };
}

/** One phase's CPU in a line: who used the one CPU, the guest's time by kind, the busiest processes. */
function cpuLine(c: ReturnType<ReturnType<typeof cpuShare>>): string {
  const s = (v: number) => `${v.toFixed(1)} s`;
  return (
    `${s(c.wallS)} wall, one CPU: agent ${s(c.agentS)} (its main thread ${s(c.agentMainThreadS)}), API server ${s(c.apiServerS)}, this benchmark ${s(c.benchS)}; guest busy ${s(c.guestBusyS)}, idle ${s(c.guestIdleS)}; ` +
    `by kind ${Object.entries(c.guestByKindS)
      .filter(([, v]) => v > 0)
      .map(([k, v]) => `${k} ${s(v)}`)
      .join(', ')}; most CPU: ${c.topProcessesS.map((p) => `${p.process} ${s(p.s)}`).join(', ')}; ` +
    `the agent by thread: ${Object.entries(c.agentThreadsS)
      .map(([t, v]) => `${t} ${s(v)}`)
      .join(', ')}`
  );
}

/** Where the per-service families begin: the last part of the exposition. */
const PER_SERVICE = Buffer.from('\n# HELP portlb_ipvs_service_');

/**
 * The agent's /metrics, all of it received (the agent's work is what is measured), and
 * its text up to the per-service families: what this benchmark reads is before them. The
 * rest (40,000 lines, 4 MB at 10k) is counted and dropped as it arrives, not gathered,
 * decoded and split: this process shares the one CPU of UML with the agent, and its scrape
 * every second is Prometheus's, which runs elsewhere. A busy agent may take long to
 * answer (a scrape reads every service's counters from the kernel): minutes. A new
 * connection each time: a kept-alive one the agent closed while busy would fail the next.
 */
function metricsText(): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get(`${METRICS}/metrics`, { agent: false, timeout: 600_000 }, (res) => {
      let head = Buffer.alloc(0);
      let found = false;
      res.on('data', (chunk: Buffer) => {
        if (found) return;
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf(PER_SERVICE);
        if (end >= 0) {
          found = true;
          head = head.subarray(0, end + 1);
        }
      });
      res.on('end', () =>
        res.statusCode === 200
          ? resolve(head.toString('utf8'))
          : reject(new Error(`/metrics: HTTP ${res.statusCode}`)),
      );
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('/metrics: no answer within 600 s')));
    req.on('error', reject);
  });
}

async function scrape(): Promise<Map<string, number>> {
  const text = await metricsText();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-z0-9_]+)(?:\{[^}]*\})? (\S+)$/.exec(line);
    if (m && !out.has(m[1]!)) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

/**
 * The agent's garbage collections so far (prom-client's nodejs_gc_duration_seconds: one
 * observation per pause of the main thread), by kind: count, seconds, and how many were
 * longer than 10 ms and 100 ms (from its buckets).
 */
async function gcTotals(): Promise<
  Map<string, { count: number; sum: number; over10ms: number; over100ms: number }>
> {
  const text = await metricsText();
  const out = new Map<string, { count: number; sum: number; over10ms: number; over100ms: number }>();
  const of = (kind: string) => {
    let g = out.get(kind);
    if (!g) {
      g = { count: 0, sum: 0, over10ms: 0, over100ms: 0 };
      out.set(kind, g);
    }
    return g;
  };
  const within = new Map<string, number>();
  for (const m of text.matchAll(/^nodejs_gc_duration_seconds_(bucket|sum|count)\{([^}]*)\} (\S+)$/gm)) {
    const kind = /kind="([a-z]+)"/.exec(m[2]!)?.[1];
    if (!kind) continue;
    const v = Number(m[3]);
    if (m[1] === 'sum') of(kind).sum = v;
    else if (m[1] === 'count') of(kind).count = v;
    else {
      const le = /le="([^"]+)"/.exec(m[2]!)?.[1];
      if (le === '0.01' || le === '0.1') within.set(`${kind} ${le}`, v);
    }
  }
  for (const [kind, g] of out) {
    g.over10ms = g.count - (within.get(`${kind} 0.01`) ?? 0);
    g.over100ms = g.count - (within.get(`${kind} 0.1`) ?? 0);
  }
  return out;
}

/** The agent's per-stage pass time so far: seconds and passes, by stage. */
async function stageTotals(): Promise<Map<string, { sum: number; count: number }>> {
  const text = await metricsText();
  const out = new Map<string, { sum: number; count: number }>();
  for (const m of text.matchAll(
    /^portlb_sync_stage_duration_seconds_(sum|count)\{stage="([a-z]+)"\} (\S+)$/gm,
  )) {
    const e = out.get(m[2]!) ?? { sum: 0, count: 0 };
    e[m[1] as 'sum' | 'count'] = Number(m[3]);
    out.set(m[2]!, e);
  }
  return out;
}

/** Health-check probes so far, by result; and backends healthy of those checked. */
async function probes() {
  const text = await metricsText();
  const sum = (re: RegExp) => [...text.matchAll(re)].reduce((n, m) => n + Number(m[1]), 0);
  return {
    pass: sum(/^portlb_health_checks_total\{result="pass"\} (\S+)$/gm),
    fail: sum(/^portlb_health_checks_total\{result="fail"\} (\S+)$/gm),
    error: sum(/^portlb_health_checks_total\{result="error"\} (\S+)$/gm),
    healthy: sum(/^portlb_backends_healthy\{[^}]*\} (\S+)$/gm),
    checked: sum(/^portlb_backends_checked\{[^}]*\} (\S+)$/gm),
  };
}

async function memory(pid: number) {
  const m = await scrape();
  const text = await metricsText();
  // V8's heap by space: the young generation ("new") is reserved whole, used or not.
  const spacesMb = Object.fromEntries(
    [...text.matchAll(/^nodejs_heap_space_size_total_bytes\{space="([a-z_]+)"\} (\S+)$/gm)].map((s) => [
      s[1]!,
      Math.round(mb(Number(s[2])) * 10) / 10,
    ]),
  );
  return {
    spacesMb,
    rssMb: rssOf(pid),
    heapUsedMb: mb(m.get('nodejs_heap_size_used_bytes') ?? Number.NaN),
    heapTotalMb: mb(m.get('nodejs_heap_size_total_bytes') ?? Number.NaN),
    // Buffers and other memory V8 does not hold itself (netlink replies, sockets).
    externalMb: mb(m.get('nodejs_external_memory_bytes') ?? Number.NaN),
  };
}

/**
 * The agent as the image ships it (lb-agent/Dockerfile): its sources made JavaScript by
 * images/strip-types.js, so Node never loads its TypeScript stripper (about 25 MB of the
 * process), and NODE_ENV=production. The libraries, the addon and the protos are the checkout's.
 */
function shippedAgent(): string {
  const app = path.join(dir, 'app');
  mkdirSync(path.join(app, 'lb-agent'), { recursive: true });
  for (const part of ['bin', 'src'])
    cpSync(path.join(repo, 'lb-agent', part), path.join(app, 'lb-agent', part), { recursive: true });
  symlinkSync(path.join(repo, 'lb-agent', 'native'), path.join(app, 'lb-agent', 'native'));
  symlinkSync(path.join(repo, 'node_modules'), path.join(app, 'node_modules'));
  symlinkSync(path.join(repo, 'protos'), path.join(app, 'protos'));
  cpSync(path.join(repo, 'package.json'), path.join(app, 'package.json'));
  sh(
    `${process.execPath} ${path.join(repo, 'images', 'strip-types.js')} ${path.join(app, 'lb-agent', 'src')}`,
  );
  return path.join(app, 'lb-agent', 'bin', 'portlb.js');
}

const allocFile = (tag: string) => path.join(dir, `agent-${tag}.heapprofile`);

/** The window's allocations: the second SIGWINCH makes the agent write them (bench/alloc-profile.ts). */
async function writeAllocProfile(agent: ChildProcess, tag: string): Promise<string> {
  const file = allocFile(tag);
  rmSync(file, { force: true });
  agent.kill('SIGWINCH');
  await waitFor('the allocation profile written', async () => existsSync(file), { timeoutMs: 120_000 });
  console.log(sh(`${process.execPath} ${path.join(repo, 'bench', 'alloc-summary.ts')} ${file} --top 20`));
  return file;
}

/** The agent's heap after sync, written by V8 on SIGUSR2 (the agent stops while it writes). */
async function writeHeapSnapshot(agent: ChildProcess, tag: string): Promise<string> {
  const before = new Set(readdirSync(dir));
  const t0 = performance.now();
  agent.kill('SIGUSR2');
  let file = '';
  await waitFor(
    'the heap snapshot written',
    async () => {
      file = readdirSync(dir).find((f) => f.endsWith('.heapsnapshot') && !before.has(f)) ?? '';
      // V8 writes it while the agent's loop is stopped: a /healthz answer means it is done.
      return (
        file !== '' &&
        (await fetch(`${METRICS}/healthz`, { signal: AbortSignal.timeout(5_000) }).catch(() => undefined))
          ?.status === 200
      );
    },
    { timeoutMs: 600_000 },
  );
  const out = path.join(dir, `agent-${tag}.heapsnapshot`);
  renameSync(path.join(dir, file), out);
  console.log(
    `  heap snapshot in ${fmtMs(performance.now() - t0)}: ${out} (node bench/heap-summary.ts ${out})`,
  );
  return out;
}

const nowUs = () => Number(process.hrtime.bigint() / 1000n);

/**
 * With --profile or --loop-watch: the agent stopped gently (Node writes the profile, and
 * loop-watch.ts its late turns, on exit). With --profile, its functions with the most self
 * time over its whole life (sync, changes, resyncs). Then each turn of its event loop over
 * 50 ms in `window` (the resync-and-scrape window, on the monotonic clock): how much of it
 * the main thread ran and how much it waited for the CPU; with --profile, what the profile
 * shows running meanwhile (from the late timer's previous firing, 10 ms before it was due,
 * to its late firing).
 */
async function stopForDiagnostics(
  agent: ChildProcess,
  tag: string,
  window?: { fromUs: number; toUs: number },
) {
  if (!PROFILE && !LOOP_WATCH) return undefined;
  agent.kill('SIGTERM');
  await waitFor('the agent gone', () => agent.exitCode !== null || agent.signalCode !== null, {
    timeoutMs: 120_000,
  });
  const file = path.join(dir, `agent-${tag}.cpuprofile`);
  const profile = PROFILE ? (JSON.parse(readFileSync(file, 'utf8')) as CpuProfile) : undefined;
  const top = profile && topFunctions(profile, 15);
  if (top) {
    console.log(`  agent CPU profile (${file}), self time:`);
    for (const f of top)
      console.log(`    ${f.percent.toFixed(1).padStart(5)}%  ${fmtMs(f.ms).padStart(8)}  ${f.name}`);
  }
  if (!window) return { top };
  const late = (
    JSON.parse(readFileSync(path.join(dir, `loop-${tag}.json`), 'utf8')) as {
      dueUs: number;
      firedUs: number;
      runMs: number;
      waitMs: number;
    }[]
  ).filter((l) => l.firedUs >= window.fromUs && l.dueUs <= window.toUs && l.firedUs - l.dueUs >= 50_000);
  // The loop was held from (at the latest) the tick before the due one until the firing.
  const spans = late.map((l) => ({ fromUs: l.dueUs - 10_000, toUs: l.firedUs }));
  const ran = profile
    ? profileWindows(profile, spans, (url) => url.includes('/lb-agent/src/'))
    : spans.map(() => undefined);
  const held = late
    .map((l, i) => ({
      ms: (spans[i]!.toUs - spans[i]!.fromUs) / 1000,
      atS: (spans[i]!.fromUs - window.fromUs) / 1e6,
      runMs: l.runMs,
      waitMs: l.waitMs,
      ran: ran[i],
    }))
    .sort((a, b) => b.ms - a.ms);
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  console.log(
    `  event-loop turns over 50 ms in the resync-and-scrape window: ${held.length}, ${fmtMs(sum(held.map((w) => w.ms)))} in all; the main thread ran ${fmtMs(sum(held.map((w) => w.runMs)))} of it and waited for the CPU ${fmtMs(sum(held.map((w) => w.waitMs)))}${profile ? `; the profile's collector samples ${fmtMs(sum(held.map((w) => w.ran!.gcMs)))}, idle ${fmtMs(sum(held.map((w) => w.ran!.idleMs)))}` : ''}`,
  );
  const names = (xs: { name: string; ms: number }[]) => xs.map((x) => `${x.name} ${fmtMs(x.ms)}`).join('; ');
  if (profile) {
    const byTask = new Map<string, number>();
    for (const w of held) for (const t of w.ran!.tasks) byTask.set(t.name, (byTask.get(t.name) ?? 0) + t.ms);
    console.log(
      `    what ran, by task (the outermost own frame): ${names(
        [...byTask]
          .map(([name, ms]) => ({ name, ms }))
          .sort((a, b) => b.ms - a.ms)
          .slice(0, 6),
      )}`,
    );
  }
  for (const w of held.slice(0, 8))
    console.log(
      `    ${fmtMs(w.ms).padStart(8)} at ${w.atS.toFixed(1)} s: ran ${fmtMs(w.runMs)}, waited for the CPU ${fmtMs(w.waitMs)}${w.ran ? `; collector ${fmtMs(w.ran.gcMs)}; tasks: ${names(w.ran.tasks)}; innermost: ${names(w.ran.hot)}` : ''}`,
    );
  return {
    top,
    lateTurns: {
      count: held.length,
      ms: sum(held.map((w) => w.ms)),
      runMs: sum(held.map((w) => w.runMs)),
      waitMs: sum(held.map((w) => w.waitMs)),
      longest: held.slice(0, 20),
    },
  };
}

/**
 * Services created one at a time, each after its EndpointSlice (as if the slice controller
 * had been quicker): from the Service's creation on the API server until (1) its status
 * has an address (the allocation and the status write), (2) IPVS has the address with all
 * its endpoints, (3) the VIP filter lets its port in (`ipset test`: legacy iptables in
 * UML). Polled every 20 ms, in that order.
 */
async function measureCreates(kube: KubeApiClient, ipvs: NetlinkIpvsClient, n: number, count: number) {
  const rows: { statusMs: number; kernelMs: number; filterMs: number }[] = [];
  const limitMs = Math.max(120_000, n * 10);
  for (let c = 0; c < count; c++) {
    const i = n + c;
    const name = `svc-${i}`;
    await kube.create('endpointslices', {
      ...slice(
        i,
        Array.from({ length: M }, (_, j) => endpointIp(i, j)),
      ),
      kind: 'EndpointSlice',
      apiVersion: 'discovery.k8s.io/v1',
    });
    const t0 = performance.now();
    await kube.create('services', {
      kind: 'Service',
      apiVersion: 'v1',
      metadata: { name, namespace: ns(i) },
      spec: {
        type: 'LoadBalancer',
        loadBalancerClass: 'portlb.io/portlb',
        ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
      },
    });
    let address: string | undefined;
    const at: { statusMs?: number; kernelMs?: number; filterMs?: number } = {};
    while (at.filterMs === undefined) {
      if (performance.now() - t0 > limitMs)
        throw new Error(
          `Service ${name} not allocated, programmed and let in after ${fmtMs(limitMs)}: ${JSON.stringify(at)}`,
        );
      if (address === undefined) {
        const svc = (await kube.get('services', ns(i), name)) as {
          status?: { loadBalancer?: { ingress?: { ip?: string }[] } };
        };
        address = svc.status?.loadBalancer?.ingress?.[0]?.ip;
        if (address !== undefined) at.statusMs = performance.now() - t0;
      }
      if (address !== undefined && at.kernelMs === undefined) {
        const key: ServiceKey = { kind: 'address', family: 'ipv4', protocol: 'tcp', address, port: 80 };
        const ds = await ipvs.listDestinations(key).catch(() => []);
        if (ds.length === M) at.kernelMs = performance.now() - t0;
      }
      if (at.kernelMs !== undefined) {
        // Exit 0: the address and port are in the set the VIP filter accepts.
        if (
          spawnSync('ipset', ['test', 'portlb-services4', `${address},tcp:80`], { stdio: 'ignore' })
            .status === 0
        )
          at.filterMs = performance.now() - t0;
      }
      if (at.filterMs === undefined) await sleep(20);
    }
    rows.push(at as { statusMs: number; kernelMs: number; filterMs: number });
  }
  const figure = (xs: number[]) => ({
    p50: percentile(xs, 50),
    p99: percentile(xs, 99),
    max: Math.max(...xs),
  });
  const creates = {
    count,
    statusMs: figure(rows.map((r) => r.statusMs)),
    kernelMs: figure(rows.map((r) => r.kernelMs)),
    filterMs: figure(rows.map((r) => r.filterMs)),
    rows,
  };
  const line = (f: { p50: number; p99: number; max: number }) =>
    `p50 ${fmtMs(f.p50)}, p99 ${fmtMs(f.p99)}, max ${fmtMs(f.max)}`;
  console.log(
    `  Service created -> over ${count} creates, one at a time: address in its status ${line(creates.statusMs)}; IPVS has it ${line(creates.kernelMs)}; the VIP filter lets it in ${line(creates.filterMs)} (announced: not measured, no speaker)`,
  );
  return creates;
}

async function runSize(n: number, check?: string, run = 1) {
  const tag = `${n}${check ? '-checked' : ''}${REPS > 1 ? `-run${run}` : ''}`;
  console.log(
    `\n### ${n} Services x ${M} endpoints${check ? `, every backend health-checked (${check})` : ''}${REPS > 1 ? `, run ${run} of ${REPS}` : ''}`,
  );
  freshIpvsModule('mh');
  const seedFile = seed(n, check);
  const api = start(`api-${tag}`, [
    path.join(repo, 'test', 'harness', 'fake-kube-api-server.ts'),
    '--host',
    API,
    '--port',
    String(API_PORT),
    '--tls-dir',
    path.join(dir, 'tls'),
    '--seed',
    seedFile,
  ]);
  let agent: ChildProcess | undefined;
  const ipvs = NetlinkIpvsClient.open();
  try {
    await waitFor(
      'the API server',
      () => readFileSync(path.join(dir, `api-${tag}.log`), 'utf8').includes('listening'),
      { timeoutMs: 120_000 },
    );
    const ca = readFileSync(path.join(dir, 'tls', 'ca.crt'), 'utf8');
    const kube = new KubeApiClient(`https://${API}:${API_PORT}`, ca);
    const kubeconfig = path.join(dir, 'kubeconfig.yaml');
    writeFileSync(
      kubeconfig,
      `apiVersion: v1\nkind: Config\nclusters:\n- name: b\n  cluster: { server: "https://${API}:${API_PORT}", certificate-authority-data: ${Buffer.from(ca).toString('base64')} }\nusers:\n- name: a\n  user: { token: t }\ncontexts:\n- name: b\n  context: { cluster: b, user: a }\ncurrent-context: b\n`,
    );
    const config = path.join(dir, 'agent.yaml');
    writeFileSync(
      config,
      [
        'mode: kubernetes',
        'nodeName: lb1',
        `kubernetes: { kubeconfig: ${kubeconfig}, leaderElection: { enabled: false } }`,
        'pools: [{ name: bench, addresses: [10.96.0.0/12] }]',
        'defaults: { scheduler: mh, forwarding: nat }',
        `http: { listen: "127.0.0.1:9180" }`,
        `sync: { minIntervalMs: 100, resyncSeconds: ${RESYNC}, retryMaxSeconds: 5 }`,
        '',
      ].join('\n'),
    );
    const t0 = performance.now();
    agent = start(
      `agent-${tag}`,
      [
        ...NODE_FLAGS,
        ...(PROFILE
          ? ['--cpu-prof', '--cpu-prof-dir', dir, '--cpu-prof-name', `agent-${tag}.cpuprofile`]
          : []),
        ...(PROFILE || LOOP_WATCH ? ['--import', path.join(repo, 'bench', 'loop-watch.ts')] : []),
        ...(HEAP_SNAPSHOT ? ['--heapsnapshot-signal=SIGUSR2', '--diagnostic-dir', dir] : []),
        ...(ALLOC_PROFILE ? ['--import', path.join(repo, 'bench', 'alloc-profile.ts')] : []),
        agentBin,
        'agent',
        '--config',
        config,
      ],
      {
        ...(PROFILE || LOOP_WATCH ? { PORTLB_LOOP_WATCH_FILE: path.join(dir, `loop-${tag}.json`) } : {}),
        ...(ALLOC_PROFILE ? { PORTLB_ALLOC_PROFILE_FILE: allocFile(tag) } : {}),
        NODE_ENV: 'production',
      },
    );
    // Who used the one CPU until ready (the first pass at 10k: its IPVS writes take ten
    // times as long in the agent as alone in the same guest).
    const startCpu = cpuShare({ agent: agent.pid!, api: api.pid! });
    const outcome = await waitFor(
      'the agent ready',
      async () =>
        agent!.exitCode !== null
          ? `agent exited ${agent!.exitCode}`
          : (await fetch(`${METRICS}/readyz`, { signal: AbortSignal.timeout(10_000) }).catch(() => undefined))
              ?.status === 200 && 'ready',
      // The first pass grows with the size: 60-100 s at 10k in UML.
      { timeoutMs: Math.max(600_000, n * 40) },
    ).catch((err: Error) => err.message);
    if (outcome !== 'ready')
      throw new Error(
        `${outcome}; agent log: ${readFileSync(path.join(dir, `agent-${tag}.log`), 'utf8').slice(-2000)}`,
      );
    const readyMs = performance.now() - t0;
    const readyCpu = startCpu();
    const programmed = (await ipvs.listServices()).length;
    if (programmed !== n) throw new Error(`ready with ${programmed} services in the kernel, expected ${n}`);
    await sleep(2000);
    const afterSync = await memory(agent.pid!);
    console.log(
      `  start -> ready ${fmtMs(readyMs)}; RSS ${afterSync.rssMb.toFixed(0)} MB, heap used ${afterSync.heapUsedMb.toFixed(0)} of ${afterSync.heapTotalMb.toFixed(0)} MB (${Object.entries(
        afterSync.spacesMb,
      )
        .map(([s, v]) => `${s} ${v}`)
        .join(', ')}), external ${afterSync.externalMb.toFixed(0)} MB`,
    );
    console.log(`    CPU from start to ready: ${cpuLine(readyCpu)}`);
    const heapSnapshot = HEAP_SNAPSHOT ? await writeHeapSnapshot(agent, tag) : undefined;
    if (n === 0) {
      // The baseline: what the agent costs before it holds anything.
      return {
        services: 0,
        endpoints: M,
        run,
        readyMs,
        readyCpu,
        afterSync,
        heapSnapshot,
        diagnostics: await stopForDiagnostics(agent, tag),
      };
    }

    // One change at a time: a slice's first endpoint moves to a new address; the kernel is
    // polled (one service's destinations, over netlink) until it lists that address.
    const total: number[] = [];
    const apiWrite: number[] = [];
    const stagesBefore = await stageTotals();
    const CHANGES = changesFor(n);
    // A pass walks every Service (1.5-3 s at 10k in UML): the limit grows with the size.
    const changeLimitMs = Math.max(60_000, n * 2);
    const cpu = cpuShare({ agent: agent.pid!, api: api.pid! });
    for (let c = 0; c < CHANGES; c++) {
      const i = (c * 7919) % n;
      const endpoints = Array.from({ length: M }, (_, j) => endpointIp(i, j));
      const moved = `192.168.${(c >> 8) & 255}.${c & 255}`;
      endpoints[0] = moved;
      const key: ServiceKey = { kind: 'address', family: 'ipv4', protocol: 'tcp', address: vip(i), port: 80 };
      const tc = performance.now();
      await kube.patch('endpointslices', ns(i), `svc-${i}-abc`, { endpoints: slice(i, endpoints).endpoints });
      apiWrite.push(performance.now() - tc);
      for (;;) {
        const ds = await ipvs.listDestinations(key);
        if (ds.some((d) => d.address === moved && d.weight > 0)) break;
        if (performance.now() - tc > changeLimitMs)
          throw new Error(`change ${c} not in the kernel after ${fmtMs(changeLimitMs)}`);
        // Gently: this guest has one CPU, and a tight poll would slow the agent it measures.
        await sleep(10);
      }
      total.push(performance.now() - tc);
      if ((c + 1) % 100 === 0) console.log(`  ${c + 1}/${CHANGES} changes`);
    }
    const changesCpu = cpu();
    const afterChanges = await memory(agent.pid!);
    // Where the passes of the change phase spent their time (from the agent's own histogram).
    const stages: Record<string, { passes: number; meanMs: number; totalMs: number }> = {};
    for (const [stage, e] of await stageTotals()) {
      const b = stagesBefore.get(stage) ?? { sum: 0, count: 0 };
      const passes = e.count - b.count;
      if (passes > 0)
        stages[stage] = {
          passes,
          meanMs: ((e.sum - b.sum) * 1000) / passes,
          totalMs: (e.sum - b.sum) * 1000,
        };
    }
    console.log(
      `  pass stages during the changes (passes, mean): ${Object.entries(stages)
        .map(([s, v]) => `${s} ${v.passes}x ${fmtMs(v.meanMs)}`)
        .join(', ')}`,
    );
    const slowest = total.indexOf(Math.max(...total));
    const latency = {
      p50: percentile(total, 50),
      p99: percentile(total, 99),
      max: Math.max(...total),
      apiWriteP50: percentile(apiWrite, 50),
      // The slowest change: how much of it was the API server's write.
      slowest: { change: slowest, totalMs: total[slowest]!, apiWriteMs: apiWrite[slowest]! },
      // From the API server's answer to the kernel: the agent's share (the watch event may
      // leave before the answer, so a lower bound of it), with this benchmark's 10 ms poll.
      afterWrite: (() => {
        const after = total.map((t, i) => t - apiWrite[i]!);
        return { p50: percentile(after, 50), p99: percentile(after, 99), max: Math.max(...after) };
      })(),
    };
    console.log(
      `  EndpointSlice change -> kernel over ${CHANGES} changes: p50 ${fmtMs(latency.p50)}, p99 ${fmtMs(latency.p99)}, max ${fmtMs(latency.max)} (the API write itself: p50 ${fmtMs(latency.apiWriteP50)}; in the slowest change ${fmtMs(latency.slowest.apiWriteMs)})`,
    );
    console.log(
      `    from the API server's answer to the kernel: p50 ${fmtMs(latency.afterWrite.p50)}, p99 ${fmtMs(latency.afterWrite.p99)}, max ${fmtMs(latency.afterWrite.max)}`,
    );
    console.log(
      `  after the changes: RSS ${afterChanges.rssMb.toFixed(0)} MB, heap used ${afterChanges.heapUsedMb.toFixed(0)} MB`,
    );
    const s = (v: number) => `${v.toFixed(1)} s`;
    console.log(`  CPU over the changes: ${cpuLine(changesCpu)}`);

    // Full resyncs (every RESYNC s) while /metrics is scraped every second; prom-client's
    // event-loop figures cover the time since the previous scrape.
    await scrape();
    const gcBefore = await gcTotals();
    const probesBefore = check ? await probes() : undefined;
    const scrapeStarted = performance.now();
    const windowFromUs = nowUs();
    if (ALLOC_PROFILE) agent.kill('SIGWINCH');
    const windowCpu = cpuShare({ agent: agent.pid!, api: api.pid! });
    const loopMax: number[] = [];
    const loopP99: number[] = [];
    // For SCRAPE seconds (at least two scrapes): at 10k one scrape can take many seconds.
    for (let s = 0; s < 2 || performance.now() - scrapeStarted < SCRAPE * 1000; s++) {
      await sleep(1000);
      const m = await scrape();
      loopMax.push((m.get('nodejs_eventloop_lag_max_seconds') ?? Number.NaN) * 1000);
      loopP99.push((m.get('nodejs_eventloop_lag_p99_seconds') ?? Number.NaN) * 1000);
    }
    const loop = {
      maxMs: Math.max(...loopMax),
      p99Ms: Math.max(...loopP99),
      perScrapeMaxMs: spread(loopMax),
      cpu: windowCpu(),
    };
    console.log(
      `  event loop over ${SCRAPE} s (full resync every ${RESYNC} s, /metrics every 1 s): longest delay ${fmtMs(loop.maxMs)}, worst per-second p99 ${fmtMs(loop.p99Ms)}`,
    );
    console.log(
      `    CPU over the window (${s(loop.cpu.wallS)} wall, one CPU): agent ${s(loop.cpu.agentS)} (its main thread ${s(loop.cpu.agentMainThreadS)}), API server ${s(loop.cpu.apiServerS)}, this benchmark ${s(loop.cpu.benchS)} (its scrapes); guest busy ${s(loop.cpu.guestBusyS)}, idle ${s(loop.cpu.guestIdleS)}`,
    );
    console.log(
      `      the guest's time by kind: ${Object.entries(loop.cpu.guestByKindS)
        .map(([k, v]) => `${k} ${s(v)}`)
        .join(', ')}; most CPU: ${loop.cpu.topProcessesS.map((p) => `${p.process} ${s(p.s)}`).join(', ')}`,
    );
    // What the collector took of it: each pause holds the event loop.
    const gc: Record<string, { pauses: number; seconds: number; over10ms: number; over100ms: number }> = {};
    for (const [kind, g] of await gcTotals()) {
      const b = gcBefore.get(kind) ?? { count: 0, sum: 0, over10ms: 0, over100ms: 0 };
      if (g.count > b.count)
        gc[kind] = {
          pauses: g.count - b.count,
          seconds: g.sum - b.sum,
          over10ms: g.over10ms - b.over10ms,
          over100ms: g.over100ms - b.over100ms,
        };
    }
    console.log(
      `    garbage collection meanwhile (pauses of the main thread): ${
        Object.entries(gc)
          .map(
            ([k, g]) =>
              `${k} ${g.pauses} (${fmtMs(g.seconds * 1000)}; ${g.over10ms} over 10 ms, ${g.over100ms} over 100 ms)`,
          )
          .join(', ') || 'none'
      }`,
    );
    let health: Record<string, number> | undefined;
    if (probesBefore) {
      const now = await probes();
      const seconds = (performance.now() - scrapeStarted) / 1000;
      health = {
        probesPerSecond:
          (now.pass + now.fail + now.error - probesBefore.pass - probesBefore.fail - probesBefore.error) /
          seconds,
        passed: now.pass - probesBefore.pass,
        failed: now.fail - probesBefore.fail,
        errors: now.error - probesBefore.error,
        healthy: now.healthy,
        checked: now.checked,
      };
      console.log(
        `  health checks over the same ${seconds.toFixed(0)} s: ${health.probesPerSecond!.toFixed(0)} probes/s (pass ${health.passed}, fail ${health.failed}, error ${health.errors}); ${health.healthy}/${health.checked} backends healthy`,
      );
    }
    const windowToUs = nowUs();
    const allocProfile = ALLOC_PROFILE ? await writeAllocProfile(agent, tag) : undefined;
    const creates = CREATES > 0 ? await measureCreates(kube, ipvs, n, CREATES) : undefined;
    return {
      ...(check ? { healthCheck: check, health } : {}),
      services: n,
      endpoints: M,
      run,
      readyMs,
      readyCpu,
      afterSync,
      afterChanges,
      changes: CHANGES,
      latency,
      stages,
      changesCpu,
      eventLoop: { ...loop, gc },
      creates,
      heapSnapshot,
      allocProfile,
      diagnostics: await stopForDiagnostics(agent, tag, { fromUs: windowFromUs, toUs: windowToUs }),
    };
  } catch (err) {
    // Why the agent is gone, if it is: its exit, and the guest kernel's OOM killer.
    if (agent && (agent.exitCode !== null || agent.signalCode !== null)) {
      console.error(`  the agent exited (code ${agent.exitCode}, signal ${agent.signalCode})`);
      const oom = sh('dmesg | grep -i -E "out of memory|oom-kill|killed process" | tail -5 || true');
      if (oom.trim()) console.error(`  guest kernel:\n${oom}`);
    }
    throw err;
  } finally {
    agent?.kill('SIGKILL');
    api.kill('SIGTERM');
    ipvs.close();
    await sleep(500);
    // What the agent left (services, VIPs, netfilter rules that hold ip_vs), so that the
    // next size starts from a freshly loaded module.
    sh(
      `${process.execPath} ${path.join(repo, 'lb-agent', 'bin', 'portlb.js')} cleanup --config ${path.join(dir, 'agent.yaml')} > ${path.join(dir, `cleanup-${tag}.log`)} 2>&1`,
    );
  }
}

rmSync(dir, { recursive: true, force: true });
mkdirSync(dir, { recursive: true });
const agentBin = shippedAgent();
// The agent's VIPs and SNAT need nothing else here; its logs go to files under `dir`.
sh('ip link set lo up');
let listener: ChildProcess | undefined;
if (CHECK) {
  // Every endpoint address (and every moved one) is local, and one listener answers on the
  // endpoints' port: each probe is a real connection, as cheap as it can be.
  sh('ip route add local 172.16.0.0/12 dev lo && ip route add local 192.168.0.0/16 dev lo');
  listener = start('listener', [
    '-e',
    "require('node:net').createServer((s) => s.on('error', () => {})).listen(8080, '0.0.0.0', () => console.log('listening'))",
  ]);
}
const sized: Awaited<ReturnType<typeof runSize>>[] = [];
const baselines: Awaited<ReturnType<typeof runSize>>[] = [];
for (const n of sizes) {
  for (let run = 1; run <= REPS; run++) {
    if (n === 0) {
      baselines.push(await runSize(0, undefined, run));
      continue;
    }
    // With checks, the same size without them first: the baseline of the same boot.
    if (CHECK) sized.push(await runSize(n, undefined, run));
    sized.push(await runSize(n, CHECK, run));
    // What is done so far is kept, should a larger size not finish.
    save(true);
  }
}
type Sized = Extract<Awaited<ReturnType<typeof runSize>>, { latency: unknown }>;
const results = sized.filter((r): r is Sized => 'latency' in r);
/** The median run's RSS of the agent holding nothing (one run: that run's). */
const baseline = baselines.length
  ? {
      rssMb: median(baselines.map((b) => b.afterSync.rssMb)),
      heapUsedMb: median(baselines.map((b) => b.afterSync.heapUsedMb)),
    }
  : undefined;

/** Each size's figures against the targets over its runs: median, min and max. */
function summary(runs: readonly Sized[]) {
  const of = (f: (r: Sized) => number | undefined) => {
    const xs = runs.map(f).filter((x): x is number => x !== undefined);
    return xs.length ? spread(xs) : undefined;
  };
  return {
    services: runs[0]!.services,
    ...('healthCheck' in runs[0]! ? { healthCheck: runs[0]!.healthCheck } : {}),
    runs: runs.length,
    readyMs: of((r) => r.readyMs),
    rssAfterSyncMb: of((r) => r.afterSync.rssMb),
    rssAfterChangesMb: of((r) => r.afterChanges.rssMb),
    changeP50Ms: of((r) => r.latency.p50),
    changeP99Ms: of((r) => r.latency.p99),
    changeAfterWriteP99Ms: of((r) => r.latency.afterWrite.p99),
    loopMaxMs: of((r) => r.eventLoop.maxMs),
    createKernelP50Ms: of((r) => r.creates?.kernelMs.p50),
  };
}
const groups = new Map<string, Sized[]>();
for (const r of results) {
  const key = `${r.services}${'healthCheck' in r ? '-checked' : ''}`;
  groups.set(key, [...(groups.get(key) ?? []), r]);
}
const summaries = [...groups.values()].map(summary);

function save(partial: boolean): void {
  writeResults(CHECK ? 'agent-health-checks' : 'agent', {
    description: `the whole agent in its own process (Kubernetes mode, fake API server in another process, UML kernel IPVS, no speaker)${CHECK ? `; every backend health-checked: ${CHECK}` : ''}`,
    ...(partial ? { partial: `sizes done so far of ${sizes.join(', ')}` } : {}),
    targets: TARGETS,
    reps: REPS,
    ...(baselines.length ? { baseline: REPS > 1 ? baselines : baselines[0] } : {}),
    ...(partial ? {} : { summary: summaries }),
    results: sized.filter((r): r is Sized => 'latency' in r),
  });
}

console.log('\nagainst the targets (issue 11):');
if (baseline)
  console.log(
    `  no Service (the baseline${REPS > 1 ? `, median of ${REPS} runs` : ''}): RSS ${baseline.rssMb.toFixed(0)} MB, heap used ${baseline.heapUsedMb.toFixed(0)} MB`,
  );
if (REPS > 1) {
  const fig = (s: { median: number; min: number; max: number } | undefined, f: (x: number) => string) =>
    s ? `${f(s.median)} (${f(s.min)}-${f(s.max)})` : '-';
  const MB = (x: number) => `${x.toFixed(0)} MB`;
  for (const s of summaries) {
    const at10k = s.services >= 10_000;
    console.log(
      `  ${s.services} Services${'healthCheck' in s ? ' (checked)' : ''}, median of ${s.runs} runs (min-max): start -> ready ${fig(s.readyMs, fmtMs)}; RSS after sync ${fig(s.rssAfterSyncMb, MB)}, after the changes ${fig(s.rssAfterChangesMb, MB)}${at10k ? ` (target <= ${TARGETS.rssMb10k} MB)` : ''}; change -> kernel p50 ${fig(s.changeP50Ms, fmtMs)}, p99 ${fig(s.changeP99Ms, fmtMs)}${at10k ? ` (target <= ${TARGETS.p99Ms10k} ms)` : ''}, of it after the API's answer p99 ${fig(s.changeAfterWriteP99Ms, fmtMs)}; event loop longest ${fig(s.loopMaxMs, fmtMs)} (target <= ${TARGETS.loopMaxMs} ms)${s.createKernelP50Ms ? `; Service created -> in IPVS p50 ${fig(s.createKernelP50Ms, fmtMs)}` : ''}`,
    );
  }
  console.log('  each run:');
}
for (const r of results) {
  const at10k = r.services >= 10_000;
  const over = baseline
    ? ` (${(r.afterChanges.rssMb - baseline.rssMb).toFixed(0)} MB over the baseline)`
    : '';
  console.log(
    `  ${r.services} Services${'healthCheck' in r ? ' (checked)' : ''}${REPS > 1 ? `, run ${r.run}` : ''}: RSS after sync ${r.afterSync.rssMb.toFixed(0)} MB, after ${r.changes} changes ${r.afterChanges.rssMb.toFixed(0)} MB${over}${at10k ? ` (target <= ${TARGETS.rssMb10k} MB)` : ''}; change -> kernel p99 ${fmtMs(r.latency.p99)}${at10k ? ` (target <= ${TARGETS.p99Ms10k} ms)` : ''}; event loop longest ${fmtMs(r.eventLoop.maxMs)} (target <= ${TARGETS.loopMaxMs} ms)${r.creates ? `; Service created -> in IPVS p50 ${fmtMs(r.creates.kernelMs.p50)} / p99 ${fmtMs(r.creates.kernelMs.p99)}, let in by the VIP filter p50 ${fmtMs(r.creates.filterMs.p50)} / p99 ${fmtMs(r.creates.filterMs.p99)}` : ''}`,
  );
}
if (CHECK) {
  console.log('\nhealth checks against their baseline (the same size without checks, same boot):');
  for (let i = 0; i + 1 < results.length; i += 2) {
    const [base, checked] = [results[i]!, results[i + 1]!];
    const passMean = (r: typeof base) =>
      Object.entries(r.stages)
        .filter(([stage]) => stage !== 'readback') // beside the passes, not in them
        .reduce((n, [, s]) => n + s.totalMs, 0) / Math.max(1, r.stages.ipvs?.passes ?? 1);
    console.log(
      `  ${checked.services * M} backends: event loop longest ${fmtMs(checked.eventLoop.maxMs)} vs ${fmtMs(base.eventLoop.maxMs)} (target <= ${TARGETS.loopMaxMs} ms); pass mean ${fmtMs(passMean(checked))} vs ${fmtMs(passMean(base))}; change -> kernel p99 ${fmtMs(checked.latency.p99)} vs ${fmtMs(base.latency.p99)} (the new backend is probed before it serves); RSS ${checked.afterChanges.rssMb.toFixed(0)} vs ${base.afterChanges.rssMb.toFixed(0)} MB`,
    );
  }
}
save(false);
// The listener would keep this process (and the guest) running.
listener?.kill();
