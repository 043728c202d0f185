// Kubernetes benchmark (npm run bench -- k8s): N Services x M endpoints served by the fake
// API server over HTTP to the real client library. Measures the time from start to the
// first complete desired state, from one EndpointSlice change to the updated desired
// state, the leader's allocation planning for all Services, and memory.
import { parseArgs } from 'node:util';
import { parseAgentConfig } from '../lb-agent/src/config/agent-config.ts';
import { planAllocations } from '../lb-agent/src/k8s/allocator.ts';
import { KubeClient } from '../lb-agent/src/k8s/client.ts';
import { KubernetesController } from '../lb-agent/src/k8s/controller.ts';
import { translateKubernetes } from '../lb-agent/src/k8s/translate.ts';
import { systemClock } from '../lb-agent/src/util/clock.ts';
import { FakeKubeApi } from '../test/harness/fake-kube-api.ts';
import { seedServices } from './kube-seed.ts';
import { writeResults } from './lib.ts';

const { values } = parseArgs({
  options: {
    services: { type: 'string', default: '10000' },
    endpoints: { type: 'string', default: '10' },
    changes: { type: 'string', default: '20' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  console.log('Usage: npm run bench -- k8s [--services 10000] [--endpoints 10] [--changes 20]');
  process.exit(0);
}
const N = Number(values.services);
const M = Number(values.endpoints);
const CHANGES = Number(values.changes);
const mb = (b: number) => Math.round(b / 1024 / 1024);

const api = new FakeKubeApi();
await api.start();
const tBuild = performance.now();
seedServices(api, N, M);
console.log(
  `fake API server loaded with ${N} Services x ${M} endpoints in ${Math.round(performance.now() - tBuild)} ms`,
);

const config = parseAgentConfig(
  {
    pools: [{ name: 'bench', addresses: ['10.96.0.0/12'] }],
    kubernetes: { leaderElection: { enabled: false } },
  },
  'bench',
);
let changed = 0;
const heapBefore = process.memoryUsage();
const t0 = performance.now();
const ctl = new KubernetesController({
  client: new KubeClient(api.connection()),
  config,
  nodeName: 'edge-1',
  clock: systemClock,
  onChange: () => changed++,
});
ctl.start();
while (!ctl.synced()) await new Promise((r) => setTimeout(r, 5));
const tSynced = performance.now() - t0;
// Desired state without the leader's allocation pass (measured on its own below).
const desiredOnly = async () => {
  const leader = ctl.isLeader;
  ctl.isLeader = () => false;
  try {
    return ctl.sync();
  } finally {
    ctl.isLeader = leader;
  }
};
const first = await desiredOnly();
const tFirst = performance.now() - t0;
const complete =
  first.desired.virtualServices.length === N &&
  first.desired.virtualServices.every((v) => v.spec.destinations.length === M);
if (!complete)
  throw new Error(`first desired state incomplete: ${first.desired.virtualServices.length} services`);
const memAfter = process.memoryUsage();

const sliceChange: number[] = [];
const recompute: number[] = [];
for (let c = 0; c < CHANGES; c++) {
  const i = (c * 7919) % N;
  const ns = `ns-${i % 50}`;
  const newIp = `192.168.${c >> 8}.${c & 255}`;
  const before = changed;
  const tc = performance.now();
  api.mutate('endpointslices', ns, `svc-${i}-abc`, (o) => {
    o.endpoints[0].addresses = [newIp];
  });
  while (changed === before) await new Promise((r) => setImmediate(r));
  const tr = performance.now();
  const s = await desiredOnly();
  const done = performance.now();
  const v = s.desired.virtualServices.find((x) => x.owner === `${ns}/svc-${i}`);
  if (!v?.spec.destinations.some((d) => d.address === newIp)) throw new Error('change not visible');
  sliceChange.push(done - tc);
  recompute.push(done - tr);
}
const tAlloc = performance.now();
const translation = translateKubernetes(
  { services: ctl.services.list(), endpointSlices: ctl.slices.list() },
  {
    loadBalancerClass: 'portlb.io/portlb',
    serveServicesWithoutClass: false,
    defaultScheduler: 'mh',
    defaultForwarding: 'nat',
  },
);
const plan = planAllocations(ctl.services.list(), translation.settings, config.pools, {
  loadBalancerClass: 'portlb.io/portlb',
  serveServicesWithoutClass: false,
});
const allocMs = performance.now() - tAlloc;
await ctl.stop();
await api.stop();

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return { runs: s.length, medianMs: +s[Math.floor(s.length / 2)]!.toFixed(1), maxMs: +s.at(-1)!.toFixed(1) };
};
const results = {
  services: N,
  endpointsPerService: M,
  informersSyncedMs: Math.round(tSynced),
  firstCompleteDesiredStateMs: Math.round(tFirst),
  sliceChangeToDesiredState: stats(sliceChange),
  ofWhichRecompute: stats(recompute),
  allocationPlanAllServicesMs: Math.round(allocMs),
  allocationConverged: plan.updates.length === 0,
  memoryMB: {
    rssAfterSync: mb(memAfter.rss),
    heapUsedAfterSync: mb(memAfter.heapUsed),
    heapUsedBefore: mb(heapBefore.heapUsed),
  },
};
console.log(`\nKubernetes source, ${N} Services x ${M} endpoints (fake API over HTTP, real client library)`);
console.log(`  informers synced (list of all three)     ${results.informersSyncedMs} ms`);
console.log(`  first complete desired state             ${results.firstCompleteDesiredStateMs} ms`);
console.log(
  `  one EndpointSlice change -> desired      median ${results.sliceChangeToDesiredState.medianMs} ms, max ${results.sliceChangeToDesiredState.maxMs} ms`,
);
console.log(`    of which the full recompute            median ${results.ofWhichRecompute.medianMs} ms`);
console.log(
  `  allocation plan over all Services        ${results.allocationPlanAllServicesMs} ms (converged: ${results.allocationConverged})`,
);
console.log(
  `  memory after sync                        rss ${results.memoryMB.rssAfterSync} MB, heap ${results.memoryMB.heapUsedAfterSync} MB`,
);
writeResults('k8s', { description: 'Kubernetes: fake API server -> informers -> desired state', results });
