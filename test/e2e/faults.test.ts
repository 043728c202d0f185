// Faults nobody planned, under load, in the Kubernetes-mode lab (the real agents watch a
// fake API server over HTTPS; real IPVS, gobgpd and BIRD): each injected while a client
// runs through the VIPs, with its figures printed: failed requests, time to recovery,
// route withdrawals seen by the router.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  describeLoad,
  Lab,
  type LoadResult,
  labServices,
  lbAddress,
  NAT_VIP as NAT,
  TUNNEL_VIP as TUNNEL,
} from '../harness/lab.ts';
import { waitFor } from '../harness/netns.ts';

const figures: string[] = [];
const record = (line: string) => {
  figures.push(line);
  console.log(`# measured: ${line}`);
};
const summary = describeLoad;

describe('e2e: faults under load (Kubernetes mode)', () => {
  if (process.env.PORTLB_IN_UML !== '1')
    throw new Error('e2e tests run inside the kernel harness (npm test does)');
  const lab = new Lab({
    prefix: 'e2f',
    maxReplicas: 2,
    backends: 3,
    services: labServices(),
    kubernetes: true,
    resyncSeconds: 3,
    drainTimeoutSeconds: 20,
  });
  const faultsFile = (i: number) => path.join(lab.dir, `faults-lb${i}.json`);
  const inject = (i: number, faults: object) => writeFileSync(faultsFile(i), JSON.stringify(faults));
  const withdraws = () => lab.routerWithdraws(1) + lab.routerWithdraws(2);
  const metric = async (i: number, name: string) => {
    const text = await (await fetch(`http://${lbAddress(i)}:9180/metrics`)).text();
    return text
      .split('\n')
      .filter((l) => l.startsWith(name))
      .reduce((n, l) => n + Number(l.split(' ').at(-1)), 0);
  };

  before(async () => {
    await lab.up();
    for (const i of [1, 2]) {
      inject(i, {});
      await lab.startReplica(i, { env: { PORTLB_TEST_FAULTS: faultsFile(i) } });
    }
    await lab.waitNextHops(TUNNEL, 2, 60_000);
    await lab.waitNextHops(NAT, 2, 60_000);
  });
  after(async () => {
    console.log(`# e2e faults summary:\n#   ${figures.join('\n#   ')}`);
    await lab.down();
  });

  /** Runs `during` under short-connection load through both VIPs. */
  async function underLoad(during: () => Promise<void>): Promise<LoadResult> {
    const load = lab.load({ vips: [TUNNEL, NAT], seconds: 600, concurrency: 4 });
    await load.started;
    await new Promise((r) => setTimeout(r, 1500));
    await during();
    await new Promise((r) => setTimeout(r, 1500));
    load.stop();
    return load.done;
  }

  test('the kernel cannot be read (the read-back, then the full pass): 0 withdrawals, 0 failed requests', async () => {
    const before = withdraws();
    const errors = await metric(1, 'portlb_errors_total{code="KERNEL_ERROR"');
    const r = await underLoad(async () => {
      // Two reads: the periodic read-back beside the passes, then the full pass's own.
      inject(1, { read: 2 });
      await waitFor(
        'the fault fired',
        async () => (await metric(1, 'portlb_errors_total{code="KERNEL_ERROR"')) > errors,
        {
          timeoutMs: 30_000,
          intervalMs: 500,
        },
      );
      await new Promise((res) => setTimeout(res, 4000)); // the next passes
    });
    const w = withdraws() - before;
    record(`kernel read failed twice (read-back, full pass): ${summary(r)}; ${w} route withdrawals`);
    assert.ok(r.requests > 30);
    assert.equal(r.failed, 0, JSON.stringify(r.failures));
    assert.equal(w, 0, 'no route withdrawn on doubt');
    assert.deepEqual(lab.nextHops(TUNNEL), [lbAddress(1), lbAddress(2)]);
  });

  test('a write batch fails in transport: the agent stays up and converges on the next pass', async () => {
    const pid = lab.agent(1)!.child.pid;
    const r = await underLoad(async () => {
      inject(1, { execute: 1 });
      // A change that needs writes: a fourth backend for both Services... (be3 leaves, comes back)
      await lab.writeServices(labServices([{ n: 1 }, { n: 2 }]));
      const t0 = Date.now();
      const has = (n: number) =>
        lab.backendsIn(1, NAT).some((b) => b.address === `10.0.0.${20 + n}` && b.weight > 0);
      await waitFor('converged without be3', () => !has(3), {
        timeoutMs: 60_000,
        intervalMs: 500,
      });
      record(`a write batch failed in transport: converged ${Date.now() - t0} ms after the change`);
      await lab.writeServices(labServices());
      await waitFor('be3 back', () => has(3), { timeoutMs: 60_000, intervalMs: 500 });
    });
    record(`write batch fault: ${summary(r)}`);
    assert.equal(lab.agent(1)!.child.exitCode, null, 'the agent is still running');
    assert.equal(lab.agent(1)!.child.pid, pid);
    assert.equal(r.failed, 0, JSON.stringify(r.failures));
  });

  test('an annotation on a serving Service set to garbage and back: 0 failed requests, nothing withdrawn', async () => {
    const kube = lab.kube!;
    const before = withdraws();
    const r = await underLoad(async () => {
      await kube.patch('services', 'default', 'web', {
        metadata: { annotations: { 'portlb.io/scheduler': 'fastest' } },
      });
      await waitFor(
        'the warning',
        async () => {
          const events = await kube.list('events', 'default');
          return events.some((e) => e.reason === 'InvalidSettingsKept' && e.involvedObject?.name === 'web');
        },
        { timeoutMs: 30_000, intervalMs: 500 },
      );
      await new Promise((res) => setTimeout(res, 4000));
      assert.match(
        lab.ipvsadm(1, ['-Ln', '-t', `${TUNNEL}:80`]),
        /mh/,
        'still programmed with its last valid settings',
      );
      await kube.patch('services', 'default', 'web', {
        metadata: { annotations: { 'portlb.io/scheduler': 'mh' } },
      });
    });
    const w = withdraws() - before;
    record(`annotation garbage and back: ${summary(r)}; ${w} route withdrawals`);
    assert.equal(r.failed, 0, JSON.stringify(r.failures));
    assert.equal(w, 0);
  });

  test('the API server hangs for 60 s: the data plane keeps converging endpoint changes; the leader steps down', async () => {
    const kube = lab.kube!;
    const r = await underLoad(async () => {
      await kube.call('POST', '/_fake/hang?on=1');
      try {
        await new Promise((res) => setTimeout(res, 3000));
        // be3 leaves web-nat (through the server's own controls: the watches still stream).
        const t0 = Date.now();
        await kube.call('PATCH', '/_fake/objects/endpointslices/default/web-nat-1', {
          endpoints: [1, 2].map((n) => ({ addresses: [`10.0.0.${20 + n}`], conditions: { ready: true } })),
        });
        const be3 = () => lab.backendsIn(1, NAT).find((b) => b.address === '10.0.0.23');
        await waitFor('the kernel has the change', () => !be3() || be3()!.weight === 0, {
          timeoutMs: 30_000,
          intervalMs: 100,
        });
        record(`API server hung: EndpointSlice change -> kernel ${Date.now() - t0} ms`);
        await new Promise((res) => setTimeout(res, Math.max(0, 60_000 - (Date.now() - t0) - 3000)));
        const leaders = (await Promise.all([1, 2].map((i) => metric(i, 'portlb_leader')))).reduce(
          (a, b) => a + b,
          0,
        );
        assert.equal(
          leaders,
          0,
          'no leader while every Lease call hangs (each aborted at the renew deadline)',
        );
      } finally {
        await kube.call('POST', '/_fake/hang?on=0');
      }
    });
    record(`API server hung 60 s: ${summary(r)}`);
    assert.equal(r.failed, 0, JSON.stringify(r.failures));
    await waitFor(
      'a leader again',
      async () => (await metric(1, 'portlb_leader')) + (await metric(2, 'portlb_leader')) === 1,
      {
        timeoutMs: 30_000,
        intervalMs: 500,
      },
    );
    await lab.writeServices(labServices());
  });

  test('the wall clock jumps forward and back an hour: passes keep their pace, the drain its length, the leader its lease', async () => {
    const syncs = async () => metric(1, 'portlb_syncs_total');
    const leaderOf = async () => ((await metric(1, 'portlb_leader')) ? 1 : 2);
    const leader = await leaderOf();
    // A long-lived connection to be3 through the tunnel VIP, then be3 leaves: it drains (20 s).
    // ECMP spreads the connections over both replicas and mh over three backends: watch
    // the replica that actually holds a connection to be3 (30 connections: some do).
    // A request a second on each: the guest must carry them through the clock steps
    // without a request timing out (a client that gives up closes its connection, and a
    // drain whose connections are gone rightly ends early).
    const keep = lab.load({ vips: [TUNNEL], seconds: 600, keepalive: 30, intervalMs: 1000 });
    try {
      await keep.started;
      const be3In = (i: number) => lab.backendsIn(i, TUNNEL).find((b) => b.address === '10.0.0.23');
      const holder = await waitFor(
        'a connection held on be3',
        () => [1, 2].find((i) => (be3In(i)?.active ?? 0) > 0),
        {
          timeoutMs: 20_000,
          intervalMs: 300,
        },
      );
      await lab.writeServices(labServices([{ n: 1 }, { n: 2 }]));
      const be3 = () => be3In(holder);
      const draining = () => {
        const b = be3();
        return b !== undefined && b.weight === 0 && b.active > 0;
      };
      await waitFor('be3 draining', draining, { timeoutMs: 30_000, intervalMs: 300 });
      // The drain began when the agent set weight 0, seconds before this test saw it in a
      // busy guest: its start comes from the agent (wall time, read before any step), and
      // this test counts on from there with the monotonic clock (it steps the wall clock).
      const status = (await lab.status(holder)) as { draining: { backend: string; since: string }[] };
      const since = status.draining.find((d) => d.backend.startsWith('10.0.0.23'))?.since;
      assert.ok(since, `the agent reports the drain: ${JSON.stringify(status.draining)}`);
      const drainStart = performance.now() - Math.max(0, Date.now() - Date.parse(since));
      // be3 watched all along: a drain may end early only because its connections ended
      // (the agent removes an idle drain); removed while connections were open before
      // its timeout would be a drain cut short.
      let lastActive = Number.NaN;
      let removedAt: number | undefined;
      const watch = async (ms: number) => {
        const until = performance.now() + ms;
        while (performance.now() < until && removedAt === undefined) {
          const b = be3();
          if (b) lastActive = b.active;
          else removedAt = performance.now();
          await new Promise((r) => setTimeout(r, 300));
        }
      };
      for (const step of ['+1 hour', '-2 hours']) {
        const before = await syncs();
        execFileSync('date', ['-s', step]);
        await watch(6000);
        const passes = (await syncs()) - before;
        record(
          `wall clock ${step}: ${passes} passes in the next 6 s (resync 3 s); leader lb${await leaderOf()}`,
        );
        assert.ok(passes >= 2, `passes continue (${passes})`);
        assert.equal(await leaderOf(), leader, 'the same leader: its lease follows monotonic time');
      }
      execFileSync('date', ['-s', '+1 hour']);
      await watch(40_000);
      assert.ok(removedAt !== undefined, 'the drain ends');
      const drained = (removedAt - drainStart) / 1000;
      if (drained < 15) {
        assert.equal(
          lastActive,
          0,
          `be3 removed after ${drained.toFixed(1)} s with connections open: the drain was cut short`,
        );
        record(
          `drain under clock steps: ended idle after ${drained.toFixed(1)} s (its connections closed first; timeout 20 s)`,
        );
      } else record(`drain under clock steps: ${drained.toFixed(1)} s (timeout 20 s)`);
    } finally {
      keep.stop();
      await keep.done.catch(() => undefined);
      await lab.writeServices(labServices());
    }
  });

  test('a host listener on 0.0.0.0 of an LB node is unreachable through a VIP; the service port is', async () => {
    const listener = lab.net.spawn('lb1', 'listener', process.execPath, [
      '-e',
      "require('net').createServer((s) => s.end('host\\n')).listen(2222, '0.0.0.0', () => console.log('listening'))",
    ]);
    await waitFor('the host listener', () => lab.net.log(listener).includes('listening'), {
      timeoutMs: 30_000,
    });
    // Every probe at once, each bounded: a filtered port answers nothing (DROP), so each
    // unreachable one costs its whole timeout.
    const probes = [
      [lbAddress(1), 2222],
      ...[TUNNEL, NAT].flatMap((vip) => [
        [vip, 2222],
        [vip, 9180],
        [vip, 179],
      ]),
    ] as const;
    const script = probes
      .map(
        ([a, p]) =>
          `(r=$(timeout 4 bash -c 'exec 3<>/dev/tcp/${a}/${p}; timeout 2 cat <&3' 2>/dev/null); echo "${a}:${p} \${r:-unreachable}") &`,
      )
      .join('\n');
    const seen = Object.fromEntries(
      lab.net
        .exec('client', 'bash', ['-c', `${script}\nwait`])
        .trim()
        .split('\n')
        .map((l) => l.split(' ') as [string, string]),
    );
    assert.equal(seen[`${lbAddress(1)}:2222`], 'host', "the node's own address reaches it");
    for (const vip of [TUNNEL, NAT]) {
      assert.equal(seen[`${vip}:2222`], 'unreachable', `${vip}:2222`);
      assert.equal(seen[`${vip}:9180`], 'unreachable', `the agent's HTTP on ${vip}`);
      assert.equal(seen[`${vip}:179`], 'unreachable', `gobgpd on ${vip}`);
    }
    const r = await lab.load({ vips: [NAT], seconds: 3, concurrency: 2 }).done;
    assert.equal(r.failed, 0);
    assert.ok(r.ok > 0, 'the service port answers');
    record(
      `VIP filter: host listener, agent HTTP and BGP unreachable on the VIPs; service port ${summary(r)}`,
    );
  });
});
