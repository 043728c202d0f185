// Data-plane benchmark (npm run bench -- dataplane), inside the kernel harness: HTTP
// requests/s from a client to one nginx backend, directly and through one LB node by
// each method, in the same kernel and the same run (the paper's comparison):
//   direct        client -> backend
//   ipvs-nat      IPVS masquerade + SNAT, programmed by `portlb ipvs apply`
//   ipvs-tunnel   IPVS IPIP (direct server return)
//   dnat          iptables DNAT + MASQUERADE
//   nginx-l7      an nginx reverse proxy on the LB node (upstream keep-alive)
// Three parts, in one boot:
// 1. requests/s: wrk with keep-alive connections; rounds interleave the methods; medians.
// 2. latency at a constant rate below saturation (the paper's latency CDF): hey, 4
//    workers each at rate/4, keep-alive; p50/p90/p99/max per method over every round, and
//    the CDF drawn as bench/results/dataplane-latency-cdf.svg.
// 3. requests/s as the backends grow (1, 2, 4, 8) for the LB methods.
// Absolute numbers mostly measure UML's slow user space (FIELD-NOTES): the ratios are
// the result. One CPU runs everything, so part 3 cannot show scaling (see its caveat).
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { NetnsLab, run, waitFor } from '../test/harness/netns.ts';
import { median, percentile, report, resultsDir, writeResults } from './lib.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '8' },
    rounds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '16' },
    /** Constant request rate for the latency CDF (requests/s; default: half the slowest method's throughput). */
    rate: { type: 'string' },
    'latency-seconds': { type: 'string', default: '10' },
    /** Backend counts for the throughput-vs-backends table. */
    backends: { type: 'string', default: '1,2,4,8' },
    'scale-seconds': { type: 'string', default: '5' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  console.log(
    'Usage: npm run bench -- dataplane [--seconds 8] [--rounds 3] [--connections 16] [--rate R] [--latency-seconds 10] [--backends 1,2,4,8] [--scale-seconds 5]\n' +
      '  1. requests/s through one LB node per method (wrk, keep-alive), 2. latency at a constant rate below\n' +
      '  saturation (hey, p50/p90/p99/max and a CDF picture), 3. requests/s as the backends grow.',
  );
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

const LB = '10.0.0.11';
const beAddr = (i: number) => `10.0.0.${20 + i}`;
const BE = beAddr(1);
const targets = {
  direct: `http://${BE}:8080/`,
  'ipvs-nat': 'http://203.0.113.11/',
  'ipvs-tunnel': 'http://203.0.113.10/',
  dnat: 'http://203.0.113.12/',
  'nginx-l7': 'http://203.0.113.13/',
} as const;
type Method = keyof typeof targets;
const SCALE = values.backends.split(',').map(Number);
const MAXBE = Math.max(1, ...SCALE);
/** The VIP of method m with n backends (the throughput-vs-backends table). */
const scaleVip = (m: Exclude<Method, 'direct'>, n: number) =>
  `203.0.113.${{ 'ipvs-nat': 100, 'ipvs-tunnel': 110, dnat: 120, 'nginx-l7': 130 }[m] + n}`;

function svgCdf(series: Record<string, number[]>, title: string): string {
  // x: latency on a log scale (ms), y: fraction of requests at or below it.
  const all = Object.values(series).flat();
  const lo = Math.max(0.05, Math.min(...all));
  const hi = Math.max(...all);
  const [W, H, L, B] = [760, 420, 60, 50];
  const x = (ms: number) =>
    L + ((Math.log10(ms) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo) || 1)) * (W - L - 20);
  const y = (f: number) => H - B - f * (H - B - 30);
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd'];
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="18" text-anchor="middle" font-size="14">${title}</text>`,
    `<line x1="${L}" y1="${y(0)}" x2="${W - 20}" y2="${y(0)}" stroke="black"/>`,
    `<line x1="${L}" y1="${y(0)}" x2="${L}" y2="${y(1)}" stroke="black"/>`,
  ];
  for (const f of [0, 0.25, 0.5, 0.75, 0.9, 0.99, 1])
    out.push(
      `<line x1="${L}" y1="${y(f)}" x2="${W - 20}" y2="${y(f)}" stroke="#ddd"/><text x="${L - 6}" y="${y(f) + 4}" text-anchor="end">${f}</text>`,
    );
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++)
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v < lo || v > hi) continue;
      out.push(
        `<line x1="${x(v)}" y1="${y(0)}" x2="${x(v)}" y2="${y(1)}" stroke="#eee"/><text x="${x(v)}" y="${y(0) + 16}" text-anchor="middle">${v < 1 ? v.toFixed(1) : v}</text>`,
      );
    }
  out.push(`<text x="${W / 2}" y="${H - 10}" text-anchor="middle">latency (ms, log scale)</text>`);
  Object.entries(series).forEach(([name, xs], k) => {
    const sorted = [...xs].sort((a, b) => a - b);
    const step = Math.max(1, Math.floor(sorted.length / 400));
    const pts: string[] = [];
    for (let i = 0; i < sorted.length; i += step)
      pts.push(`${x(Math.max(lo, sorted[i]!)).toFixed(1)},${y((i + 1) / sorted.length).toFixed(1)}`);
    pts.push(`${x(sorted.at(-1)!).toFixed(1)},${y(1).toFixed(1)}`);
    out.push(
      `<polyline fill="none" stroke="${colors[k % colors.length]}" stroke-width="1.5" points="${pts.join(' ')}"/>`,
    );
    out.push(
      `<text x="${W - 150}" y="${y(0.45) + 16 * k}" fill="${colors[k % colors.length]}">${name}</text>`,
    );
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

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
  lab.exec('client', 'ip', ['route', 'add', '203.0.113.0/24', 'via', LB]);
  lab.exec('lb', 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  const tunnelVips = ['203.0.113.10', ...SCALE.map((n) => scaleVip('ipvs-tunnel', n))];
  const backends = [];
  for (let i = 1; i <= MAXBE; i++) {
    const be = `be${i}`;
    attach(be, beAddr(i));
    lab.exec(be, 'ip', ['route', 'add', 'default', 'via', LB]);
    // Tunnel: the backend decapsulates and owns the VIPs; it answers the client directly.
    lab.exec(be, 'ip', ['link', 'set', 'tunl0', 'up']);
    for (const v of tunnelVips) lab.exec(be, 'ip', ['addr', 'add', `${v}/32`, 'dev', 'tunl0']);
    lab.exec(be, 'sysctl', ['-qw', 'net.ipv4.conf.tunl0.rp_filter=0']);
    backends.push(
      nginx(
        be,
        `backend-${be}`,
        `  server { listen 8080 reuseport; listen 80; location / { return 200 "${be}\\n"; } }`,
      ),
    );
  }
  lab.exec('lb', 'ip', ['link', 'add', 'vip0', 'type', 'dummy']);
  lab.exec('lb', 'ip', ['link', 'set', 'vip0', 'up']);
  const allVips = [
    ...Object.values(targets)
      .slice(1)
      .map((u) => new URL(u).hostname),
    ...SCALE.flatMap((n) =>
      (['ipvs-nat', 'ipvs-tunnel', 'dnat', 'nginx-l7'] as const).map((m) => scaleVip(m, n)),
    ),
  ];
  for (const v of allVips) lab.exec('lb', 'ip', ['addr', 'add', `${v}/32`, 'dev', 'vip0']);

  const upstreams = (n: number, port: number) =>
    Array.from({ length: n }, (_, i) => `server ${beAddr(i + 1)}:${port};`).join(' ');
  const proxy = nginx(
    'lb',
    'proxy',
    [
      `  upstream be { server ${BE}:8080; keepalive 64; }`,
      `  server { listen 203.0.113.13:80; location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } }`,
      ...SCALE.map(
        (n) =>
          `  upstream be${n} { ${upstreams(n, 8080)} keepalive 64; }\n  server { listen ${scaleVip('nginx-l7', n)}:80; location / { proxy_pass http://be${n}; proxy_http_version 1.1; proxy_set_header Connection ""; } }`,
      ),
    ].join('\n'),
  );
  // IPVS through portlb's own CLI; DNAT through legacy iptables (this kernel's nf_tables has no ip family).
  const bes = (n: number, port: number) =>
    `[${Array.from({ length: n }, (_, i) => `{ address: ${beAddr(i + 1)}, port: ${port} }`).join(', ')}]`;
  const services = path.join(lab.dir, 'services.yaml');
  writeFileSync(
    services,
    [
      'pools: [203.0.113.0/24]',
      'services:',
      `  - { vip: 203.0.113.11, port: 80, scheduler: rr, forwarding: nat, backends: ${bes(1, 8080)} }`,
      `  - { vip: 203.0.113.10, port: 80, scheduler: rr, forwarding: tunnel, backends: ${bes(1, 80)} }`,
      ...SCALE.flatMap((n) => [
        `  - { vip: ${scaleVip('ipvs-nat', n)}, port: 80, scheduler: rr, forwarding: nat, backends: ${bes(n, 8080)} }`,
        `  - { vip: ${scaleVip('ipvs-tunnel', n)}, port: 80, scheduler: rr, forwarding: tunnel, backends: ${bes(n, 80)} }`,
      ]),
      '',
    ].join('\n'),
  );
  lab.exec('lb', process.execPath, [
    path.join(repo, 'lb-agent', 'bin', 'portlb.js'),
    'ipvs',
    'apply',
    services,
  ]);
  lab.exec('lb', 'sysctl', ['-qw', 'net.ipv4.vs.conntrack=1']);
  const ipt = (args: string[]) => lab.exec('lb', 'iptables-legacy', ['-w', ...args]);
  for (const v of ['203.0.113.11', ...SCALE.map((n) => scaleVip('ipvs-nat', n))])
    ipt([
      '-t',
      'nat',
      '-A',
      'POSTROUTING',
      '-m',
      'ipvs',
      '--vaddr',
      `${v}/32`,
      '--vport',
      '80',
      '-j',
      'MASQUERADE',
    ]);
  // DNAT to n backends: kube-proxy's way, rule i taking 1/(n-i) of what is left.
  const dnat = (vip: string, n: number) => {
    for (let i = 0; i < n; i++) {
      const share =
        i === n - 1 ? [] : ['-m', 'statistic', '--mode', 'random', '--probability', (1 / (n - i)).toFixed(5)];
      ipt([
        '-t',
        'nat',
        '-A',
        'PREROUTING',
        '-d',
        vip,
        '-p',
        'tcp',
        '--dport',
        '80',
        ...share,
        '-j',
        'DNAT',
        '--to-destination',
        `${beAddr(i + 1)}:8080`,
      ]);
    }
  };
  dnat('203.0.113.12', 1);
  for (const n of SCALE) dnat(scaleVip('dnat', n), n);
  ipt([
    '-t',
    'nat',
    '-A',
    'POSTROUTING',
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
  for (const d of [...backends, proxy]) {
    await waitFor(
      `${d.name} up`,
      () =>
        d.child.exitCode === null &&
        lab.exec(d.ns, 'bash', ['-c', 'ss -ltn | grep -c LISTEN || true']).trim() !== '0',
      { timeoutMs: 30_000 },
    );
  }
  const get = (url: string) =>
    lab.exec('client', 'bash', [
      '-c',
      `exec 3<>/dev/tcp/${new URL(url).hostname}/${new URL(url).port || 80}; printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3; timeout 5 cat <&3`,
    ]);
  for (const [name, url] of [
    ...Object.entries(targets),
    ...SCALE.flatMap((n) =>
      (['ipvs-nat', 'ipvs-tunnel', 'dnat', 'nginx-l7'] as const).map((m) => [
        `${m} x${n}`,
        `http://${scaleVip(m, n)}/`,
      ]),
    ),
  ]) {
    if (!/be\d/.test(get(url!))) throw new Error(`${name}: no answer from a backend through ${url}`);
  }

  const wrk = (url: string, seconds: string): Promise<number> =>
    new Promise((resolve, reject) => {
      const child = spawn('ip', [
        'netns',
        'exec',
        lab.ns('client'),
        'wrk',
        '-t1',
        `-c${values.connections}`,
        `-d${seconds}s`,
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

  // 1. Throughput, one backend.
  console.log('\n1. requests/s through one LB node, one backend (wrk, keep-alive)');
  const samples: Record<string, number[]> = Object.fromEntries(Object.keys(targets).map((k) => [k, []]));
  for (let r = 0; r < Number(values.rounds); r++) {
    for (const [name, url] of Object.entries(targets)) {
      const rps = await wrk(url, values.seconds);
      samples[name]!.push(rps);
      console.log(`round ${r + 1}: ${name.padEnd(12)} ${rps.toFixed(0)} req/s`);
    }
  }
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

  // 2. Latency at a constant rate below every method's saturation (hey: 4 workers, each at rate/4).
  const rate = values.rate
    ? Number(values.rate)
    : Math.max(4, Math.round(Math.min(...Object.values(rps)) / 2 / 4) * 4);
  const seconds = Number(values['latency-seconds']);
  console.log(
    `\n2. latency at a constant ${rate} requests/s for ${seconds} s per method and round (hey, keep-alive)`,
  );
  const hey = (url: string): Promise<{ ms: number[]; non200: number }> =>
    new Promise((resolve, reject) => {
      const child = spawn('ip', [
        'netns',
        'exec',
        lab.ns('client'),
        'hey',
        '-z',
        `${seconds}s`,
        '-c',
        '4',
        '-q',
        String(rate / 4),
        '-t',
        '5',
        '-o',
        'csv',
        url,
      ]);
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.on('exit', (code) => {
        if (code !== 0) return reject(new Error(`hey ${url} exited ${code}: ${out.slice(-500)}`));
        const ms: number[] = [];
        let non200 = 0;
        for (const line of out.split('\n').slice(1)) {
          const f = line.split(',');
          if (f.length < 7) continue;
          if (f[6] !== '200') non200++;
          else ms.push(Number(f[0]) * 1000);
        }
        resolve({ ms, non200 });
      });
    });
  const latency: Record<string, number[]> = Object.fromEntries(Object.keys(targets).map((k) => [k, []]));
  const lost: Record<string, number> = Object.fromEntries(Object.keys(targets).map((k) => [k, 0]));
  for (let r = 0; r < Number(values.rounds); r++) {
    for (const [name, url] of Object.entries(targets)) {
      const h = await hey(url);
      latency[name]!.push(...h.ms);
      // Requests the rate called for that did not complete with 200 within the run.
      lost[name]! += h.non200 + Math.max(0, Math.round(rate * seconds * 0.98) - h.ms.length - h.non200);
      console.log(
        `round ${r + 1}: ${name.padEnd(12)} ${h.ms.length} requests, p50 ${percentile(h.ms, 50).toFixed(2)} ms, p99 ${percentile(h.ms, 99).toFixed(2)} ms`,
      );
    }
  }
  const latencyTable = Object.fromEntries(
    Object.entries(latency).map(([k, v]) => [
      k,
      {
        requests: v.length,
        p50: +percentile(v, 50).toFixed(3),
        p90: +percentile(v, 90).toFixed(3),
        p99: +percentile(v, 99).toFixed(3),
        max: +Math.max(...v).toFixed(3),
        missing: lost[k],
      },
    ]),
  );
  console.log('\nmethod        requests  p50 ms   p90 ms   p99 ms   max ms   (vs direct: p50, p99)');
  for (const [k, t] of Object.entries(latencyTable))
    console.log(
      `${k.padEnd(13)} ${String(t.requests).padStart(8)} ${t.p50.toFixed(2).padStart(8)} ${t.p90.toFixed(2).padStart(8)} ${t.p99.toFixed(2).padStart(8)} ${t.max.toFixed(1).padStart(8)}   ${(t.p50 / latencyTable.direct!.p50).toFixed(2)}x, ${(t.p99 / latencyTable.direct!.p99).toFixed(2)}x`,
    );
  const svg = path.join(resultsDir, 'dataplane-latency-cdf.svg');
  writeFileSync(svg, svgCdf(latency, `Latency CDF at ${rate} requests/s, one LB node, UML kernel (one CPU)`));
  console.log(`CDF: ${path.relative(repo, svg)}`);

  // 3. Throughput as the backends grow.
  console.log(
    `\n3. requests/s as the backends grow (${SCALE.join(', ')}; wrk ${values['scale-seconds']} s each)`,
  );
  const scale: Record<string, Record<number, number>> = {};
  for (const n of SCALE) {
    for (const m of ['ipvs-nat', 'ipvs-tunnel', 'dnat', 'nginx-l7'] as const) {
      const v = await wrk(`http://${scaleVip(m, n)}/`, values['scale-seconds']);
      scale[m] = { ...scale[m], [n]: Math.round(v) };
    }
    console.log(
      `  ${n} backend(s): ${JSON.stringify(Object.fromEntries(Object.entries(scale).map(([m, r]) => [m, r[n]])))}`,
    );
  }
  console.log(
    `\nmethod        ${SCALE.map((n) => `x${n}`.padStart(8)).join('')}   (x${SCALE.at(-1)} / x${SCALE[0]})`,
  );
  for (const [m, r] of Object.entries(scale))
    console.log(
      `${m.padEnd(13)} ${SCALE.map((n) => String(r[n]).padStart(8)).join('')}   ${(r[SCALE.at(-1)!]! / r[SCALE[0]!]!).toFixed(2)}`,
    );
  console.log(
    'One CPU runs the client, the LB and every backend here: more backends cannot add capacity, so this table shows what each method costs as its backend set grows (lookup, balancing), not how it scales on real machines.',
  );

  writeResults('dataplane', {
    description:
      'one LB node in the UML kernel (one CPU): requests/s by method (wrk), latency at a constant rate (hey), requests/s as the backends grow',
    settings: {
      seconds: Number(values.seconds),
      rounds: Number(values.rounds),
      connections: Number(values.connections),
      rate,
      latencySeconds: seconds,
      backends: SCALE,
      scaleSeconds: Number(values['scale-seconds']),
    },
    requestsPerSecond: rps,
    samples,
    rows: printed,
    latencyMs: latencyTable,
    latencyCdf: path.relative(repo, svg),
    requestsPerSecondByBackends: scale,
    caveat: 'one CPU for client, LB and backends: the backend table shows per-method cost, not scaling',
  });
} finally {
  await lab.cleanup();
  try {
    execFileSync('ip', ['link', 'del', 'dpbr']);
  } catch {
    // gone already
  }
}
