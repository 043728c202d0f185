// `npm run bench -- [NAME ...] [-- options]`: runs the benchmarks (all by default). Each
// prints ratios against a baseline measured in the same run and writes bench/results/NAME.json.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { AGENT_NODE_FLAGS } from '../lb-agent/src/node-flags.ts';

const repo = path.resolve(import.meta.dirname, '..');
const BENCHES: Record<
  string,
  {
    description: string;
    inKernel: boolean;
    file: string;
    debian?: string[];
    /** It times the agent's own code in its process: run it with the agent's V8 flags. */
    agentFlags?: boolean;
  }
> = {
  ipvs: {
    description: 'IPVS programming and dumps vs ipvsadm (UML kernel)',
    inKernel: true,
    file: 'bench/ipvs.ts',
    agentFlags: true,
  },
  bgp: {
    description: 'BGP convergence: action -> router FIB (gobgpd + BIRD, host namespaces)',
    inKernel: false,
    file: 'bench/bgp.ts',
  },
  dataplane: {
    description: 'requests/s through the VIP vs direct, iptables DNAT, nginx L7 (UML kernel, wrk)',
    inKernel: true,
    file: 'bench/dataplane.ts',
    debian: ['nginx-light', 'wrk', 'hey'],
  },
  agent: {
    description:
      'the whole agent in its own process: memory, EndpointSlice change -> kernel, event loop (UML kernel)',
    inKernel: true,
    file: 'bench/agent.ts',
  },
  pass: {
    description: 'one sync pass at 10k Services, stage by stage (host; fake kernel and speaker)',
    inKernel: false,
    file: 'bench/pass.ts',
  },
  k8s: {
    description: 'Kubernetes: 10k Services x 10 endpoints -> desired state (fake API, real client)',
    inKernel: false,
    file: 'bench/k8s.ts',
  },
};

const args = process.argv.slice(2);
// The kernel harness's memory: 2 GB holds 10k Services; 50k needs more (--guest-mem 8G).
let guestMem = '2048M';
const memAt = args.indexOf('--guest-mem');
if (memAt >= 0) {
  guestMem = args[memAt + 1] ?? '';
  if (!/^\d+[MG]$/.test(guestMem)) {
    console.error(`bench: --guest-mem ${JSON.stringify(guestMem)}: give a size such as 2048M or 8G`);
    process.exit(2);
  }
  args.splice(memAt, 2);
}
if (args.includes('--help') || args.includes('-h')) {
  console.log(`Usage: npm run bench -- [NAME ...] [--bench-option ...]
Benchmarks:
${Object.entries(BENCHES)
  .map(([n, b]) => `  ${n.padEnd(8)} ${b.description}`)
  .join('\n')}
Options after the names are passed to each benchmark (e.g. npm run bench -- ipvs --sizes 1000),
except --guest-mem SIZE: the kernel harness's memory (default 2048M; 50k Services need 8G).`);
  process.exit(0);
}
const names = args.filter((a) => !a.startsWith('-') && a in BENCHES);
const options = args.filter((a) => !names.includes(a));
const unknown = args.filter((a) => !a.startsWith('-') && !(a in BENCHES) && !options.some((o) => o === a));
if (unknown.length) {
  console.error(`bench: unknown benchmark ${unknown.join(', ')} (have: ${Object.keys(BENCHES).join(', ')})`);
  process.exit(2);
}
let failed = false;
for (const name of names.length ? names : Object.keys(BENCHES)) {
  const b = BENCHES[name]!;
  console.log(`\n===== bench ${name}: ${b.description}`);
  // Tools only a benchmark needs are installed here, not by setup.sh (tests do not need them).
  const missing = (b.debian ?? []).filter(
    (p) =>
      spawnSync('dpkg-query', ['-W', '-f=${Status}', p], { encoding: 'utf8' }).stdout !==
      'install ok installed',
  );
  if (missing.length) {
    console.log(`installing ${missing.join(', ')}`);
    const r = spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], {
      stdio: 'inherit',
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
    if (r.status !== 0) {
      console.error(
        `bench ${name}: could not install ${missing.join(', ')} (run as root: apt-get install ${missing.join(' ')})`,
      );
      failed = true;
      continue;
    }
  }
  const nodeArgs = [...(b.agentFlags ? AGENT_NODE_FLAGS : []), b.file, ...options];
  const cmd = b.inKernel
    ? [
        'bash',
        [
          path.join(repo, 'scripts/uml-run.sh'),
          '--timeout',
          '3600',
          '--mem',
          guestMem,
          '--',
          process.execPath,
          ...nodeArgs,
        ],
      ]
    : [process.execPath, nodeArgs];
  const r = spawnSync(cmd[0] as string, cmd[1] as string[], { cwd: repo, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`bench ${name} failed (exit ${r.status})`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
