// IPVS data-plane benchmark, inside the kernel harness (npm run bench -- ipvs).
// Our batched netlink client against ipvsadm on the same kernel in the same boot:
// create N services x D destinations from empty (vs `ipvsadm -R`), dump everything (vs
// `ipvsadm -Ln`), a converged pass (must plan zero writes), and a 1% change, once with a
// full read-back and once through the data plane as the agent runs it (the state cache,
// the connection counts of services losing a backend, the writes). Each figure is the
// median of --reps runs with min and max; every run starts from a freshly loaded ip_vs and
// repeats the same sequence: deleted destinations linger on the kernel's trash list and
// slow later adds (FIELD-NOTES), so reusing a table would measure the trash, not us.
import { fstatSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { DataPlane } from '../lb-agent/src/agent/data-plane.ts';
import { FakeNetfilter } from '../lb-agent/src/agent/netfilter.ts';
import { FakeAddressManager } from '../lb-agent/src/agent/vips.ts';
import type { DesiredState } from '../lb-agent/src/core/desired.ts';
import { applyOperations } from '../lb-agent/src/ipvs/apply.ts';
import { NetlinkIpvsClient } from '../lb-agent/src/ipvs/netlink-client.ts';
import { planIpvs } from '../lb-agent/src/ipvs/planner.ts';
import { type RealServer, type ServiceSpec, serviceId } from '../lb-agent/src/ipvs/types.ts';
import { systemClock } from '../lb-agent/src/util/clock.ts';
import {
  type CpuProfile,
  fmtMs,
  freshIpvsModule,
  type Row,
  report,
  sh,
  spread,
  timed,
  topFunctions,
  writeResults,
} from './lib.ts';

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '1000,10000' },
    dests: { type: 'string', default: '10' },
    scheduler: { type: 'string', default: 'rr' },
    reps: { type: 'string', default: '3' },
    /** The first run's create and converged pass under the CPU profiler: their top functions by self time. */
    profile: { type: 'boolean', default: false },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  console.log(
    'Usage: npm run bench -- ipvs [--sizes 1000,10000] [--dests 10] [--scheduler rr] [--reps 3] [--profile]\n' +
      '  --profile: the first run of each size creates and reads under the CPU profiler (that run is slower: its create and converged pass are left out of the figures)',
  );
  process.exit(0);
}
if (process.env.PORTLB_IN_UML !== '1') {
  console.error('bench/ipvs.ts runs inside the kernel harness: npm run bench -- ipvs');
  process.exit(2);
}
const sizes = values.sizes.split(',').map(Number);
const dests = Number(values.dests);
const scheduler = values.scheduler;
const reps = Number(values.reps);
if (values.profile && reps < 2) {
  console.error(
    'bench ipvs: --profile leaves the first run out of the create and converged figures: give --reps 2 or more',
  );
  process.exit(2);
}

/**
 * What the rest of the agent feels while it reads the whole table with stats (a pass's
 * read-back, a /metrics scrape): the event loop's longest delay and its p99, and the
 * read's duration; never yielding (how every read ran before) against yielding every
 * `sliceMs`, alternated, `reps` times each, from the same table.
 */
async function eventLoopDuringDump(client: NetlinkIpvsClient) {
  const runs: Record<'never' | 'sliced', { maxMs: number[]; p99Ms: number[]; readMs: number[] }> = {
    never: { maxMs: [], p99Ms: [], readMs: [] },
    sliced: { maxMs: [], p99Ms: [], readMs: [] },
  };
  for (let r = 0; r < reps; r++) {
    for (const mode of ['never', 'sliced'] as const) {
      const h = monitorEventLoopDelay({ resolution: 5 });
      h.enable();
      // Its timer measures from its previous tick: the first tick has none, so it must have
      // ticked before the read, or a read that never yields leaves no trace at all.
      // (reset() would forget that tick too: its few 5 ms samples stay.)
      await new Promise((resolve) => setTimeout(resolve, 20));
      const t = await timed(() =>
        client.getTable({ stats: true, sliceMs: mode === 'never' ? Infinity : undefined }),
      );
      // The histogram's timer records a stall only when it runs again: a read that never
      // yielded would otherwise show no delay at all (0 ms in the runs before this wait).
      await new Promise((resolve) => setTimeout(resolve, 30));
      h.disable();
      runs[mode].maxMs.push(h.max / 1e6);
      runs[mode].p99Ms.push(h.percentile(99) / 1e6);
      runs[mode].readMs.push(t.ms);
    }
  }
  const out = Object.fromEntries(
    Object.entries(runs).map(([mode, x]) => [
      mode,
      { maxMs: spread(x.maxMs), p99Ms: spread(x.p99Ms), readMs: spread(x.readMs) },
    ]),
  ) as Record<
    'never' | 'sliced',
    { maxMs: ReturnType<typeof spread>; p99Ms: ReturnType<typeof spread>; readMs: ReturnType<typeof spread> }
  >;
  const f = (s: ReturnType<typeof spread>) => `${fmtMs(s.median)} (min ${fmtMs(s.min)}, max ${fmtMs(s.max)})`;
  console.log(`\nevent loop during a full read with stats, median of ${reps} runs each:`);
  for (const mode of ['never', 'sliced'] as const) {
    const x = out[mode];
    console.log(
      `  ${mode === 'never' ? 'never yielding (before)' : 'yielding every 8 ms   '}: longest delay ${f(x.maxMs)}, p99 ${f(x.p99Ms)}; read ${f(x.readMs)}`,
    );
  }
  console.log(
    `  longest delay ${(out.never.maxMs.median / out.sliced.maxMs.median).toFixed(0)}x shorter (target <= 50 ms: ${out.sliced.maxMs.median <= 50 ? 'met' : 'NOT met'}); the read ${(out.sliced.readMs.median / out.never.readMs.median).toFixed(2)}x as long`,
  );
  return out;
}

const freshIpvs = () => freshIpvsModule(scheduler);

// --profile: V8's CPU profiler in this process, around one measured step.
const profiler = new Session();
async function startProfile(): Promise<void> {
  profiler.connect();
  await profiler.post('Profiler.enable');
  await profiler.post('Profiler.start');
}
async function stopProfile(): Promise<ReturnType<typeof topFunctions>> {
  const { profile } = await profiler.post('Profiler.stop');
  profiler.disconnect();
  return topFunctions(profile as unknown as CpuProfile, 20);
}

// Services on 10.200.0.0/16, destinations on 10.201.0.0/16 (routed through a dummy).
const svcAddr = (i: number) => `10.200.${i >> 8}.${i & 255}`;
const destAddr = (i: number, j: number) => `10.201.${((i * dests + j) >> 8) & 255}.${(i * dests + j) & 255}`;

function desiredTable(n: number): ServiceSpec[] {
  return Array.from({ length: n }, (_, i) => ({
    service: {
      key: { kind: 'address', family: 'ipv4', protocol: 'tcp', address: svcAddr(i), port: 80 },
      scheduler,
      schedulerFlags: [],
      onePacket: false,
      persistence: undefined,
      persistenceEngine: undefined,
    },
    destinations: Array.from(
      { length: dests },
      (_, j): RealServer => ({
        family: 'ipv4',
        address: destAddr(i, j),
        port: 8080 + (Math.floor((i * dests + j) / 65536) % 100),
        forward: 'nat',
        weight: 1,
        upperThreshold: 0,
        lowerThreshold: 0,
      }),
    ),
  }));
}

function restoreFile(specs: ServiceSpec[]): string {
  const lines: string[] = [];
  for (const s of specs) {
    const k = s.service.key;
    if (k.kind !== 'address') continue;
    lines.push(`-A -t ${k.address}:${k.port} -s ${scheduler}`);
    for (const d of s.destinations)
      lines.push(`-a -t ${k.address}:${k.port} -r ${d.address}:${d.port} -m -w ${d.weight}`);
  }
  const file = '/tmp/ipvsadm-restore.txt';
  writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

/** 1% of the services get one backend replaced and another reweighted: 3 writes each. */
function changeOnePercent(specs: ServiceSpec[], salt: number): ServiceSpec[] {
  const step = 100;
  return specs.map((s, i) => {
    if (i % step !== salt % step) return s;
    const destinations = s.destinations.map((d, j) =>
      j === 0
        ? { ...d, weight: d.weight + 1 }
        : j === s.destinations.length - 1
          ? { ...d, port: d.port + 1000 }
          : d,
    );
    return { ...s, destinations };
  });
}

const plan = (
  desired: ServiceSpec[],
  actual: Parameters<typeof planIpvs>[0]['actual'],
  unchanged?: (s: ServiceSpec) => boolean,
) =>
  planIpvs({ desired, actual, owns: () => true, now: 0, draining: new Map(), drainTimeoutMs: 0, unchanged });

sh(
  'ip link add bench0 type dummy && ip link set bench0 up && ip addr add 10.202.0.1/24 dev bench0 && ip route add 10.201.0.0/16 dev bench0',
);
const results: Record<string, unknown>[] = [];

// Warm-up (not reported): JavaScript is compiled on first use, ipvsadm is native code.
{
  freshIpvs();
  const warm = NetlinkIpvsClient.open();
  const specs = desiredTable(300);
  await applyOperations(warm, plan(specs, []).operations);
  plan(specs, await warm.getTable({ stats: true }));
  warm.close();
}

/** The data plane over the real client, as the agent drives it (VIPs and netfilter faked). */
function dataPlaneOver(client: NetlinkIpvsClient): DataPlane {
  return new DataPlane({
    ipvs: client,
    addresses: new FakeAddressManager(),
    netfilter: new FakeNetfilter(),
    vipFilter: false,
    snat: false,
    owns: () => true,
    // A removed backend is drained as in the agent: its connection counts are read first.
    drainTimeoutMs: 30_000,
    clock: systemClock,
  });
}

const stateOf = (specs: ServiceSpec[]): DesiredState => ({
  virtualServices: specs.map((spec) => ({
    owner: serviceId(spec.service.key),
    vip: spec.service.key.kind === 'address' ? spec.service.key.address : '',
    spec,
    snat: false,
    notrack: false,
    usable: spec.destinations.length,
  })),
  vips: [],
  skipped: [],
  warnings: [],
  checks: [],
});

const TARGETS = { createVsIpvsadm: 50, convergedMs: 1000 };
console.log(`node flags: ${process.execArgv.join(' ') || '(none)'} (the agent's, from bench/run.ts)`);

/**
 * One system call's round trip in this guest, microseconds: in UML every call goes through
 * the host, and a whole-table read is one dump per service (the kernel has no dump of every
 * destination), each a request and a receive. The read's floor is what those calls cost.
 */
function systemCallUs(): number {
  const calls = 20_000;
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) fstatSync(0);
  return ((performance.now() - t0) * 1000) / calls;
}

for (const n of sizes) {
  console.log(`\n### ${n} services x ${dests} destinations, scheduler ${scheduler}, ${reps} runs each`);
  const desired = desiredTable(n);
  const changedA = changeOnePercent(desired, 1);
  const changedB = changeOnePercent(changedA, 2);
  const samples = new Map<string, number[]>();
  const add = (name: string, ms: number) => samples.set(name, [...(samples.get(name) ?? []), ms]);
  let ops = 0;
  let fullWrites = 0;
  let incWrites = 0;
  let eventLoop: Awaited<ReturnType<typeof eventLoopDuringDump>> | undefined;
  let createProfile: ReturnType<typeof topFunctions> | undefined;
  let convergedProfile: ReturnType<typeof topFunctions> | undefined;
  for (let r = 0; r < reps; r++) {
    process.stdout.write(`  run ${r + 1}/${reps}: create`);
    // Every run from the same state: a freshly loaded ip_vs, then the same sequence.
    freshIpvs();
    add('system call us', systemCallUs());
    const client = NetlinkIpvsClient.open();
    // Where the create's time goes: this process's CPU in JavaScript (user: plan, encode,
    // decode the ACKs) and in the kernel (system: netlink and IPVS handle each message in
    // the sending call), the rest waiting.
    const profiling = values.profile && r === 0;
    if (profiling) await startProfile();
    const cpu0 = process.cpuUsage();
    const planned = await timed(() => plan(desired, []).operations);
    const create = await timed(async () => applyOperations(client, planned.value));
    const cpu = process.cpuUsage(cpu0);
    if (profiling) createProfile = await stopProfile();
    else {
      add('create plan', planned.ms);
      add('create user cpu', cpu.user / 1000);
      add('create system cpu', cpu.system / 1000);
    }
    create.ms += planned.ms;
    if (create.value.failed.length)
      throw new Error(`create failed: ${create.value.failed[0]?.error.message}`);
    ops = create.value.applied.length;
    if (!profiling) add('create', create.ms);
    process.stdout.write(', dumps');
    add('dump', (await timed(() => client.getTable())).ms);
    const dumpCpu0 = process.cpuUsage();
    add('dump stats', (await timed(() => client.getTable({ stats: true }))).ms);
    const dumpCpu = process.cpuUsage(dumpCpu0);
    add('dump stats user cpu', dumpCpu.user / 1000);
    add('dump stats system cpu', dumpCpu.system / 1000);
    add('ipvsadm -Ln', (await timed(() => sh('ipvsadm -Ln > /dev/null'))).ms);
    add('ipvsadm -Ln --stats', (await timed(() => sh('ipvsadm -Ln --stats > /dev/null'))).ms);
    if (r === 0) eventLoop = await eventLoopDuringDump(client);
    process.stdout.write(', converged');
    if (profiling) await startProfile();
    const converged = await timed(async () => plan(desired, await client.getTable()));
    if (profiling) convergedProfile = await stopProfile();
    if (converged.value.operations.length !== 0)
      throw new Error(`converged pass planned ${converged.value.operations.length} writes`);
    if (!profiling) add('converged', converged.ms);
    process.stdout.write(', 1% change (full read-back)');
    const full = await timed(async () =>
      applyOperations(client, plan(changedA, await client.getTable()).operations),
    );
    fullWrites = full.value.applied.length;
    add('change full', full.ms);
    process.stdout.write(', 1% change (data plane, incremental)');
    // The agent's own path: a full pass leaves the cache verified, then an incremental pass
    // plans against it, reads the connection counts of services losing a backend, writes.
    const dp = dataPlaneOver(client);
    const base = await dp.apply(stateOf(changedA), true);
    if (base.failures.length) throw new Error(`data plane full pass: ${base.failures[0]?.message}`);
    const inc = await timed(() => dp.apply(stateOf(changedB), false));
    if (inc.value.failures.length) throw new Error(`incremental pass: ${inc.value.failures[0]?.message}`);
    incWrites = Object.values(inc.value.applied).reduce((a, b) => a + b, 0);
    add('change incremental', inc.ms);
    const verify = plan(changedB, await client.getTable());
    if (verify.operations.length !== 0)
      throw new Error(`incremental pass left ${verify.operations.length} differences`);
    client.close();
    process.stdout.write(', ipvsadm -R\n');
    freshIpvs();
    const file = restoreFile(desired);
    const adm = (await timed(() => sh(`ipvsadm -R < ${file}`))).ms;
    add('ipvsadm -R', adm);
    // The ratio within each run: the two measured minutes apart, not across runs, where
    // the host's load (UML runs on a shared machine) can differ several times over.
    if (!profiling) add('create ratio', adm / create.ms);
    const restored = Number(sh(`ipvsadm -Ln | grep -c -- '->'`)) - 1;
    if (restored !== n * dests)
      throw new Error(`ipvsadm -R restored ${restored} destinations, expected ${n * dests}`);
  }
  freshIpvs();
  const s = (name: string) => spread(samples.get(name)!);
  const row = (name: string, key: string, baseline?: string): Row => {
    const x = s(key);
    return { name, ms: x.median, baseline, note: `min ${fmtMs(x.min)}, max ${fmtMs(x.max)}` };
  };
  const createName = `portlb create ${n}x${dests} (${ops} writes)`;
  const admName = `ipvsadm -R (create ${n}x${dests})`;
  const fullName = `1% change, full read-back (${fullWrites} writes)`;
  const rows: Row[] = [
    row(admName, 'ipvsadm -R'),
    row(createName, 'create', admName),
    row('ipvsadm -Ln', 'ipvsadm -Ln'),
    row('portlb dump (no stats)', 'dump', 'ipvsadm -Ln'),
    row('ipvsadm -Ln --stats', 'ipvsadm -Ln --stats'),
    row('portlb dump with stats', 'dump stats', 'ipvsadm -Ln --stats'),
    row('converged pass: dump + plan (0 writes)', 'converged'),
    row(fullName, 'change full'),
    row(`1% change, data plane incremental (${incWrites} writes)`, 'change incremental', fullName),
  ];
  const reported = report(`${n} x ${dests} (median of ${reps} runs)`, rows);
  const createRatio = s('create ratio').median;
  // Proportional: the create's time per write, times this change's writes.
  const proportionalMs = (s('create').median / ops) * incWrites;
  const cpuLine = (what: string, key: string) =>
    console.log(
      `  ${what} ${fmtMs(s(key).median)}: JavaScript (user CPU) ${fmtMs(s(`${key} user cpu`).median)}, kernel (system CPU) ${fmtMs(s(`${key} system cpu`).median)}, waiting ${fmtMs(Math.max(0, s(key).median - s(`${key} user cpu`).median - s(`${key} system cpu`).median))}`,
    );
  console.log('\nwhere the time goes (this process, median):');
  cpuLine('create', 'create');
  console.log(`    of which planning the ${ops} writes ${fmtMs(s('create plan').median)}`);
  for (const [what, top] of [
    ['create', createProfile],
    ['converged pass', convergedProfile],
  ] as const) {
    if (!top) continue;
    console.log(`  the ${what} under the CPU profiler (first run), self time:`);
    for (const f of top)
      console.log(`    ${f.percent.toFixed(1).padStart(5)}%  ${fmtMs(f.ms).padStart(8)}  ${f.name}`);
  }
  cpuLine('dump with stats', 'dump stats');
  // A request and one receive per service (the receive takes the replies and the DONE together).
  const floorMs = (n * 2 * s('system call us').median) / 1000;
  console.log(
    `  a system call in this guest ${s('system call us').median.toFixed(1)} us (min ${s('system call us').min.toFixed(1)}, max ${s('system call us').max.toFixed(1)}): the ${n} dumps of a read, two calls each, cost ${fmtMs(floorMs)} before any work`,
  );
  console.log(`\nagainst the targets (issue 11), ${n} services:`);
  console.log(
    `  create ${createRatio.toFixed(1)}x faster than ipvsadm -R, the median of each run's ratio (min ${s('create ratio').min.toFixed(1)}x, max ${s('create ratio').max.toFixed(1)}x; target >= ${TARGETS.createVsIpvsadm}x: ${createRatio >= TARGETS.createVsIpvsadm ? 'met' : 'NOT met'})`,
  );
  console.log(
    `  converged pass ${fmtMs(s('converged').median)} (target <= ${fmtMs(TARGETS.convergedMs)}: ${s('converged').median <= TARGETS.convergedMs ? 'met' : 'NOT met'})`,
  );
  console.log(
    `  1% change through the data plane ${fmtMs(s('change incremental').median)} for ${incWrites} writes; the create's time per write gives ${fmtMs(proportionalMs)} (${(s('change incremental').median / proportionalMs).toFixed(1)}x that)`,
  );
  results.push({
    services: n,
    destinations: dests,
    scheduler,
    runs: reps,
    rows: reported,
    samplesMs: Object.fromEntries(samples),
    targets: {
      createVsIpvsadm: {
        value: createRatio,
        min: s('create ratio').min,
        max: s('create ratio').max,
        target: TARGETS.createVsIpvsadm,
      },
      convergedMs: { value: s('converged').median, target: TARGETS.convergedMs },
      changeIncrementalVsProportional: { value: s('change incremental').median / proportionalMs },
    },
    systemCallUs: s('system call us'),
    readFloorMs: floorMs,
    eventLoopDuringReadWithStats: eventLoop,
    ...(createProfile ? { createProfile, convergedProfile } : {}),
  });
}

writeResults('ipvs', {
  description: 'IPVS programming in the UML kernel: portlb netlink client vs ipvsadm, same boot',
  // The agent's V8 flags (bench/run.ts passes them): the same code, run as the agent runs it.
  nodeFlags: process.execArgv,
  results,
});
