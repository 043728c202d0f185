// Shared by the benchmarks: timing, ratio tables, and the results file.
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const resultsDir = path.join(import.meta.dirname, 'results');

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
