// BGP convergence benchmark (npm run bench -- bgp), on the host in network namespaces:
// one LB replica (real gobgpd driven by our adapter) and BIRD 2 as the router. Times are
// taken from the moment we act to the moment the router's kernel FIB changes, seen
// through `ip monitor route` in the router namespace (no polling).
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { GobgpSpeaker } from '../lb-agent/src/bgp/gobgp-speaker.ts';
import type { Advertisement } from '../lb-agent/src/bgp/types.ts';
import { ad, peer } from '../test/bgp/conformance.ts';
import { type Gobgpd, startBird, startGobgpd } from '../test/harness/bgp.ts';
import { NetnsLab, run, waitFor } from '../test/harness/netns.ts';
import { writeResults } from './lib.ts';

const { values } = parseArgs({
  options: {
    reps: { type: 'string', default: '15' },
    paths: { type: 'string', default: '100' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  console.log('Usage: npm run bench -- bgp [--reps 15] [--paths 100]');
  process.exit(0);
}
const reps = Number(values.reps);
const pathCount = Number(values.paths);

/** Watches the router's FIB; resolves waiters when a route appears or disappears. */
class FibWatch {
  private present = new Set<string>();
  private waiters: { prefix: string; want: boolean; resolve: (t: number) => void }[] = [];
  private readonly child;
  constructor(ns: string) {
    this.child = spawn('ip', ['netns', 'exec', ns, 'ip', 'monitor', 'route'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    let buf = '';
    this.child.stdout.on('data', (chunk: Buffer) => {
      const at = performance.now();
      buf += chunk.toString();
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      for (const line of lines) {
        const m = /^(Deleted )?(\d+\.\d+\.\d+\.\d+)\s/.exec(line);
        if (!m) continue;
        const prefix = `${m[2]}/32`;
        if (m[1]) this.present.delete(prefix);
        else this.present.add(prefix);
        this.waiters = this.waiters.filter((w) => {
          if (w.prefix === prefix && this.present.has(prefix) === w.want) {
            w.resolve(at);
            return false;
          }
          return true;
        });
      }
    });
  }
  until(prefix: string, want: boolean): Promise<number> {
    if (this.present.has(prefix) === want) return Promise.resolve(performance.now());
    return new Promise((resolve) => this.waiters.push({ prefix, want, resolve }));
  }
  has(prefix: string): boolean {
    return this.present.has(prefix);
  }
  stop(): void {
    this.child.kill();
  }
}

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return {
    runs: s.length,
    medianMs: +s[Math.floor(s.length / 2)]!.toFixed(2),
    maxMs: +s.at(-1)!.toFixed(2),
    minMs: +s[0]!.toFixed(2),
  };
};

const lab = new NetnsLab('plbench');
let speaker: GobgpSpeaker | undefined;
let fib: FibWatch | undefined;
try {
  lab.addNamespace('r');
  lab.addNamespace('lb');
  lab.link('r', 'r-lb', ['10.100.1.1/24'], 'lb', 'lb-r', ['10.100.1.2/24']);
  await startBird(lab, 'r', {
    routerId: '10.100.0.1',
    asn: 65000,
    holdTime: 9,
    neighbors: [{ name: 'lb', address: '10.100.1.2', asn: 65001, family: 'ipv4' }],
  });
  fib = new FibWatch(lab.ns('r'));
  let gobgpd: Gobgpd = await startGobgpd(lab, 'lb');
  speaker = new GobgpSpeaker({
    target: gobgpd.target,
    healthIntervalMs: 500,
    reconnectInitialMs: 50,
    reconnectMaxMs: 500,
  }).start();
  await waitFor('speaker', () => speaker!.connected());
  await speaker.setGlobal({
    asn: 65001,
    routerId: '10.100.1.2',
    listenPort: 179,
    listenAddresses: ['10.100.1.2'],
  });
  await speaker.setPeers([peer('10.100.1.1')]);
  await waitFor('session', async () => (await speaker!.listPeers())[0]?.state === 'established', {
    timeoutMs: 30_000,
  });

  const vip = (i: number) => `198.18.${i >> 8}.${i & 255}/32`;
  const announce: number[] = [];
  const withdraw: number[] = [];
  for (let i = 0; i < reps; i++) {
    const p = vip(i);
    const t0 = performance.now();
    await speaker.setAdvertisements([ad(p)]);
    announce.push((await fib.until(p, true)) - t0);
    const t1 = performance.now();
    await speaker.setAdvertisements([]);
    withdraw.push((await fib.until(p, false)) - t1);
  }

  const many: Advertisement[] = Array.from({ length: pathCount }, (_, i) => ad(vip(1000 + i)));
  await speaker.setAdvertisements(many);
  await Promise.all(many.map((a) => fib!.until(a.prefix, true)));
  const killed: number[] = [];
  const restored: number[] = [];
  const provisionMs: number[] = [];
  for (let i = 0; i < reps; i++) {
    const last = many.at(-1)!.prefix;
    const t0 = performance.now();
    await lab.kill(gobgpd.daemon, 'SIGKILL');
    killed.push((await fib.until(last, false)) - t0);
    await Promise.all(many.map((a) => fib!.until(a.prefix, false)));
    await waitFor('adapter notices', () => !speaker!.connected());
    const provisioned = new Promise<number>((resolve) => {
      const off = speaker!.on('provisioned', (summary) => {
        off();
        resolve(summary.durationMs);
      });
    });
    const t1 = performance.now();
    gobgpd = await startGobgpd(lab, 'lb', gobgpd.socket);
    const times = await Promise.all(many.map((a) => fib!.until(a.prefix, true)));
    restored.push(Math.max(...times) - t1);
    provisionMs.push(await provisioned);
  }

  const birdVersion = run('bash', ['-c', 'bird --version 2>&1']).trim();
  const results = {
    router: `${birdVersion} (merge paths, kernel FIB)`,
    speaker: run('bash', ['-c', 'gobgpd --version 2>&1']).trim(),
    announceToFib: stats(announce),
    withdrawToFibGone: stats(withdraw),
    gobgpdKilledToFibGone: stats(killed),
    gobgpdRestartedToAllPathsBack: { ...stats(restored), paths: pathCount },
    adapterProvisioning: {
      ...stats(provisionMs),
      paths: pathCount,
      note: 'StartBgp + peer + AddPath x paths, measured inside the adapter events',
    },
  };
  console.log(`\nBGP convergence (${reps} runs each, router: ${results.router})`);
  for (const [k, v] of Object.entries(results)) {
    if (typeof v === 'object')
      console.log(
        `  ${k.padEnd(32)} median ${String(v.medianMs).padStart(8)} ms   max ${String(v.maxMs).padStart(8)} ms`,
      );
  }
  writeResults('bgp', {
    description: 'BGP: action -> router kernel FIB, gobgpd + portlb adapter vs BIRD 2',
    reps,
    results,
  });
} finally {
  fib?.stop();
  await speaker?.close();
  await lab.cleanup();
}
