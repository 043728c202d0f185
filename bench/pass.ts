// One sync pass of the agent at N Services, stage by stage, on the host (npm run bench --
// pass): the real controller over the fake API server (through the real client library),
// the real reconciler and data plane, the real netfilter backend's comparison (its write
// a no-op), fakes for the kernel's IPVS, the VIP interface and the speaker. It measures
// the JavaScript a pass runs, without UML (where the same work costs about four times
// as much, mostly in GC); `bench agent` measures the whole agent in UML. The fake API
// server shares this process, so memory is not reported here.
import { writeFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { fakeDataPlane } from '../lb-agent/src/agent/fixtures.ts';
import { CachedNetfilter } from '../lb-agent/src/agent/netfilter.ts';
import { Reconciler } from '../lb-agent/src/agent/reconciler.ts';
import { FakeBgpSpeaker } from '../lb-agent/src/bgp/fake-speaker.ts';
import { parseAgentConfig } from '../lb-agent/src/config/agent-config.ts';
import { FakeIpvsClient } from '../lb-agent/src/ipvs/fake-client.ts';
import { KubeClient } from '../lb-agent/src/k8s/client.ts';
import { KubernetesController } from '../lb-agent/src/k8s/controller.ts';
import { systemClock } from '../lb-agent/src/util/clock.ts';
import { FakeKubeApi } from '../test/harness/fake-kube-api.ts';
import { seedServices } from './kube-seed.ts';
import { fmtMs, spread, writeResults } from './lib.ts';

const { values } = parseArgs({
  options: {
    services: { type: 'string', default: '10000' },
    endpoints: { type: 'string', default: '10' },
    changes: { type: 'string', default: '30' },
    resyncs: { type: 'string', default: '5' },
    profile: { type: 'string' },
    'profile-resync': { type: 'string' },
    'heap-snapshot': { type: 'string' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  console.log(
    'Usage: npm run bench -- pass [--services 10000] [--endpoints 10] [--changes 30] [--resyncs 5] [--profile FILE]\n' +
      '        [--profile-resync FILE] [--heap-snapshot FILE]\n' +
      '  --profile FILE: a CPU profile of the change passes only (not the first pass) to FILE\n' +
      '  --profile-resync FILE: a CPU profile of the full passes and resyncs after the changes to FILE\n' +
      '  --heap-snapshot FILE: a V8 heap snapshot at the end (the fakes of the API server and the kernel\n' +
      '    are in it: read it by holder with bench/heap-summary.ts)',
  );
  process.exit(0);
}

class NoopNetfilter extends CachedNetfilter {
  readonly kind = 'noop';
  protected async write(): Promise<void> {}
  protected async writeDelta(): Promise<void> {}
  protected async missing(): Promise<string | undefined> {
    return undefined;
  }
}

const N = Number(values.services);
const M = Number(values.endpoints);
const CHANGES = Number(values.changes);
const RESYNCS = Number(values.resyncs);
const api = new FakeKubeApi();
await api.start();
seedServices(api, N, M);
const config = parseAgentConfig(
  {
    pools: [{ name: 'bench', addresses: ['10.96.0.0/12'] }],
    kubernetes: { leaderElection: { enabled: false } },
  },
  'bench',
);
let changed = 0;
const ctl = new KubernetesController({
  client: new KubeClient(api.connection()),
  config,
  nodeName: 'edge-1',
  identity: 'x',
  clock: systemClock,
  onChange: () => changed++,
});
ctl.start();
while (!ctl.synced()) await new Promise((r) => setTimeout(r, 5));
ctl.isLeader = () => false;
const ipvs = new FakeIpvsClient({ schedulers: ['mh', 'rr'] });
const speaker = new FakeBgpSpeaker();
await speaker.setGlobal({ asn: 65001, routerId: '192.0.2.1', listenPort: -1, listenAddresses: [] });
const passes: { durationMs: number; stages: Record<string, number> }[] = [];
const dataPlane = fakeDataPlane({
  ipvs,
  netfilter: new NoopNetfilter(),
  owns: (a) => a.startsWith('10.'),
  clock: systemClock,
});
const rec = new Reconciler({
  source: {
    kind: 'kubernetes',
    start() {},
    async stop() {},
    synced: () => true,
    healthy: () => true,
    desired: async () => ctl.sync().desired,
  },
  dataPlane,
  speaker,
  announce: { communities: [], peerFamilies: new Set(['ipv4']) },
  clock: systemClock,
  minIntervalMs: 0,
  resyncMs: 1e9,
  retryMaxMs: 1000,
  onPass: (r) => passes.push({ durationMs: r.durationMs, stages: r.report.stages as Record<string, number> }),
});
rec.trigger(true);
await rec.idle();
const { Session } = await import('node:inspector/promises');
const session = new Session();
session.connect();
if (values.profile) {
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
}
for (let c = 0; c < CHANGES; c++) {
  const i = (c * 7919) % N;
  const before = changed;
  api.mutate('endpointslices', `ns-${i % 50}`, `svc-${i}-abc`, (o) => {
    o.endpoints[0].addresses = [`192.168.${c >> 8}.${c & 255}`];
  });
  while (changed === before) await new Promise((r) => setImmediate(r));
  rec.trigger();
  await rec.idle();
}
if (values.profile) {
  const { profile } = await session.post('Profiler.stop');
  writeFileSync(values.profile, JSON.stringify(profile));
  console.log(`profile of the change passes: ${values.profile}`);
}
// Full passes with nothing changed (at start, or after a resync found a difference). What matters beside their length is the longest time they hold the
// event loop: nothing else (a change, a probe, /metrics) runs meanwhile.
const resyncs: { durationMs: number; stages: Record<string, number>; loopMaxMs: number }[] = [];
if (values['profile-resync']) {
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
}
for (let r = 0; r < RESYNCS; r++) {
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  const before = passes.length;
  rec.trigger(true);
  await rec.idle();
  // The histogram records a delay when its timer fires: let it fire after the last block.
  await new Promise((r) => setTimeout(r, 5));
  loop.disable();
  const p = passes[before];
  if (!p || passes.length !== before + 1) throw new Error(`resync ${r}: ${passes.length - before} passes`);
  resyncs.push({ ...p, loopMaxMs: loop.max / 1e6 });
}
// The periodic resync as the agent runs it: a read-back and its comparison with what the
// passes applied, beside the passes; a clean one runs no pass.
const verifies: { ms: number; loopMaxMs: number }[] = [];
for (let r = 0; r < RESYNCS; r++) {
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  const t0 = performance.now();
  const { verdict } = await dataPlane.verify(await dataPlane.readBack());
  const ms = performance.now() - t0;
  await new Promise((r) => setTimeout(r, 5));
  loop.disable();
  if (verdict !== 'clean') throw new Error(`resync ${r}: ${verdict}`);
  verifies.push({ ms, loopMaxMs: loop.max / 1e6 });
}
if (values['profile-resync']) {
  const { profile } = await session.post('Profiler.stop');
  writeFileSync(values['profile-resync'], JSON.stringify(profile));
  console.log(`profile of the resync passes: ${values['profile-resync']}`);
}
const first = passes[0]!;
const changes = passes.slice(1, 1 + CHANGES);
if (changes.length !== CHANGES) throw new Error(`${changes.length} change passes for ${CHANGES} changes`);
const f = (x: ReturnType<typeof spread>) => `${fmtMs(x.median)} (min ${fmtMs(x.min)}, max ${fmtMs(x.max)})`;
const duration = spread(changes.map((p) => p.durationMs));
const stages = Object.fromEntries(
  Object.keys(changes[0]!.stages).map((k) => [k, spread(changes.map((p) => p.stages[k] ?? 0))]),
);
console.log(`\n${N} Services x ${M} endpoints, host, fakes for the kernel and the speaker`);
console.log(`  first (full) pass ${fmtMs(first.durationMs)}`);
console.log(`  one EndpointSlice change's pass, median of ${changes.length}: ${f(duration)}`);
for (const [k, x] of Object.entries(stages)) console.log(`    ${k.padEnd(10)} ${f(x)}`);
const resync = RESYNCS
  ? {
      passMs: spread(resyncs.map((p) => p.durationMs)),
      loopMaxMs: spread(resyncs.map((p) => p.loopMaxMs)),
      stagesMs: Object.fromEntries(
        Object.keys(resyncs[0]!.stages).map((k) => [k, spread(resyncs.map((p) => p.stages[k] ?? 0))]),
      ),
      verifyMs: spread(verifies.map((v) => v.ms)),
      verifyLoopMaxMs: spread(verifies.map((v) => v.loopMaxMs)),
    }
  : undefined;
if (resync) {
  console.log(`  full pass with nothing to do, median of ${RESYNCS}: ${f(resync.passMs)}`);
  console.log(`    event loop held, longest: ${f(resync.loopMaxMs)}  (the agent's target: <= 50 ms, in UML)`);
  for (const [k, x] of Object.entries(resync.stagesMs)) console.log(`    ${k.padEnd(10)} ${f(x)}`);
  console.log(
    `  resync as the agent runs it (read-back and verify beside the passes, clean: no pass), median of ${RESYNCS}: ${f(resync.verifyMs)}`,
  );
  console.log(
    `    event loop held, longest: ${f(resync.verifyLoopMaxMs)}  (the agent's target: <= 50 ms, in UML)`,
  );
}
if (values['heap-snapshot']) {
  const { writeHeapSnapshot } = await import('node:v8');
  console.log(`heap snapshot: ${writeHeapSnapshot(values['heap-snapshot'])}`);
}
writeResults('pass', {
  description:
    'one sync pass at N Services on the host (real controller, reconciler and data plane; fake kernel and speaker)',
  results: {
    services: N,
    endpoints: M,
    firstPassMs: first.durationMs,
    changePassMs: duration,
    stagesMs: stages,
    resync,
  },
});
await ctl.stop();
await api.stop();
process.exit(0);
