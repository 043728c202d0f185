// Shared by the benchmarks: timing, ratio tables, and the results file.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const resultsDir = path.join(import.meta.dirname, 'results');
const repoRoot = path.resolve(import.meta.dirname, '..');

export async function timed<T>(fn: () => Promise<T> | T): Promise<{ ms: number; value: T }> {
  const start = performance.now();
  const value = await fn();
  return { ms: performance.now() - start, value };
}

export interface Row {
  name: string;
  ms: number;
  /** What this row is compared with (a row name measured in the same run). */
  baseline?: string;
  note?: string;
}

/** Prints rows with "x faster/slower than baseline" and returns them with the ratio. */
export function report(title: string, rows: Row[]): (Row & { ratio?: number })[] {
  const byName = new Map(rows.map((r) => [r.name, r]));
  const out = rows.map((r) => {
    const base = r.baseline ? byName.get(r.baseline) : undefined;
    return base ? { ...r, ratio: base.ms / r.ms } : r;
  });
  console.log(`\n${title}`);
  for (const r of out) {
    const ratio =
      'ratio' in r && r.ratio !== undefined
        ? `  ${r.ratio >= 1 ? `${r.ratio.toFixed(1)}x faster` : `${(1 / r.ratio).toFixed(1)}x slower`} than ${r.baseline}`
        : '';
    console.log(`  ${r.name.padEnd(46)} ${fmtMs(r.ms).padStart(10)}${ratio}${r.note ? `  (${r.note})` : ''}`);
  }
  return out;
}

export function fmtMs(ms: number): string {
  return ms >= 10_000
    ? `${(ms / 1000).toFixed(1)} s`
    : ms >= 100
      ? `${Math.round(ms)} ms`
      : `${ms.toFixed(2)} ms`;
}

export function writeResults(name: string, data: Record<string, unknown>): string {
  mkdirSync(resultsDir, { recursive: true });
  const file = path.join(resultsDir, `${name}.json`);
  writeFileSync(
    file,
    `${JSON.stringify(
      {
        benchmark: name,
        date: new Date().toISOString(),
        machine: { cpus: os.cpus().length, kernel: os.release(), node: process.version },
        ...data,
      },
      null,
      2,
    )}\n`,
  );
  console.log(`\nresults written to ${path.relative(process.cwd(), file)}`);
  return file;
}

export const sh = (cmd: string) =>
  execFileSync('bash', ['-c', cmd], { encoding: 'utf8', maxBuffer: 1 << 30 });

/**
 * A freshly loaded ip_vs (in the kernel harness): deleted destinations linger on the
 * kernel's trash list and slow later adds (FIELD-NOTES), so a reused table would measure
 * the trash, not us.
 */
export function freshIpvsModule(scheduler: string): void {
  sh(`ipvsadm -C 2>/dev/null || true
      for i in 1 2 3; do
        for m in $(lsmod | awk '$1 ~ /^(xt_ipvs|ip_vs_.*)$/ {print $1}'); do rmmod $m 2>/dev/null || true; done
        rmmod ip_vs 2>/dev/null || true
      done
      if lsmod | grep -q '^ip_vs '; then echo 'ip_vs still loaded' >&2; exit 1; fi
      modprobe ip_vs && modprobe ip_vs_${scheduler}`);
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** The p-th percentile (nearest rank) of the values. */
export function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

export const spread = (xs: readonly number[]) => ({
  median: median(xs),
  min: Math.min(...xs),
  max: Math.max(...xs),
});

export interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
    children?: number[];
  }[];
  /** Microseconds of the monotonic clock (process.hrtime's). */
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

type CallFrame = CpuProfile['nodes'][number]['callFrame'];
const frameName = (f: CallFrame) => {
  const where = f.url ? `${f.url.replace(`file://${repoRoot}/`, '')}:${f.lineNumber + 1}` : '';
  return `${f.functionName || '(anonymous)'}${where ? ` ${where}` : ''}`;
};

/** Self time by function (name, file and line), most first. */
export function topFunctions(p: CpuProfile, count: number) {
  const frame = new Map(p.nodes.map((n) => [n.id, n.callFrame]));
  const self = new Map<string, number>();
  let total = 0;
  p.samples.forEach((id, i) => {
    const name = frameName(frame.get(id)!);
    const us = p.timeDeltas[i] ?? 0;
    self.set(name, (self.get(name) ?? 0) + us);
    total += us;
  });
  return [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, count)
    .map(([name, us]) => ({ name, ms: us / 1000, percent: (100 * us) / total }));
}

/** What a CPU profile shows between two instants: the collector, the idle loop, and what ran. */
export interface ProfileWindow {
  fromUs: number;
  toUs: number;
  gcMs: number;
  idleMs: number;
  /** By the outermost and the innermost frame of the program's own code on each sample's stack. */
  tasks: { name: string; ms: number }[];
  hot: { name: string; ms: number }[];
}

/**
 * What ran in each window (`fromUs`..`toUs`, the monotonic clock in microseconds, as the
 * profile's own timestamps): a sample lasts until the next one; `ours` says which files are
 * the program's own (a sample elsewhere is attributed to the nearest own frame above it,
 * else to itself: the collector, the runtime, a library).
 */
export function profileWindows(
  p: CpuProfile,
  windows: readonly { fromUs: number; toUs: number }[],
  ours: (url: string) => boolean,
): ProfileWindow[] {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const memo = new Map<number, { outer: string; inner: string }>();
  const owners = (id: number) => {
    let known = memo.get(id);
    if (known) return known;
    let inner: string | undefined;
    let outer: string | undefined;
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const f = byId.get(at)!.callFrame;
      if (!f.url || !ours(f.url)) continue;
      inner ??= frameName(f);
      outer = frameName(f);
    }
    const self = frameName(byId.get(id)!.callFrame);
    known = { outer: outer ?? self, inner: inner ?? self };
    memo.set(id, known);
    return known;
  };
  const times = new Float64Array(p.samples.length + 1);
  let t = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    times[i] = t;
  }
  times[p.samples.length] = t;
  const top = (m: Map<string, number>) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 4)
      .map(([name, us]) => ({ name, ms: us / 1000 }));
  return windows.map(({ fromUs, toUs }) => {
    let lo = 0;
    let hi = p.samples.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (times[mid + 1]! <= fromUs) lo = mid + 1;
      else hi = mid;
    }
    let gcUs = 0;
    let idleUs = 0;
    const tasks = new Map<string, number>();
    const hot = new Map<string, number>();
    for (let i = lo; i < p.samples.length && times[i]! < toUs; i++) {
      // The part of this sample's time inside the window.
      const us = Math.min(times[i + 1]!, toUs) - Math.max(times[i]!, fromUs);
      if (us <= 0) continue;
      const node = byId.get(p.samples[i]!)!;
      const name = node.callFrame.functionName;
      if (name === '(idle)') {
        idleUs += us;
        continue;
      }
      if (name === '(garbage collector)') gcUs += us;
      const { outer, inner } = owners(node.id);
      tasks.set(outer, (tasks.get(outer) ?? 0) + us);
      hot.set(inner, (hot.get(inner) ?? 0) + us);
    }
    return { fromUs, toUs, gcMs: gcUs / 1000, idleMs: idleUs / 1000, tasks: top(tasks), hot: top(hot) };
  });
}
