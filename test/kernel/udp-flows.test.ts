// A UDP flow whose backend is removed moves to a live backend, with NAT forwarding and
// SNAT (MASQUERADE keeps a conntrack entry per flow). The real agent (standalone, no
// BGP) in a namespace of the real kernel; a client that keeps one source port, as a DNS
// forwarder, a syslog or statsd client, or a QUIC connection does.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { requireKernelHarness } from '../harness/kernel.ts';
import { NetnsLab, waitFor } from '../harness/netns.ts';

requireKernelHarness();

const repo = path.resolve(import.meta.dirname, '..', '..');
const VIP = '10.252.9.1';

const echo = (name: string) =>
  `const s=require('dgram').createSocket('udp4');s.on('message',(m,r)=>s.send('${name}',r.port,r.address));s.bind(5353,()=>console.log('listening'))`;

// Sends one datagram every 50 ms from one source port; prints "<ms> <answer>" per reply.
const client = `const s=require('dgram').createSocket('udp4');const t0=Date.now();
s.on('message',(m)=>console.log(Date.now()-t0,String(m)));
s.bind(40000,()=>setInterval(()=>s.send('q',53,'${VIP}'),50));`;

describe('UDP flows when their backend goes (kernel)', () => {
  const lab = new NetnsLab('pludp');
  const services = path.join(lab.dir, 'services.yaml');
  const writeServices = (backends: string[]) =>
    writeFileSync(
      services,
      [
        `pools: [${VIP}/32]`,
        'services:',
        '  - name: dns',
        `    vip: ${VIP}`,
        '    port: 53',
        '    protocol: udp',
        '    scheduler: rr',
        '    forwarding: nat',
        '    backends:',
        ...backends.map((b) => `      - { address: ${b}, port: 5353 }`),
        '',
      ].join('\n'),
    );
  let answers: () => { ms: number; from: string }[];
  const echoes = new Map<string, ReturnType<NetnsLab['spawn']>>();

  before(async () => {
    lab.addNamespace('lb', { 'net.ipv4.ip_forward': '1' });
    lab.addNamespace('cl');
    lab.link('cl', 'eth0', ['10.252.1.2/24'], 'lb', 'cl0', ['10.252.1.1/24']);
    lab.exec('cl', 'ip', ['route', 'add', 'default', 'via', '10.252.1.1']);
    for (const n of [1, 2]) {
      lab.addNamespace(`be${n}`);
      lab.link(`be${n}`, 'eth0', [`10.252.2.${n + 1}/24`], 'lb', `be${n}`, []);
    }
    // Two backends on one segment behind the LB (a bridge in the LB namespace).
    lab.exec('lb', 'ip', ['link', 'add', 'br0', 'type', 'bridge']);
    lab.exec('lb', 'ip', ['addr', 'add', '10.252.2.1/24', 'dev', 'br0']);
    lab.exec('lb', 'ip', ['link', 'set', 'br0', 'up']);
    for (const n of [1, 2]) {
      lab.exec('lb', 'ip', ['link', 'set', `be${n}`, 'master', 'br0']);
      // The backends have no route to the client: replies go through the LB only via SNAT.
      const d = lab.spawn(`be${n}`, `echo-be${n}`, process.execPath, ['-e', echo(`be${n}`)]);
      echoes.set(`be${n}`, d);
      await waitFor(`be${n} listening`, () => lab.log(d).includes('listening'), { timeoutMs: 30_000 });
    }
    writeServices(['10.252.2.2', '10.252.2.3']);
    const config = path.join(lab.dir, 'agent.yaml');
    writeFileSync(
      config,
      [
        'mode: standalone',
        `standalone: { servicesFile: ${services} }`,
        'nodeName: lb',
        `pools: [{ name: lab, addresses: [${VIP}/32] }]`,
        // A drained (rather than removed) UDP backend would hold the flow this long.
        'defaults: { drainTimeoutSeconds: 120 }',
        'ipvs: { snat: auto, vipInterface: pludp0 }',
        'http: { listen: "127.0.0.1:9181" }',
        'sync: { minIntervalMs: 100, resyncSeconds: 2 }',
        '',
      ].join('\n'),
    );
    const agent = lab.spawn('lb', 'agent', process.execPath, [
      path.join(repo, 'lb-agent', 'bin', 'portlb.js'),
      'agent',
      '--config',
      config,
    ]);
    await waitFor('the IPVS service', () => lab.exec('lb', 'ipvsadm', ['-Ln']).includes('10.252.2.3:5353'), {
      timeoutMs: 60_000,
    }).catch((err) => {
      throw new Error(`${(err as Error).message}\n${lab.log(agent).slice(-2000)}`);
    });
    const c = lab.spawn('cl', 'client', process.execPath, ['-e', client]);
    answers = () =>
      lab
        .log(c)
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => {
          const [ms, from] = l.split(' ');
          return { ms: Number(ms), from: from! };
        });
    await waitFor('answers', () => answers().length >= 10, { timeoutMs: 30_000 });
  });
  after(() => lab.cleanup());

  test('the flow’s backend is removed and stops: the same flow is answered by the other one', async () => {
    const first = answers().at(-1)!.from;
    assert.ok(
      answers().every((a) => a.from === first),
      'one flow, one backend',
    );
    const other = first === 'be1' ? 'be2' : 'be1';
    const gone = first === 'be1' ? '10.252.2.2' : '10.252.2.3';
    const removedAt = answers().at(-1)!.ms;
    writeServices([first === 'be1' ? '10.252.2.3' : '10.252.2.2']);
    await lab.kill(echoes.get(first)!, 'SIGKILL');
    const moved = await waitFor(
      `the flow answered by ${other}`,
      () => answers().find((a) => a.ms > removedAt && a.from === other),
      { timeoutMs: 20_000, intervalMs: 100 },
    ).catch(() => undefined);
    const table = lab.exec('lb', 'ipvsadm', ['-Lnc']);
    console.log(
      `# measured: UDP flow moved off its removed backend after ${moved ? `${moved.ms - removedAt} ms` : 'never (20 s)'}`,
    );
    assert.ok(moved, `the flow stays on the removed backend ${gone}:\n${table}`);
    assert.ok(!lab.exec('lb', 'ipvsadm', ['-Ln']).includes(`${gone}:5353`), 'the backend is gone from IPVS');
    // The SNAT binding lives in the flow's conntrack entry: the kernel drops it with the
    // IPVS connection (conntrack=1), so no entry toward the removed backend is left.
    const conntrack = lab.exec('lb', 'cat', ['/proc/net/nf_conntrack']);
    assert.ok(
      !conntrack.split('\n').some((l) => l.includes('udp') && l.includes(`src=${gone} `)),
      `no conntrack entry of the removed backend:\n${conntrack}`,
    );
  });
});
