// BFD and the dead-man switch end to end, under load, tunnel + mh: three replicas, two
// with BFD (100 ms x 3, the shipped bfd entrypoint provisioned by each agent) and one
// without (hold time 3 s, our most aggressive BGP setting) for comparison. A replica whose
// link is cut upstream (nothing sent, nothing received: no FIN, no RST, no NOTIFICATION)
// must leave the router's ECMP within 0.5 s with BFD; a frozen agent (SIGSTOP: its
// gobgpd and BIRD alive and answering) within 2 s.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { birdc } from '../harness/bgp.ts';
import { describeLoad, Lab, labServices, lbAddress, TUNNEL_VIP as TUNNEL } from '../harness/lab.ts';
import { run, waitFor } from '../harness/netns.ts';

const report: string[] = [];
const record = (line: string) => {
  report.push(line);
  console.log(`# measured: ${line}`);
};

describe('e2e: BFD toward the router and the dead-man switch', () => {
  if (process.env.PORTLB_IN_UML !== '1')
    throw new Error('e2e tests run inside the kernel harness (npm test does)');
  const lab = new Lab({
    prefix: 'e2b',
    maxReplicas: 3,
    backends: 3,
    services: labServices(),
    resyncSeconds: 5,
    bfd: { intervalMs: 100, multiplier: 3, deadManSeconds: 1, without: [3], holdTimeWithout: 3 },
  });
  /** The router-side bridge port of a replica: state 0 (disabled) cuts it silently. */
  const cut = (i: number, on: boolean) =>
    run('bridge', ['link', 'set', 'dev', `${lab.net.prefix}lb${i}h`, 'state', on ? '0' : '3']);
  const hops = () => lab.nextHops(TUNNEL);
  /** Polls the router's FIB until lb i is gone from the VIP's next hops; ms since `from`. */
  const goneAfter = async (i: number, from: number) => {
    for (;;) {
      if (!hops().includes(lbAddress(i))) return Date.now() - from;
      if (Date.now() - from > 30_000) throw new Error(`lb${i} still a next hop after 30 s: ${hops()}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const routerBfd = () => birdc(lab.net, 'router', lab.bird, 'show bfd sessions');

  before(async () => {
    await lab.up();
    await Promise.all([1, 2, 3].map((i) => lab.startReplica(i)));
    await lab.waitNextHops(TUNNEL, 3, 60_000);
  });
  after(async () => {
    console.log(`# e2e BFD summary:\n#   ${report.join('\n#   ')}`);
    await lab.down();
  });

  test('each agent provisions its BFD responder: the router has BFD sessions up with lb1 and lb2, none with lb3', async () => {
    await waitFor(
      'BFD up toward lb1 and lb2',
      () => {
        const out = routerBfd();
        return [1, 2].every((i) =>
          new RegExp(`${lbAddress(i).replaceAll('.', '\\.')}\\s+\\S+\\s+Up`).test(out),
        );
      },
      { timeoutMs: 30_000, intervalMs: 500 },
    );
    assert.doesNotMatch(routerBfd(), new RegExp(lbAddress(3).replaceAll('.', '\\.')));
    const metrics = await (await fetch(`http://${lbAddress(1)}:9180/metrics`)).text();
    assert.match(metrics, /portlb_bfd_session_up\{peer="10\.0\.0\.1",state="up"\} 1/);
    assert.match(metrics, /portlb_dead_man_holding 0/);
    const status = (await (await fetch(`http://${lbAddress(1)}:9180/status`)).json()) as {
      bfd: {
        reachable: boolean;
        sessions: { peer: string; state: string }[];
        deadMan: { holding: string | null };
      };
    };
    assert.deepEqual(status.bfd.sessions, [{ peer: '10.0.0.1', state: 'up' }]);
    assert.equal(status.bfd.deadMan.holding, null);
  });

  for (const [i, label, target] of [
    [1, 'with BFD (100 ms x 3)', 500],
    [3, 'without BFD (hold time 3 s)', 3500],
  ] as const) {
    test(`a replica cut off silently, ${label}: out of ECMP within ${target} ms; requests counted`, async () => {
      const load = lab.load({ vips: [TUNNEL], seconds: 600, concurrency: 3 });
      await load.started;
      await new Promise((r) => setTimeout(r, 2000));
      const t0 = Date.now();
      cut(i, true);
      let detected: number;
      try {
        detected = await goneAfter(i, t0);
        await new Promise((r) => setTimeout(r, 2000));
      } finally {
        cut(i, false);
        load.stop();
      }
      const r = await load.done;
      record(
        `replica cut off ${label}: out of the router's ECMP after ${detected} ms (target ${target} ms); load: ${describeLoad(r)}`,
      );
      // The connections hashed to the cut replica before the router knew are lost or stall:
      // that window is what BFD shortens.
      assert.ok(detected <= target, `detected after ${detected} ms`);
      await lab.waitNextHops(TUNNEL, 3, 60_000);
    });
  }

  test('a frozen agent (SIGSTOP; gobgpd and BIRD alive): the dead-man switch takes its node out within 2 s; back when it resumes', async () => {
    const agent = lab.agent(2)!;
    const load = lab.load({ vips: [TUNNEL], seconds: 600, concurrency: 3 });
    await load.started;
    await new Promise((r) => setTimeout(r, 2000));
    const t0 = Date.now();
    agent.child.kill('SIGSTOP');
    let gone: number;
    let cameBack: string | undefined;
    try {
      gone = await goneAfter(2, t0);
      // It stays out while frozen: the router must not bring the BGP session (and the
      // route) back while BFD stays down.
      const until = Date.now() + 5000;
      while (Date.now() < until && !cameBack) {
        if (hops().includes(lbAddress(2))) cameBack = `back at ${Date.now() - t0} ms while still frozen`;
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      agent.child.kill('SIGCONT');
    }
    const t1 = Date.now();
    await lab.waitNextHops(TUNNEL, 3, 60_000);
    const back = Date.now() - t1;
    load.stop();
    const r = await load.done;
    record(
      `agent frozen (SIGSTOP), dead-man 1 s + BFD 100 ms x 3: out of ECMP after ${gone} ms (target 2000 ms), back ${back} ms after SIGCONT; load: ${describeLoad(r)}`,
    );
    assert.ok(gone <= 2000, `out after ${gone} ms`);
    assert.equal(cameBack, undefined);
    assert.equal(
      r.failed,
      0,
      `tunnel + mh: moving off a frozen replica breaks nothing (${JSON.stringify(r.failures)})`,
    );
  });
});
