// IPVS data-plane benchmark, inside the kernel harness (npm run bench -- ipvs).
// Our batched netlink client against ipvsadm on the same kernel in the same boot:
// create N services x D destinations from empty (vs `ipvsadm -R`), dump everything (vs
// `ipvsadm -Ln`), a converged pass (must plan zero writes), and a 1% change, both with a
// full read-back and incrementally against the state cache. Every "from empty" starts
// from a freshly loaded ip_vs: deleted destinations linger on the kernel's trash list and
// slow later adds (FIELD-NOTES), so reusing a table would measure the trash, not us.
import { writeFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { applyOperations } from '../lb-agent/src/ipvs/apply.ts';
import { NetlinkIpvsClient } from '../lb-agent/src/ipvs/netlink-client.ts';
import { planIpvs } from '../lb-agent/src/ipvs/planner.ts';
import { IpvsStateCache } from '../lb-agent/src/ipvs/state-cache.ts';
import type { RealServer, ServiceSpec } from '../lb-agent/src/ipvs/types.ts';
import { fmtMs, freshIpvsModule, type Row, report, sh, spread, timed, writeResults } from './lib.ts';

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '1000,10000' },
    dests: { type: 'string', default: '10' },
    scheduler: { type: 'string', default: 'rr' },
    reps: { type: 'string', default: '5' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  console.log('Usage: npm run bench -- ipvs [--sizes 1000,10000] [--dests 10] [--scheduler rr] [--reps 5]');
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
      const t = await timed(() =>
        client.getTable({ stats: true, sliceMs: mode === 'never' ? Infinity : undefined }),
      );
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

for (const n of sizes) {
  console.log(`\n### ${n} services x ${dests} destinations, scheduler ${scheduler}`);
  const desired = desiredTable(n);

  freshIpvs();
  let client = NetlinkIpvsClient.open();
  const create = await timed(async () => {
    const p = plan(desired, []);
    return applyOperations(client, p.operations);
  });
  if (create.value.failed.length) throw new Error(`create failed: ${create.value.failed[0]?.error.message}`);
  const ops = create.value.applied.length;

  const dump = await timed(() => client.getTable());
  const dumpStats = await timed(() => client.getTable({ stats: true }));
  const admDump = await timed(() => sh('ipvsadm -Ln > /dev/null'));
  const admDumpStats = await timed(() => sh('ipvsadm -Ln --stats > /dev/null'));

  const eventLoop = await eventLoopDuringDump(client);

  const converged = await timed(async () => plan(desired, await client.getTable()));
  if (converged.value.operations.length !== 0) {
    throw new Error(`converged pass planned ${converged.value.operations.length} writes`);
  }

  // 1% change with a full read-back.
  const changedA = changeOnePercent(desired, 1);
  const fullChange = await timed(async () => {
    const p = plan(changedA, await client.getTable());
    return applyOperations(client, p.operations);
  });
  // Another 1% change, incrementally: the cache stands in for the dump, unchanged specs are trusted.
  const cache = new IpvsStateCache();
  cache.reset(await client.getTable(), 0);
  const before = new Set(changedA);
  const changedB = changeOnePercent(changedA, 2);
  const incremental = await timed(async () => {
    const p = plan(changedB, cache.table(), (s) => before.has(s));
    const r = await applyOperations(client, p.operations);
    cache.record(r);
    return r;
  });
  const verify = plan(changedB, await client.getTable());
  if (verify.operations.length !== 0)
    throw new Error(`incremental pass left ${verify.operations.length} differences`);
  client.close();

  freshIpvs();
  const file = restoreFile(desired);
  const restore = await timed(() => sh(`ipvsadm -R < ${file}`));
  const restored = Number(sh(`ipvsadm -Ln | grep -c -- '->'`)) - 1;
  if (restored !== n * dests)
    throw new Error(`ipvsadm -R restored ${restored} destinations, expected ${n * dests}`);
  freshIpvs();
  client = NetlinkIpvsClient.open();
  client.close();

  const rows: Row[] = [
    { name: `ipvsadm -R (create ${n}x${dests})`, ms: restore.ms },
    {
      name: `portlb create ${n}x${dests} (${ops} writes)`,
      ms: create.ms,
      baseline: `ipvsadm -R (create ${n}x${dests})`,
    },
    { name: 'ipvsadm -Ln', ms: admDump.ms },
    { name: 'portlb dump (no stats)', ms: dump.ms, baseline: 'ipvsadm -Ln' },
    { name: 'ipvsadm -Ln --stats', ms: admDumpStats.ms },
    { name: 'portlb dump with stats', ms: dumpStats.ms, baseline: 'ipvsadm -Ln --stats' },
    { name: 'converged pass: dump + plan (0 writes)', ms: converged.ms },
    { name: `1% change, full read-back (${fullChange.value.applied.length} writes)`, ms: fullChange.ms },
    {
      name: `1% change, incremental (${incremental.value.applied.length} writes)`,
      ms: incremental.ms,
      baseline: `1% change, full read-back (${fullChange.value.applied.length} writes)`,
    },
  ];
  results.push({
    services: n,
    destinations: dests,
    scheduler,
    rows: report(`${n} x ${dests}`, rows),
    eventLoopDuringReadWithStats: eventLoop,
  });
}

writeResults('ipvs', {
  description: 'IPVS programming in the UML kernel: portlb netlink client vs ipvsadm, same boot',
  results,
});
