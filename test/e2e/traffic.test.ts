// End to end in the kernel harness, built from the lab's parts: real traffic through the
// VIPs, backend readiness and drain, ownership, and bad input while running.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  beAddress,
  CLIENT,
  DR_VIP,
  Lab,
  type LabService,
  labServices,
  lbAddress,
  NAT_VIP as NAT,
  TUNNEL_VIP as TUNNEL,
} from '../harness/lab.ts';
import { waitFor } from '../harness/netns.ts';

/** The lab's services, with be3 in the given state (null: be3 removed). */
const services = (be3: { ready?: boolean } | null = {}): LabService[] => {
  const backends = [{ n: 1 }, { n: 2 }, ...(be3 ? [{ n: 3, ...be3 }] : [])];
  return [
    ...labServices(backends),
    { name: 'web-dr', vip: DR_VIP, port: 80, forwarding: 'dr', backendPort: 80, backends },
  ];
};

describe('e2e: traffic, readiness, drain, ownership, bad input', () => {
  if (process.env.PORTLB_IN_UML !== '1')
    throw new Error('e2e tests run inside the kernel harness (npm test does)');
  const lab = new Lab({
    prefix: 'e2t',
    maxReplicas: 2,
    backends: 3,
    services: services(),
    drainTimeoutSeconds: 20,
    resyncSeconds: 3,
  });

  before(async () => {
    await lab.up();
    await Promise.all([lab.startReplica(1), lab.startReplica(2)]);
    await lab.waitNextHops(TUNNEL, 2);
    await lab.waitNextHops(NAT, 2);
  });
  after(async () => {
    await lab.down();
  });

  type Backend = { id: string; weight: number; active: number };
  // biome-ignore lint/suspicious/noExplicitAny: the agent's status document.
  const backendsIn = (status: any, vip: string): Backend[] =>
    (status.services as { id: string; backends: Backend[] }[]).find((s) => s.id === `tcp:${vip}:80`)
      ?.backends ?? [];
  const backendsOn = async (i: number, vip: string) => backendsIn(await lab.status(i), vip);

  test('traffic through each VIP reaches every backend, through both replicas', async () => {
    const before = [await lab.connections(1), await lab.connections(2)];
    const r = await lab.load({ vips: [TUNNEL, NAT], seconds: 6, concurrency: 6 }).done;
    assert.equal(r.failed, 0, JSON.stringify(r.failures));
    assert.deepEqual(Object.keys(r.byBackend).sort(), ['be1', 'be2', 'be3']);
    // NAT: backends see the replica that forwarded (SNAT); both appear.
    assert.ok(r.bySource[lbAddress(1)]! > 0 && r.bySource[lbAddress(2)]! > 0, JSON.stringify(r.bySource));
    for (const [i, b] of before.entries()) {
      const now = await lab.connections(i + 1);
      for (const vip of [TUNNEL, NAT]) {
        const id = `tcp:${vip}:80`;
        assert.ok((now[id] ?? 0) > (b[id] ?? 0), `lb${i + 1} carried ${vip}`);
      }
    }
  });

  test('direct routing: the backends see the client and answer it directly, through both replicas', async () => {
    for (const i of [1, 2]) {
      const table = lab.ipvsadm(i, ['-Ln', '-t', `${DR_VIP}:80`]);
      for (const n of [1, 2, 3]) assert.match(table, new RegExp(`${beAddress(n)}:80\\s+Route`), table);
    }
    await lab.waitNextHops(DR_VIP, 2);
    const before = [await lab.connections(1), await lab.connections(2)];
    const r = await lab.load({ vips: [DR_VIP], seconds: 5, concurrency: 6 }).done;
    assert.equal(r.failed, 0, JSON.stringify(r.failures));
    assert.deepEqual(Object.keys(r.byBackend).sort(), ['be1', 'be2', 'be3']);
    // No address translation on the way in: each backend saw the client itself.
    assert.deepEqual(Object.keys(r.bySource), [CLIENT]);
    const id = `tcp:${DR_VIP}:80`;
    for (const [i, b] of before.entries()) {
      const now = await lab.connections(i + 1);
      assert.ok((now[id] ?? 0) > (b[id] ?? 0), `lb${i + 1} carried ${DR_VIP}`);
    }
    // Replies bypass the LBs: their IPVS byte counters see the requests only.
    const stats = lab.ipvsadm(1, ['-Ln', '--stats', '--exact', '-t', `${DR_VIP}:80`]);
    const row = stats.split('\n').find((l) => l.includes(`${DR_VIP}:80`))!;
    const [, , , , packetsOut, , bytesOut] = row.trim().split(/\s+/);
    assert.equal(Number(packetsOut), 0, stats);
    assert.equal(Number(bytesOut), 0, stats);
  });

  test('a backend that turns unready gets no new connections', async () => {
    lab.writeServices(services({ ready: false }));
    for (const i of [1, 2]) {
      for (const vip of [TUNNEL, NAT]) {
        await waitFor(`lb${i} stops sending ${vip} to be3`, async () => {
          const be3 = (await backendsOn(i, vip)).find((b) => b.id.startsWith('10.0.0.23'));
          return !be3 || be3.weight === 0;
        });
      }
    }
    const r = await lab.load({ vips: [TUNNEL, NAT], seconds: 4, concurrency: 6 }).done;
    assert.equal(r.failed, 0);
    assert.equal(r.byBackend.be3 ?? 0, 0, JSON.stringify(r.byBackend));
    assert.ok((r.byBackend.be1 ?? 0) > 0 && (r.byBackend.be2 ?? 0) > 0);
    lab.writeServices(services());
    for (const i of [1, 2]) {
      await waitFor(`lb${i} uses be3 again`, async () =>
        (await backendsOn(i, NAT)).some((b) => b.id.startsWith('10.0.0.23') && b.weight > 0),
      );
    }
  });

  test('a deleted backend is drained: open connections carry on at weight 0, then it goes', async () => {
    const keep = lab.load({ vips: [NAT], seconds: 600, keepalive: 12, intervalMs: 100 });
    // Wait until some of the long-lived connections sit on be3.
    const onBe3 = await waitFor(
      'connections on be3',
      async () => {
        for (const i of [1, 2]) {
          const be3 = (await backendsOn(i, NAT)).find((b) => b.id.startsWith('10.0.0.23'));
          if (be3 && be3.active > 0) return i;
        }
        return undefined;
      },
      { timeoutMs: 40_000 },
    );
    lab.writeServices(services(null));
    // The kernel changes during a pass, the report at its end: wait for both in one document.
    await waitFor('be3 draining (weight 0, connections still active) and reported so', async () => {
      const status = await lab.status(onBe3);
      const be3 = backendsIn(status, NAT).find((b) => b.id.startsWith('10.0.0.23'));
      const reported = (status.draining as { service: string; backend: string }[]).some(
        (d) => d.service === `tcp:${NAT}:80` && d.backend.startsWith('10.0.0.23'),
      );
      return be3 && be3.weight === 0 && be3.active > 0 && reported;
    });
    await new Promise((r) => setTimeout(r, 1500));
    keep.stop();
    const r = await keep.done;
    assert.equal(r.connections?.broken, 0, `drained, not cut: ${JSON.stringify(r.failures)}`);
    assert.ok((r.byBackend.be3 ?? 0) > 0, 'be3 kept answering on its open connections');
    await waitFor(
      'be3 removed once idle (or after the drain timeout)',
      async () => {
        const be3 = (await backendsOn(onBe3, NAT)).find((b) => b.id.startsWith('10.0.0.23'));
        return !be3;
      },
      { timeoutMs: 45_000 },
    );
  });

  test('an owned IPVS service deleted by hand comes back; a foreign one is never touched', async () => {
    lab.ipvsadm(1, ['-A', '-t', '192.0.2.50:80', '-s', 'rr']);
    lab.ipvsadm(1, ['-a', '-t', '192.0.2.50:80', '-r', '10.0.0.21:80', '-m']);
    const foreign = lab.ipvsadm(1, ['-Ln', '-t', '192.0.2.50:80']);
    lab.ipvsadm(1, ['-D', '-t', `${NAT}:80`]);
    await waitFor('the owned service is back', () => lab.ipvsadm(1, ['-Ln']).includes(`${NAT}:80`), {
      timeoutMs: 20_000,
    });
    await new Promise((r) => setTimeout(r, 4000)); // a few more passes, one a full resync
    assert.equal(lab.ipvsadm(1, ['-Ln', '-t', '192.0.2.50:80']), foreign);
    lab.ipvsadm(1, ['-D', '-t', '192.0.2.50:80']);
    // Again: the pattern of a controller deleting them (kube-proxy in IPVS mode), reported.
    lab.ipvsadm(1, ['-D', '-t', `${NAT}:80`]);
    await waitFor('back again', () => lab.ipvsadm(1, ['-Ln']).includes(`${NAT}:80`), { timeoutMs: 20_000 });
    const notice = await waitFor(
      'the conflict reported',
      async () =>
        ((await lab.status(1)).notices as { reason: string; message: string }[]).find(
          (n) => n.reason === 'IpvsServicesDeleted',
        ),
      { timeoutMs: 20_000, intervalMs: 1000 },
    );
    assert.match(notice.message, /--ipvs-exclude-cidrs/);
  });

  // The table without its connection counters (which traffic changes).
  const table = (i: number) =>
    lab
      .ipvsadm(i, ['-Ln'])
      .split('\n')
      .map((l) => l.trim().split(/\s+/).slice(0, 4).join(' '))
      .join('\n');

  test('a bad services file is refused while running: the state is kept, traffic unaffected', async () => {
    // Drains left by the tests before would finish mid-test and change the table.
    await waitFor('no drain in progress on lb1', async () => (await lab.status(1)).draining.length === 0, {
      timeoutMs: 60_000,
    });
    const before = table(1);
    writeFileSync(
      `${lab.servicesFile}.tmp`,
      `pools: [203.0.113.0/24]\nservices:\n  - { vip: ${NAT}, port: 70000 }\n`,
    );
    renameSync(`${lab.servicesFile}.tmp`, lab.servicesFile);
    await waitFor(
      'the agent reports the rejection, naming the field and value',
      () =>
        /services file rejected/.test(lab.net.log(lab.agent(1)!)) &&
        /services\[0\]\.port: must be a port from 1 to 65535 \(got 70000\)/.test(lab.net.log(lab.agent(1)!)),
      { timeoutMs: 15_000 },
    );
    const metrics = await (await fetch(`http://${lbAddress(1)}:9180/metrics`)).text();
    assert.match(metrics, /portlb_config_reload_errors_total\{file="services"\} [1-9]/);
    const r = await lab.load({ vips: [TUNNEL, NAT], seconds: 2, concurrency: 4 }).done;
    assert.equal(r.failed, 0);
    assert.equal(table(1), before);
    lab.writeServices(services());
  });

  test('the agent configuration reloaded (SIGHUP): a new peer applied live; a bad value and a restart-only change refused, named, counted; traffic unaffected', async () => {
    const file = path.join(lab.dir, 'agent-lb1.yaml');
    const original = readFileSync(file, 'utf8');
    const agent = lab.agent(1)!;
    const reload = (text: string) => {
      writeFileSync(file, text);
      agent.child.kill('SIGHUP');
    };
    const lines = () => lab.net.log(agent).split('\n');
    const logged = (...parts: RegExp[]) => lines().some((l) => parts.every((p) => p.test(l)));
    const load = lab.load({ vips: [TUNNEL, NAT], seconds: 600, concurrency: 2 });
    await load.started;
    try {
      reload(original.replace('asn: 65001', 'asn: 0'));
      await waitFor(
        'a bad value refused, named',
        () => logged(/configuration reload refused/, /bgp\.asn: .*\(got 0\)/),
        {
          timeoutMs: 15_000,
        },
      );
      reload(original.replace('asn: 65001', 'asn: 65002'));
      await waitFor(
        'a restart-only change refused, named',
        () => logged(/configuration reload refused/, /needs a restart to change: bgp\.asn/),
        {
          timeoutMs: 15_000,
        },
      );
      const metrics = await (await fetch(`http://${lbAddress(1)}:9180/metrics`)).text();
      assert.match(metrics, /portlb_config_reload_errors_total\{file="config"\} 2/);
      const refused = await lab.status(1);
      assert.ok(
        refused.notices.some((n: { message: string }) =>
          /needs a restart to change: bgp\.asn/.test(n.message),
        ),
        'portlb status says it',
      );
      assert.deepEqual(
        refused.bgp.peers.map((p: { address: string }) => p.address),
        ['10.0.0.1'],
      );
      reload(original.replace('peers: [{', 'peers: [{ address: 10.0.0.250, asn: 65000 }, {'));
      await waitFor(
        'the new peer applied',
        async () => {
          const s = await lab.status(1);
          return (
            s.bgp.peers.some((p: { address: string }) => p.address === '10.0.0.250') &&
            !s.notices.some((n: { subject: string }) => n.subject === 'config-reload')
          );
        },
        { timeoutMs: 15_000 },
      );
      // The speaker may list the peer before the reload has finished and logged it.
      await waitFor(
        'the reload logged',
        () => logged(/configuration reloaded/, /"applied":\["bgp\.peers"\]/),
        {
          timeoutMs: 10_000,
        },
      );
      assert.equal(lab.sessionState(1), 'Established', 'the router session untouched');
    } finally {
      reload(original);
      load.stop();
    }
    await waitFor('back to one peer', async () => (await lab.status(1)).bgp.peers.length === 1, {
      timeoutMs: 15_000,
    });
    const r = await load.done;
    assert.equal(r.failed, 0, `no request failed (${JSON.stringify(r.failures)})`);
  });

  test('a bad agent configuration: exit 2 naming the option and value, nothing applied', () => {
    lab.net.addNamespace('scratch');
    const bad = path.join(lab.dir, 'bad-agent.yaml');
    writeFileSync(
      bad,
      `mode: standalone\nstandalone: { servicesFile: ${lab.servicesFile} }\nbgp: { asn: 0, peers: [] }\nipvs: { vipInterface: portlb0 }\n`,
    );
    const r = spawnSync(
      'ip',
      [
        'netns',
        'exec',
        lab.net.ns('scratch'),
        process.execPath,
        'lb-agent/bin/portlb.js',
        'agent',
        '--config',
        bad,
      ],
      {
        encoding: 'utf8',
        timeout: 60_000,
      },
    );
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /bgp\.asn: must be an AS number from 1 to 4294967295 \(got 0\)/);
    assert.equal(
      spawnSync('ip', ['netns', 'exec', lab.net.ns('scratch'), 'ip', 'link', 'show', 'portlb0']).status,
      1,
      'no VIP interface created',
    );
    assert.doesNotMatch(lab.net.exec('scratch', 'ipvsadm', ['-Ln']), /TCP|UDP/);
  });

  test('SIGTERM starts a graceful shutdown; a second signal exits at once', async () => {
    const cfg = path.join(lab.dir, 'slow-shutdown.yaml');
    writeFileSync(
      cfg,
      [
        'mode: standalone',
        `standalone: { servicesFile: ${lab.servicesFile} }`,
        'pools: [{ name: lab, addresses: [203.0.113.0/24] }]',
        `bgp: { asn: 65001, routerId: 10.0.0.99, speakerSocket: "unix://${path.join(lab.dir, 'nobody.sock')}", gracefulShutdownSeconds: 60, peers: [] }`,
        'http: { listen: "127.0.0.1:9181" }',
        '',
      ].join('\n'),
    );
    const child = spawn('ip', [
      'netns',
      'exec',
      lab.net.ns('scratch'),
      process.execPath,
      'lb-agent/bin/portlb.js',
      'agent',
      '--config',
      cfg,
    ]);
    let log = '';
    child.stdout.on('data', (d) => (log += d));
    child.stderr.on('data', (d) => (log += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await waitFor('agent running', () => log.includes('agent running'), { timeoutMs: 60_000 });
    child.kill('SIGTERM');
    await waitFor(
      'graceful shutdown begun',
      () => log.includes('graceful shutdown: announcing GRACEFUL_SHUTDOWN'),
      { timeoutMs: 30_000 },
    );
    const t0 = Date.now();
    child.kill('SIGTERM');
    assert.equal(await exited, 130);
    assert.ok(
      Date.now() - t0 < 5000,
      `exited ${Date.now() - t0} ms after the second signal (the graceful wait was 60 s)`,
    );
    assert.match(log, /second signal: exiting now/);
  });
});
