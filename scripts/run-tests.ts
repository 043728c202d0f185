// `npm test`: every test suite of the project, in phases, with one summary at the end.
// A missing prerequisite is a failure with an install hint, never a silent skip.
import { spawn, spawnSync } from 'node:child_process';
import { globSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

const repo = path.resolve(import.meta.dirname, '..');

interface Phase {
  name: string;
  description: string;
  files: string[];
  /** Commands that must exist, with the Debian package that has them. */
  needs: [string, string][];
  inKernel: boolean;
  timeoutS: number;
  /** Guest memory for kernel phases. */
  mem?: string;
  /** More options for the kernel harness. */
  umlArgs?: string[];
  /** Host-side work before the phase runs (e.g. building the images it tests). */
  prepare?: string[][];
}

const PHASES: Phase[] = [
  {
    name: 'unit',
    description: 'pure logic: codecs, planners, parsers, fakes (no kernel, no daemons)',
    files: ['lb-agent/**/*.test.ts'],
    needs: [],
    inKernel: false,
    timeoutS: 300,
  },
  {
    name: 'host',
    description:
      'real daemons in network namespaces on this host (gobgpd, BIRD), the fake Kubernetes API, the install artifacts (helm, kubectl)',
    files: ['test/host/**/*.test.ts', 'test/deploy/**/*.test.ts'],
    needs: [
      ['ip', 'iproute2'],
      ['unzip', 'unzip'],
      ['gobgpd', 'gobgpd'],
      ['bird', 'bird2'],
      ['birdc', 'bird2'],
      ['vtysh', 'frr'],
    ],
    inKernel: false,
    timeoutS: 600,
  },
  {
    name: 'kernel',
    description: 'IPVS through netlink against the real kernel, inside the UML harness',
    files: ['test/kernel/**/*.test.ts'],
    needs: [
      ['ipvsadm', 'ipvsadm'],
      ['modprobe', 'kmod'],
      ['ip', 'iproute2'],
    ],
    inKernel: true,
    timeoutS: 900,
  },
  {
    name: 'e2e',
    description: 'the whole system with real traffic, inside the UML harness',
    files: ['test/e2e/**/*.test.ts'],
    needs: [
      ['ipvsadm', 'ipvsadm'],
      ['modprobe', 'kmod'],
      ['gobgpd', 'gobgpd'],
      ['bird', 'bird2'],
      ['iptables-legacy', 'iptables'],
    ],
    inKernel: true,
    timeoutS: 1500,
    mem: '2560M',
  },
  {
    name: 'pod',
    description:
      'the shipped images under the rendered chart (podman kube play, CRI capability semantics), inside the UML harness',
    files: ['test/pod/**/*.test.ts'],
    needs: [
      ['podman', 'podman'],
      ['runc', 'runc'],
      ['catatonit', 'catatonit'],
      ['debootstrap', 'debootstrap'],
      ['jq', 'jq'],
      ['openssl', 'openssl'],
      ['nsenter', 'util-linux'],
      ['bird', 'bird2'],
      ['unzip', 'unzip'],
    ],
    inKernel: true,
    timeoutS: 900,
    mem: '2048M',
    // ip_vs is left for the agent to load, as on a node that does not load it at boot.
    umlArgs: ['--no-ipvs', '--modules', 'overlay'],
    prepare: [['images/build.ts'], ['test/harness/pod.ts', 'export-images']],
  },
];

const { values } = parseArgs({
  options: { only: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  allowPositionals: false,
});
if (values.help) {
  console.log(`Usage: npm test [-- --only PHASE[,PHASE]]

Runs every test suite and prints one summary. Phases:
${PHASES.map((p) => `  ${p.name.padEnd(7)} ${p.description}`).join('\n')}

Prerequisites are checked first: a missing one fails the run (install it, or run .ci/run
which installs everything).`);
  process.exit(0);
}
const only = values.only?.split(',').map((s) => s.trim());
const unknown = only?.filter((n) => !PHASES.some((p) => p.name === n));
if (unknown?.length) {
  console.error(
    `run-tests: unknown phase ${unknown.join(', ')} (phases: ${PHASES.map((p) => p.name).join(', ')})`,
  );
  process.exit(2);
}
const selected = PHASES.filter((p) => !only || only.includes(p.name));

const has = (cmd: string) => spawnSync('bash', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

interface Result {
  phase: string;
  ok: boolean;
  tests: number;
  pass: number;
  fail: number;
  seconds: number;
  note?: string;
}

function runPhase(phase: Phase): Promise<Result> {
  const started = Date.now();
  const files = phase.files
    .flatMap((g) => globSync(g, { cwd: repo }))
    .filter((f) => !f.includes('node_modules'));
  const result: Result = { phase: phase.name, ok: false, tests: 0, pass: 0, fail: 0, seconds: 0 };
  // A phase whose files went missing would otherwise pass by testing nothing.
  if (files.length === 0) {
    result.note = `no test files match ${phase.files.join(', ')}`;
    console.error(`\n[${phase.name}] FAILED: ${result.note}`);
    return Promise.resolve(result);
  }
  const missing = phase.needs.filter(([cmd]) => !has(cmd));
  if (missing.length) {
    result.note = `missing ${missing.map(([c, p]) => `${c} (apt-get install ${p})`).join(', ')}`;
    console.error(`\n[${phase.name}] FAILED before it started: ${result.note}`);
    return Promise.resolve(result);
  }
  // In the kernel one process runs every file, one file at a time: labs must not overlap.
  const nodeArgs = [
    '--test',
    '--test-reporter=spec',
    ...(phase.inKernel ? ['--test-isolation=none', '--test-concurrency=1'] : []),
    ...files,
  ];
  const [cmd, args] = phase.inKernel
    ? [
        'bash',
        [
          path.join(repo, 'scripts', 'uml-run.sh'),
          '--timeout',
          String(phase.timeoutS),
          ...(phase.mem ? ['--mem', phase.mem] : []),
          ...(phase.umlArgs ?? []),
          '--',
          process.execPath,
          ...nodeArgs,
        ],
      ]
    : [process.execPath, nodeArgs];
  console.log(`\n=== ${phase.name}: ${phase.description} (${files.length} files) ===`);
  for (const step of phase.prepare ?? []) {
    const res = spawnSync(process.execPath, step, { cwd: repo, stdio: ['ignore', 'inherit', 'inherit'] });
    if (res.status !== 0) {
      result.note = `preparing failed: node ${step.join(' ')} exited ${res.status}`;
      console.error(`\n[${phase.name}] FAILED before it started: ${result.note}`);
      result.seconds = (Date.now() - started) / 1000;
      return Promise.resolve(result);
    }
  }
  return new Promise((resolve) => {
    const child = spawn(cmd, args as string[], { cwd: repo, stdio: ['ignore', 'pipe', 'inherit'] });
    const timer = phase.inKernel ? undefined : setTimeout(() => child.kill('SIGKILL'), phase.timeoutS * 1000);
    let tail = '';
    child.stdout.on('data', (chunk: Buffer) => {
      process.stdout.write(chunk);
      tail = (tail + chunk.toString()).slice(-4000);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const count = (name: string) => Number(new RegExp(`ℹ ${name} (\\d+)`).exec(tail)?.[1] ?? 0);
      result.tests = count('tests');
      result.pass = count('pass');
      result.fail = count('fail') + count('cancelled');
      result.ok = code === 0 && result.fail === 0 && result.tests > 0;
      if (signal) result.note = `killed by ${signal} (timeout ${phase.timeoutS}s)`;
      else if (code !== 0 && result.fail === 0) result.note = `exit code ${code}`;
      result.seconds = (Date.now() - started) / 1000;
      resolve(result);
    });
  });
}

const results: Result[] = [];
for (const phase of selected) results.push(await runPhase(phase));

console.log('\n=== summary ===');
for (const r of results) {
  console.log(
    `${r.phase.padEnd(7)} ${r.ok ? 'PASS' : 'FAIL'}  ${String(r.pass).padStart(4)}/${String(r.tests).padEnd(4)} tests passed` +
      `  ${r.seconds.toFixed(1).padStart(6)} s${r.note ? `  (${r.note})` : ''}`,
  );
}
const ok = results.every((r) => r.ok);
console.log(`result: ${ok ? 'PASS' : 'FAIL'}`);
process.exit(ok ? 0 : 1);
