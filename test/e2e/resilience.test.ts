// End to end under continuous load: an agent restart, a graceful replica shutdown, a
// speaker crash, and a scale-out, with `tunnel` + `mh` (where flows survive a move
// between replicas) and with `nat` (where they cannot: counted and reported).
import assert from 'node:assert/strict';
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

const services = labServices();
const report: string[] = [];
const record = (line: string) => {
  report.push(line);
  console.log(`# measured: ${line}`);
};
const summary = describeLoad;

describe('e2e: resilience under load', () => {
  if (process.env.PORTLB_IN_UML !== '1')
    throw new Error('e2e tests run inside the kernel harness (npm test does)');
  const lab = new Lab({
    prefix: 'e2r',
    maxReplicas: 3,
    backends: 3,
    services,
    resyncSeconds: 5,
    gracefulShutdownSeconds: 3,
  });

  before(async () => {
    await lab.up();
    await Promise.all([lab.startReplica(1), lab.startReplica(2)]);
    await lab.waitNextHops(TUNNEL, 2);
    await lab.waitNextHops(NAT, 2);
  });
  after(async () => {
    console.log(`# e2e resilience summary:\n#   ${report.join('\n#   ')}`);
    await lab.down();
  });

  /** Runs `during` while short-connection load hits the given VIPs; returns the load results. */
  async function underLoad(
    vips: string[],
    during: () => Promise<void>,
    settleMs = 2000,
  ): Promise<LoadResult[]> {
    const loads = vips.map((vip) => lab.load({ vips: [vip], seconds: 600, concurrency: 3 }));
    await Promise.all(loads.map((l) => l.started));
    await new Promise((r) => setTimeout(r, 2000)); // traffic flowing before the event
    await during();
    await new Promise((r) => setTimeout(r, settleMs));
    for (const l of loads) l.stop();
    return Promise.all(loads.map((l) => l.done));
  }

  const metric = async (i: number, name: string) => {
    const text = await (await fetch(`http://${lbAddress(i)}:9180/metrics`)).text();
    return text
      .split('\n')
      .filter((l) => l.startsWith(name))
      .reduce((n, l) => n + Number(l.split(' ').at(-1)), 0);
  };

  test('an agent restarted under continuous load: zero failed requests, zero writes on adoption', async () => {
    const [tunnel, nat] = await underLoad([TUNNEL, NAT], async () => {
      await lab.net.kill(lab.agent(1)!, 'SIGKILL');
      await lab.startAgent(1);
    });
    record(`agent restart (SIGKILL + start): tunnel ${summary(tunnel!)}; nat ${summary(nat!)}`);
    assert.ok(tunnel!.requests > 50 && nat!.requests > 50, 'the load really ran');
    assert.equal(tunnel!.failed, 0, JSON.stringify(tunnel!.failures));
    assert.equal(nat!.failed, 0, JSON.stringify(nat!.failures));
    assert.equal(
      await metric(1, 'portlb_ipvs_operations_total'),
      0,
      'the restarted agent adopted the kernel state',
    );
    assert.deepEqual(lab.nextHops(TUNNEL), [lbAddress(1), lbAddress(2)]);
  });

  test('a replica shut down gracefully under continuous load: zero failed requests (tunnel + mh)', async () => {
    const [tunnel, nat] = await underLoad([TUNNEL, NAT], async () => {
      const stopped = lab.gracefulStop(2);
      // GRACEFUL_SHUTDOWN first: the router moves traffic away while lb2 still announces.
      await waitFor(
        'router prefers lb1 before the withdraw',
        () => lab.nextHops(TUNNEL).join() === lbAddress(1),
        { timeoutMs: 15_000, intervalMs: 100 },
      );
      await stopped;
    });
    record(`graceful shutdown of a replica: tunnel ${summary(tunnel!)}; nat ${summary(nat!)}`);
    assert.ok(tunnel!.requests > 50);
    assert.equal(tunnel!.failed, 0, JSON.stringify(tunnel!.failures));
    await lab.startReplica(2);
    await lab.waitNextHops(TUNNEL, 2);
  });

  test("a replica's gobgpd killed: the agent re-provisions it; failures counted", async () => {
    const provisions = await metric(1, 'portlb_bgp_speaker_provisions_total');
    let downMs = 0;
    const [tunnel, nat] = await underLoad([TUNNEL, NAT], async () => {
      const t0 = Date.now();
      await lab.net.kill(lab.gobgpd(1)!.daemon, 'SIGKILL');
      await lab.waitNextHops(TUNNEL, 1);
      await lab.restartGobgpd(1);
      await lab.waitNextHops(TUNNEL, 2);
      await lab.waitNextHops(NAT, 2);
      downMs = Date.now() - t0;
    });
    record(
      `gobgpd killed and restarted: paths back in ${downMs} ms; tunnel ${summary(tunnel!)}; nat ${summary(nat!)}`,
    );
    await waitFor(
      'provisioning counted',
      async () => (await metric(1, 'portlb_bgp_speaker_provisions_total')) > provisions,
    );
    assert.ok(tunnel!.requests > 0 && nat!.requests > 0, 'the load ran');
  });

  test('a replica killed outright (agent and gobgpd SIGKILLed) under load, three times: tunnel + mh 0 failed; nat counted', async () => {
    const runs: string[] = [];
    let tunnelFailed = 0;
    for (let run = 1; run <= 3; run++) {
      // One load per VIP: a failure is attributed to its forwarding method.
      const [tunnel, nat] = await underLoad([TUNNEL, NAT], async () => {
        const t0 = Date.now();
        await lab.killReplica(2);
        await lab.waitNextHops(TUNNEL, 1);
        runs.push(`run ${run}: out of ECMP after ${Date.now() - t0} ms`);
      });
      record(
        `replica killed (agent + gobgpd SIGKILL), run ${run}: tunnel ${summary(tunnel!)}; nat ${summary(nat!)}`,
      );
      assert.ok(tunnel!.requests > 50 && nat!.requests > 50, 'the load ran');
      tunnelFailed += tunnel!.failed;
      await lab.startReplica(2);
      await lab.waitNextHops(TUNNEL, 2);
      await lab.waitNextHops(NAT, 2);
    }
    record(`replica killed: ${runs.join('; ')}; tunnel failed requests over 3 runs: ${tunnelFailed}`);
    assert.equal(tunnelFailed, 0, 'tunnel + mh: a dead replica costs no request');
  });

  test('scale-out from two to three replicas: tunnel + mh, zero reset long-lived connections; nat, counted', async () => {
    const measure = async (vip: string) => {
      const before = (await lab.connections(3).catch(() => ({}))) as Record<string, number>;
      const keep = lab.load({ vips: [vip], seconds: 600, keepalive: 24, intervalMs: 50 });
      await keep.started;
      await new Promise((r) => setTimeout(r, 2000));
      await lab.startReplica(3);
      await lab.waitNextHops(vip, 3);
      await new Promise((r) => setTimeout(r, 3000));
      keep.stop();
      const r = await keep.done;
      const moved = ((await lab.connections(3))[`tcp:${vip}:80`] ?? 0) - (before[`tcp:${vip}:80`] ?? 0);
      return { r, moved };
    };
    const tunnel = await measure(TUNNEL);
    record(
      `scale-out 2 -> 3, tunnel + mh: ${summary(tunnel.r)}; ${tunnel.moved} flows carried by the new replica`,
    );
    assert.equal(tunnel.r.connections?.broken, 0, JSON.stringify(tunnel.r.failures));
    assert.ok(tunnel.moved > 0, 'some flows really moved to the new replica');

    await lab.gracefulStop(3);
    await lab.waitNextHops(NAT, 2);
    const nat = await measure(NAT);
    record(
      `scale-out 2 -> 3, nat: ${summary(nat.r)}; ${nat.moved} flows hit the new replica (expected to break: the backend sees a new source)`,
    );
    assert.ok(nat.r.connections !== undefined);
  });
});
