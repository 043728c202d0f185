// BFD toward the router, on this host's kernel in namespaces of the test's own: the
// shipped bfd entrypoint starts BIRD with its bootstrap configuration, the agent's
// responder provisions it (and again after BIRD restarts), the router's BIRD sees the
// session up; the dead-man switch (nftables guard here; legacy iptables in the e2e lab)
// holds BFD down when the agent stops saying it is live, and the router sees the session
// go down within the switch's timeout plus its detection time, then come back.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BfdResponder } from '../../lb-agent/src/bfd/bfd-responder.ts';
import { DeadManSwitch, NftGuard } from '../../lb-agent/src/bfd/dead-man.ts';
import { systemClock } from '../../lb-agent/src/util/clock.ts';
import { type Bird, birdc, startBirdWithConfig } from '../harness/bgp.ts';
import { type Daemon, NetnsLab, waitFor, waitForDaemonFile } from '../harness/netns.ts';

const repo = path.resolve(import.meta.dirname, '..', '..');
const ROUTER = '10.201.0.1';
const LB = '10.201.0.2';

describe('BFD responder and dead-man switch (host kernel, real BIRD on both ends)', () => {
  const lab = new NetnsLab(`plb${process.pid % 10000}`);
  let router: Bird;
  let responderBird: Daemon;
  const measured: string[] = [];
  const startResponderBird = async () => {
    rmSync(path.join(lab.dir, 'bird-bfd.ctl'), { force: true });
    const d = lab.spawn('lb', 'bird-bfd', 'sh', [path.join(repo, 'bgp-speaker', 'bfd-entrypoint.sh')], {
      ...process.env,
      PORTLB_BFD_DIR: lab.dir,
    });
    await waitForDaemonFile(lab, d, path.join(lab.dir, 'bird-bfd.ctl'), { timeoutMs: 10_000 });
    return d;
  };
  /** The router's view of its session toward the LB: Up, Down, Init, or '' when none. */
  const routerSees = () =>
    birdc(lab, 'r', router, 'show bfd sessions')
      .split('\n')
      .find((l) => l.trim().startsWith(LB))
      ?.trim()
      .split(/\s+/)[2] ?? '';
  const responder = () =>
    new BfdResponder({
      settings: {
        routerId: LB,
        intervalMs: 100,
        multiplier: 3,
        peers: [{ address: ROUTER, multihop: false }],
      },
      socket: path.join(lab.dir, 'bird-bfd.ctl'),
      configFile: path.join(lab.dir, 'bird-bfd.conf'),
      clock: systemClock,
    });

  before(async () => {
    lab.addNamespace('r');
    lab.addNamespace('lb');
    lab.link('r', 'r-lb', [`${ROUTER}/24`], 'lb', 'lb-r', [`${LB}/24`]);
    router = await startBirdWithConfig(
      lab,
      'r',
      `router id ${ROUTER};
log stderr all;
protocol device { scan time 10; }
protocol bfd { interface "*" { interval 100 ms; multiplier 3; }; neighbor ${LB}; }
`,
    );
    responderBird = await startResponderBird();
  });
  after(async () => {
    console.log(`# BFD host figures:\n#   ${measured.join('\n#   ')}`);
    await lab.cleanup();
  });

  test('the bootstrap BIRD has no session; provisioned by the agent, the router sees it up', async () => {
    const r = responder();
    const first = await r.poll();
    assert.equal(first.reachable, true, first.error);
    assert.match(lab.exec('lb', 'cat', [path.join(lab.dir, 'bird-bfd.conf')]), /neighbor 10\.201\.0\.1;/);
    await waitFor(
      'the session up on both ends',
      async () => {
        const v = await r.poll();
        return v.sessions?.[0]?.state === 'up' && routerSees() === 'Up';
      },
      { timeoutMs: 10_000, intervalMs: 100 },
    );
    r.close();
  });

  test('BIRD restarted from the bootstrap configuration: re-provisioned on the next poll; unreachable is unknown, not down', async () => {
    const r = responder();
    await r.poll();
    await lab.kill(responderBird, 'SIGKILL');
    const gone = await r.poll();
    assert.equal(gone.reachable, false);
    assert.equal(gone.sessions?.[0]?.state, 'up', 'the last known sessions are kept, marked unreachable');
    rmSync(path.join(lab.dir, 'bird-bfd.conf'));
    responderBird = await startResponderBird();
    await waitFor(
      're-provisioned and up',
      async () => {
        const v = await r.poll();
        return v.reachable && v.sessions?.[0]?.state === 'up' && routerSees() === 'Up';
      },
      { timeoutMs: 10_000, intervalMs: 100 },
    );
    r.close();
  });

  test('dead-man switch: the router sees BFD down within timeout + detection when the agent stops being live, up when it is again', async () => {
    // The agent's own guard (nft -f to install, one long-running nft -i for refreshes),
    // run in the LB namespace.
    const guard = new NftGuard(['ip', 'netns', 'exec', lab.ns('lb')]);
    let live = true;
    const dm = new DeadManSwitch({
      peers: [ROUTER],
      bgpPorts: [179],
      timeoutMs: 1000,
      backend: guard,
      live: () => ({ ok: live, reason: live ? undefined : 'test: not live' }),
      clock: systemClock,
    }).start();
    try {
      await waitFor('the session up', () => routerSees() === 'Up', { timeoutMs: 10_000, intervalMs: 100 });
      // Refreshed every timeout/4: the session stays up.
      const upSince = Date.now();
      while (Date.now() - upSince < 3000) {
        assert.equal(routerSees(), 'Up', 'the guard lets BFD out while the agent is live');
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.match(
        lab.exec('lb', 'nft', ['list', 'set', 'ip', 'portlb_bfd', 'alive']),
        /10\.201\.0\.1 timeout 1s expires/,
      );
      const stopped = Date.now();
      live = false;
      await waitFor('the router sees the session down', () => routerSees() === 'Down', {
        timeoutMs: 5000,
        intervalMs: 20,
      });
      const down = Date.now() - stopped;
      live = true;
      const back = Date.now();
      await waitFor('the session up again', () => routerSees() === 'Up', {
        timeoutMs: 10_000,
        intervalMs: 20,
      });
      const up = Date.now() - back;
      measured.push(
        `dead-man switch (timeout 1 s, BFD 100 ms x 3): router saw Down ${down} ms after the agent stopped being live; Up ${up} ms after it was live again`,
      );
      console.log(`# measured: ${measured.at(-1)}`);
      // The element expires 0.75-1 s after the last refresh, then 300 ms of detection.
      assert.ok(down <= 1000 + 300 + 400, `down after ${down} ms`);
      assert.ok(down >= 300, `not before the element could expire (${down} ms)`);
    } finally {
      dm.close();
    }
  });
});
