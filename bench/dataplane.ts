// Data-plane benchmark (npm run bench -- dataplane), inside the kernel harness: HTTP
// requests/s from a client to one nginx backend, directly and through one LB node by
// each method, in the same kernel and the same run (the paper's comparison):
//   direct        client -> backend
//   ipvs-nat      IPVS masquerade + SNAT, programmed by `portlb ipvs apply`
//   ipvs-tunnel   IPVS IPIP (direct server return)
//   dnat          iptables DNAT + MASQUERADE
//   nginx-l7      an nginx reverse proxy on the LB node (upstream keep-alive)
// wrk with keep-alive connections; rounds interleave the methods; medians are compared.
// Absolute numbers mostly measure UML's slow user space (FIELD-NOTES): the ratios are
// the result.
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { NetnsLab, run, waitFor } from '../test/harness/netns.ts';
import { report, writeResults } from './lib.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '8' },
    rounds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '16' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  console.log('Usage: npm run bench -- dataplane [--seconds 8] [--rounds 3] [--connections 16]');
  process.exit(0);
}
if (process.env.PORTLB_IN_UML !== '1') {
  console.error('bench/dataplane.ts runs inside the kernel harness: npm run bench -- dataplane');
  process.exit(2);
}
const repo = path.resolve(import.meta.dirname, '..');
const lab = new NetnsLab('dp');
const nginx = (ns: string, name: string, conf: string) => {
  const dir = path.join(lab.dir, name);
  mkdirSync(path.join(dir, 'tmp'), { recursive: true });
  const file = path.join(dir, 'nginx.conf');
  writeFileSync(
    file,
    `worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
daemon off;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp; proxy_temp_path ${dir}/tmp; fastcgi_temp_path ${dir}/tmp;
  uwsgi_temp_path ${dir}/tmp; scgi_temp_path ${dir}/tmp;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
${conf}
}
`,
  );
  return lab.spawn(ns, name, 'nginx', ['-c', file, '-p', dir]);
};

const BE = '10.0.0.21';
const LB = '10.0.0.11';
const targets = {
  direct: `http://${BE}:8080/`,
  'ipvs-nat': 'http://203.0.113.11/',
  'ipvs-tunnel': 'http://203.0.113.10/',
  dnat: 'http://203.0.113.12/',
  'nginx-l7': 'http://203.0.113.13/',
} as const;

try {
  run('ip', ['link', 'add', 'dpbr', 'type', 'bridge']);
  run('ip', ['link', 'set', 'dpbr', 'up']);
  const attach = (name: string, address: string) => {
    lab.addNamespace(name, { 'net.ipv4.conf.all.rp_filter': '0', 'net.ipv4.conf.default.rp_filter': '0' });
    run('ip', ['link', 'add', `dp${name}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', lab.ns(name)]);
    run('ip', ['link', 'set', `dp${name}`, 'master', 'dpbr']);
    run('ip', ['link', 'set', `dp${name}`, 'up']);
    lab.exec(name, 'ip', ['addr', 'add', `${address}/24`, 'dev', 'eth0']);
    lab.exec(name, 'ip', ['link', 'set', 'eth0', 'up']);
  };
  attach('client', '10.0.0.2');
  attach('lb', LB);
  attach('be', BE);
  lab.exec('client', 'ip', ['route', 'add', '203.0.113.0/24', 'via', LB]);
  lab.exec('be', 'ip', ['route', 'add', 'default', 'via', LB]);
  lab.exec('lb', 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  // Tunnel: the backend decapsulates and owns the VIP; it answers the client directly.
  lab.exec('be', 'ip', ['link', 'set', 'tunl0', 'up']);
  lab.exec('be', 'ip', ['addr', 'add', '203.0.113.10/32', 'dev', 'tunl0']);
  lab.exec('be', 'sysctl', ['-qw', 'net.ipv4.conf.tunl0.rp_filter=0']);
  lab.exec('lb', 'ip', ['link', 'add', 'vip0', 'type', 'dummy']);
  lab.exec('lb', 'ip', ['link', 'set', 'vip0', 'up']);
  for (const v of ['10', '11', '12', '13'])
    lab.exec('lb', 'ip', ['addr', 'add', `203.0.113.${v}/32`, 'dev', 'vip0']);

  const backend = nginx(
    'be',
    'backend',
    `  server { listen 8080 reuseport; listen 80; location / { return 200 "be1\\n"; } }`,
  );
  const proxy = nginx(
    'lb',
    'proxy',
    `  upstream be { server ${BE}:8080; keepalive 64; }
  server { listen 203.0.113.13:80; location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } }`,
  );
  // IPVS through portlb's own CLI; DNAT through legacy iptables (this kernel's nf_tables has no ip family).
  const services = path.join(lab.dir, 'services.yaml');
  writeFileSync(
    services,
    `pools: [203.0.113.10-203.0.113.11]
services:
  - { vip: 203.0.113.11, port: 80, scheduler: rr, forwarding: nat, backends: [{ address: ${BE}, port: 8080 }] }
  - { vip: 203.0.113.10, port: 80, scheduler: rr, forwarding: tunnel, backends: [{ address: ${BE}, port: 80 }] }
`,
  );
  lab.exec('lb', process.execPath, [
    path.join(repo, 'lb-agent', 'bin', 'portlb.js'),
    'ipvs',
    'apply',
    services,
  ]);
  lab.exec('lb', 'sysctl', ['-qw', 'net.ipv4.vs.conntrack=1']);
  lab.exec('lb', 'iptables-legacy', [
    '-t',
    'nat',
    '-A',
    'POSTROUTING',
    '-m',
    'ipvs',
    '--vaddr',
    '203.0.113.11/32',
    '--vport',
    '80',
    '-j',
    'MASQUERADE',
  ]);
  lab.exec('lb', 'iptables-legacy', [
    '-t',
    'nat',
    '-A',
    'PREROUTING',
    '-d',
    '203.0.113.12',
    '-p',
    'tcp',
    '--dport',
    '80',
    '-j',
    'DNAT',
    '--to-destination',
    `${BE}:8080`,
  ]);
  lab.exec('lb', 'iptables-legacy', [
    '-t',
    'nat',
    '-A',
    'POSTROUTING',
    '-d',
    BE,
    '-p',
    'tcp',
    '--dport',
    '8080',
    '-m',
    'conntrack',
    '--ctstate',
    'DNAT',
    '-j',
    'MASQUERADE',
  ]);
  for (const d of [backend, proxy]) {
    await waitFor(
      `${d.name} up`,
      () =>
        d.child.exitCode === null &&
        lab.exec(d.ns, 'bash', ['-c', 'ss -ltn | grep -c LISTEN || true']).trim() !== '0',
      { timeoutMs: 20_000 },
    );
  }
  for (const [name, url] of Object.entries(targets)) {
    const out = lab.exec('client', 'bash', [
      '-c',
      `exec 3<>/dev/tcp/${new URL(url).hostname}/${new URL(url).port || 80}; printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3; timeout 5 cat <&3`,
    ]);
    if (!out.includes('be1')) throw new Error(`${name}: no answer from the backend through ${url}: ${out}`);
  }

  const wrk = (url: string): Promise<number> =>
    new Promise((resolve, reject) => {
      const child = spawn('ip', [
        'netns',
        'exec',
        lab.ns('client'),
        'wrk',
        '-t1',
        `-c${values.connections}`,
        `-d${values.seconds}s`,
        url,
      ]);
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.on('exit', (code) => {
        const m = /Requests\/sec:\s+([\d.]+)/.exec(out);
        if (code !== 0 || !m) reject(new Error(`wrk ${url} failed: ${out}`));
        else resolve(Number(m[1]));
      });
    });
  const samples: Record<string, number[]> = Object.fromEntries(Object.keys(targets).map((k) => [k, []]));
  for (let r = 0; r < Number(values.rounds); r++) {
    for (const [name, url] of Object.entries(targets)) {
      const rps = await wrk(url);
      samples[name]!.push(rps);
      console.log(`round ${r + 1}: ${name.padEnd(12)} ${rps.toFixed(0)} req/s`);
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  // report() compares times; requests/s are inverted into time per 1000 requests.
  const rows = Object.keys(targets).map((name) => ({
    name,
    ms: 1_000_000 / median(samples[name]!),
    baseline: name === 'direct' ? undefined : 'direct',
  }));
  const printed = report(
    'Time per 1000 requests (lower is better), medians; ratio vs reaching the backend directly',
    rows,
  );
  const rps = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, Math.round(median(v))]));
  console.log(`\nrequests/s (median): ${JSON.stringify(rps)}`);
  console.log(
    `ipvs-nat / direct ${(rps['ipvs-nat']! / rps.direct!).toFixed(2)}, ipvs-nat / dnat ${(rps['ipvs-nat']! / rps.dnat!).toFixed(2)}, ipvs-nat / nginx-l7 ${(rps['ipvs-nat']! / rps['nginx-l7']!).toFixed(2)}, ipvs-tunnel / direct ${(rps['ipvs-tunnel']! / rps.direct!).toFixed(2)}`,
  );
  writeResults('dataplane', {
    description: 'HTTP keep-alive requests/s through one LB node by method, UML kernel, wrk',
    settings: {
      seconds: Number(values.seconds),
      rounds: Number(values.rounds),
      connections: Number(values.connections),
    },
    requestsPerSecond: rps,
    samples,
    rows: printed,
  });
} finally {
  await lab.cleanup();
  try {
    execFileSync('ip', ['link', 'del', 'dpbr']);
  } catch {
    // gone already
  }
}
