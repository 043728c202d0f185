// BGP against real daemons: two LB replicas, each a real gobgpd driven by our adapter,
// and BIRD2 as the core router, in network namespaces this test creates. The router's
// kernel FIB is the judge: one VIP route with a next hop per announcing replica.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { BgpError } from '../../lb-agent/src/bgp/errors.ts';
import { GobgpSpeaker } from '../../lb-agent/src/bgp/gobgp-speaker.ts';
import { type BgpPeerConfig, GRACEFUL_SHUTDOWN } from '../../lb-agent/src/bgp/types.ts';
import { ad, peer as basePeer } from '../bgp/conformance.ts';
import { type Bird, birdc, birdProtocolState, type Gobgpd, startBird, startGobgpd } from '../harness/bgp.ts';
import { fibNextHops, NetnsLab, waitFor } from '../harness/netns.ts';

const VIP = '203.0.113.10/32';
const VIP6 = 'fd00:203::10/128';
// A peer of the address's own family (the conformance helper defaults to IPv4).
const peer = (address: string, extra: Partial<BgpPeerConfig> = {}): BgpPeerConfig =>
  basePeer(address, { families: [address.includes(':') ? 'ipv6' : 'ipv4'], ...extra });

describe('BGP: gobgpd replicas + BIRD router, ECMP in the kernel FIB', () => {
  const lab = new NetnsLab();
  let bird: Bird;
  const gobgp: Record<string, Gobgpd> = {};
  const speakers: Record<string, GobgpSpeaker> = {};
  const replicas = {
    lb1: { v4: '10.100.1.2', v6: 'fd00:100:1::2', router4: '10.100.1.1', router6: 'fd00:100:1::1' },
    lb2: { v4: '10.100.2.2', v6: 'fd00:100:2::2', router4: '10.100.2.1', router6: 'fd00:100:2::1' },
    lb3: { v4: '10.100.3.2', v6: 'fd00:100:3::2', router4: '10.100.3.1', router6: 'fd00:100:3::1' },
  };
  const peersOf = (name: keyof typeof replicas, extra: Partial<BgpPeerConfig> = {}) => [
    peer(replicas[name].router4, extra),
    peer(replicas[name].router6, extra),
  ];

  async function startSpeaker(name: keyof typeof replicas): Promise<GobgpSpeaker> {
    const s = new GobgpSpeaker({ target: gobgp[name]!.target, healthIntervalMs: 500 }).start();
    await waitFor(`${name} speaker connected`, () => s.connected());
    await s.setGlobal({
      asn: 65001,
      routerId: replicas[name].v4,
      listenPort: 179,
      listenAddresses: [replicas[name].v4, replicas[name].v6],
    });
    return s;
  }

  const established = (s: GobgpSpeaker, address: string) =>
    waitFor(`session to ${address} established`, async () =>
      (await s.listPeers()).find((p) => p.address === address && p.state === 'established'),
    );

  before(async () => {
    lab.addNamespace('r');
    for (const [i, [name, r]] of Object.entries(replicas).entries()) {
      lab.addNamespace(name);
      lab.link('r', `r-${name}`, [`${r.router4}/24`, `${r.router6}/64`], name, `${name}-r`, [
        `${r.v4}/24`,
        `${r.v6}/64`,
      ]);
      void i;
    }
    bird = await startBird(lab, 'r', {
      routerId: '10.100.0.1',
      asn: 65000,
      holdTime: 9,
      neighbors: [
        { name: 'lb1', address: replicas.lb1.v4, asn: 65001, family: 'ipv4' },
        { name: 'lb2', address: replicas.lb2.v4, asn: 65001, family: 'ipv4' },
        { name: 'lb1v6', address: replicas.lb1.v6, asn: 65001, family: 'ipv6' },
        { name: 'lb2v6', address: replicas.lb2.v6, asn: 65001, family: 'ipv6' },
        {
          name: 'lb3',
          address: replicas.lb3.v4,
          asn: 65001,
          family: 'ipv4',
          password: 'right-horse-battery',
        },
      ],
    });
    for (const name of ['lb1', 'lb2', 'lb3'] as const) {
      gobgp[name] = await startGobgpd(lab, name);
      speakers[name] = await startSpeaker(name);
    }
    await speakers.lb1!.setPeers(peersOf('lb1'));
    await speakers.lb2!.setPeers(peersOf('lb2'));
    await established(speakers.lb1!, replicas.lb1.router4);
    await established(speakers.lb2!, replicas.lb2.router4);
  });

  after(async () => {
    await Promise.all(Object.values(speakers).map((s) => s.close()));
    await lab.cleanup();
  });

  test('both replicas announce the VIP: one route, two next hops', async () => {
    await speakers.lb1!.setAdvertisements([ad(VIP)]);
    await speakers.lb2!.setAdvertisements([ad(VIP)]);
    await waitFor('two next hops', () => fibNextHops(lab, 'r', VIP).length === 2);
    assert.deepEqual(fibNextHops(lab, 'r', VIP), [replicas.lb1.v4, replicas.lb2.v4]);
    assert.deepEqual(
      (await speakers.lb1!.listAdvertisements()).map((a) => a.prefix),
      [VIP],
    );
  });

  test('one replica withdraws: one next hop; it announces again: two', async () => {
    await speakers.lb1!.setAdvertisements([]);
    await waitFor('one next hop', () => fibNextHops(lab, 'r', VIP).join() === replicas.lb2.v4);
    await speakers.lb1!.setAdvertisements([ad(VIP)]);
    await waitFor('two next hops again', () => fibNextHops(lab, 'r', VIP).length === 2);
  });

  test('gobgpd killed and restarted: the adapter re-provisions on its own, two next hops again', async () => {
    const s = speakers.lb1!;
    const provisioned = new Promise<{ started: boolean; paths: number; peers: number; durationMs: number }>(
      (resolve) => {
        const off = s.on('provisioned', (summary) => {
          off();
          resolve(summary);
        });
      },
    );
    await lab.kill(gobgp.lb1!.daemon, 'SIGKILL');
    await waitFor('route down to one next hop', () => fibNextHops(lab, 'r', VIP).join() === replicas.lb2.v4);
    await waitFor('the adapter notices the loss', () => !s.connected());
    // The sidecar comes back on the same socket, empty: nobody calls the adapter.
    gobgp.lb1 = await startGobgpd(lab, 'lb1', gobgp.lb1!.socket);
    const { durationMs, ...summary } = await provisioned;
    assert.deepEqual(summary, { started: true, peers: 2, paths: 1 });
    assert.ok(durationMs >= 0);
    await waitFor('two next hops after the restart', () => fibNextHops(lab, 'r', VIP).length === 2, {
      timeoutMs: 20_000,
    });
  });

  test('graceful shutdown: with 65535:0 the router prefers the other replica before the withdraw', async () => {
    await waitFor('two next hops', () => fibNextHops(lab, 'r', VIP).length === 2);
    await speakers.lb2!.setAdvertisements([ad(VIP, { communities: [GRACEFUL_SHUTDOWN] })]);
    await waitFor('traffic moved to lb1', () => fibNextHops(lab, 'r', VIP).join() === replicas.lb1.v4);
    // lb2's path is still there (not withdrawn), just not preferred.
    const routes = birdc(lab, 'r', bird, `show route for ${VIP.split('/')[0]} all`);
    assert.match(routes, /via 10\.100\.2\.2[\s\S]*BGP\.local_pref: 0\s+BGP\.community: \(65535,0\)/);
    await speakers.lb2!.setAdvertisements([]);
    await waitFor(
      'withdrawn',
      () => !birdc(lab, 'r', bird, `show route for ${VIP.split('/')[0]} all`).includes('via 10.100.2.2'),
    );
    assert.deepEqual(fibNextHops(lab, 'r', VIP), [replicas.lb1.v4]);
    await speakers.lb2!.setAdvertisements([ad(VIP)]);
    await waitFor('two next hops again', () => fibNextHops(lab, 'r', VIP).length === 2);
  });

  test('an IPv6 VIP (/128) over IPv6 sessions, ECMP too', async () => {
    await established(speakers.lb1!, replicas.lb1.router6);
    await established(speakers.lb2!, replicas.lb2.router6);
    await speakers.lb1!.setAdvertisements([ad(VIP), ad(VIP6)]);
    await speakers.lb2!.setAdvertisements([ad(VIP), ad(VIP6)]);
    await waitFor('IPv6 route with two next hops', () => fibNextHops(lab, 'r', VIP6).length === 2);
    assert.deepEqual(fibNextHops(lab, 'r', VIP6), [replicas.lb1.v6, replicas.lb2.v6]);
    assert.deepEqual(
      (await speakers.lb1!.listAdvertisements()).map((a) => a.prefix).sort(),
      [VIP, VIP6].sort(),
    );
  });

  test('MD5: a wrong password never establishes, the right one does, and peer state shows it', async () => {
    const s = speakers.lb3!;
    await s.setPeers([peer(replicas.lb3.router4, { password: 'wrong-password' })]);
    // Give the session every chance to come up: BIRD retries every second.
    await new Promise((r) => setTimeout(r, 4000));
    const [wrong] = await s.listPeers();
    assert.notEqual(wrong?.state, 'established');
    assert.notEqual(birdProtocolState(lab, 'r', bird, 'lb3'), 'Established');
    await s.setPeers([peer(replicas.lb3.router4, { password: 'right-horse-battery' })]);
    await established(s, replicas.lb3.router4);
    await waitFor('BIRD agrees', () => birdProtocolState(lab, 'r', bird, 'lb3') === 'Established');
    // Listings never carry the secret.
    assert.doesNotMatch(JSON.stringify(await s.listPeers()), /right-horse-battery/);
  });

  test('bad input is refused with the field named, and nothing reaches gobgpd', async () => {
    const s = speakers.lb3!;
    const before = JSON.stringify(await s.listPeers());
    const cases: [() => Promise<void>, RegExp][] = [
      [
        () => s.setPeers([peer('10.100.3.1', { asn: 0 })]),
        /bgp\.peers\[0\]\.asn: must be an AS number .*got 0/,
      ],
      [
        () => s.setPeers([peer('10.100.3.300')]),
        /bgp\.peers\[0\]\.address: must be an IP address \(got "10\.100\.3\.300"\)/,
      ],
      [
        () => s.setPeers([peer('10.100.3.1', { holdTime: 2, keepaliveInterval: 1 })]),
        /bgp\.peers\[0\]\.holdTime: must be 0 or from 3/,
      ],
      [
        () => s.setAdvertisements([ad(VIP, { communities: ['65536:1'] })]),
        /advertisements\[0\]\.communities\[0\]: .*got "65536:1"/,
      ],
      [
        () => s.setGlobal({ asn: 4294967296, routerId: '10.0.0.1', listenPort: -1, listenAddresses: [] }),
        /bgp\.asn: must be an AS number/,
      ],
    ];
    for (const [call, message] of cases) {
      await assert.rejects(call(), (err: unknown) => {
        assert.ok(err instanceof BgpError);
        assert.equal(err.code, 'BGP_INVALID_CONFIG');
        assert.match(err.message, message);
        return true;
      });
    }
    assert.equal(JSON.stringify(await s.listPeers()), before);
    assert.deepEqual(await s.listAdvertisements(), []);
  });

  /** lb1's adapter closed and started again on the same gobgpd (an agent restart), its global config set. */
  const restartAdapter = async () => {
    await speakers.lb1!.close();
    const again = new GobgpSpeaker({ target: gobgp.lb1!.target, healthIntervalMs: 500 }).start();
    speakers.lb1 = again;
    await waitFor('connected', () => again.connected());
    await again.setGlobal({
      asn: 65001,
      routerId: replicas.lb1.v4,
      listenPort: 179,
      listenAddresses: [replicas.lb1.v4, replicas.lb1.v6],
    });
    return again;
  };
  /** How often lb1's session toward the router went down (gobgpd's count). */
  const flops = async (s: GobgpSpeaker) =>
    (await s.listPeers()).find((p) => p.address === replicas.lb1.router4)?.flops;

  test('a restarted adapter (agent restart) adopts: no session reset, no route change', async () => {
    await speakers.lb1!.setAdvertisements([ad(VIP)]);
    await waitFor('two next hops', () => fibNextHops(lab, 'r', VIP).length === 2);
    // BIRD shows when the protocol last changed state; its wall-clock rendering of a
    // monotonic time wobbles by a millisecond, a reset moves it by seconds.
    const since = () => {
      const line =
        birdc(lab, 'r', bird, 'show protocols lb1')
          .split('\n')
          .find((l) => l.startsWith('lb1')) ?? '';
      const [h = 0, m = 0, sec = 0] = (/(\d\d):(\d\d):(\d\d\.\d+)/.exec(line) ?? []).slice(1).map(Number);
      return (h * 3600 + m * 60 + sec) * 1000;
    };
    const before = since();
    const flopsBefore = await flops(speakers.lb1!);
    const again = await restartAdapter();
    await again.setPeers(peersOf('lb1'));
    await again.setAdvertisements([ad(VIP)]);
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(again.writes, 0, 'adopting a converged speaker writes nothing to it');
    assert.ok(Math.abs(since() - before) < 50, 'the BGP session was not reset (BIRD)');
    assert.equal(await flops(again), flopsBefore, 'the BGP session was not reset (gobgpd)');
    assert.equal(fibNextHops(lab, 'r', VIP).length, 2);
  });

  test('a restarted adapter that declares its peers late (PortlbBgpPeer objects still being listed) leaves gobgpd’s peers and policies alone meanwhile', async () => {
    const flopsBefore = await flops(speakers.lb1!);
    await speakers.lb1!.close();
    const again = new GobgpSpeaker({ target: gobgp.lb1!.target, healthIntervalMs: 500 }).start();
    speakers.lb1 = again;
    // As the agent starts: the global configuration declared at once, before the speaker
    // has connected (refused now, kept, and provisioned on connect), the peers later.
    await again
      .setGlobal({
        asn: 65001,
        routerId: replicas.lb1.v4,
        listenPort: 179,
        listenAddresses: [replicas.lb1.v4, replicas.lb1.v6],
      })
      .catch(() => {});
    await waitFor('connected', () => again.connected());
    // Connected and provisioned, peers not declared yet: nothing of gobgpd's is touched.
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(again.writes, 0, 'nothing written before the peers are declared');
    assert.equal((await again.listPeers()).length, peersOf('lb1').length, 'no peer deleted');
    await again.setPeers(peersOf('lb1'));
    await again.setAdvertisements([ad(VIP)]);
    assert.equal(again.writes, 0, 'the same peers, policies and paths: nothing to write');
    assert.equal(await flops(again), flopsBefore, 'the BGP session was not reset');
    assert.equal(fibNextHops(lab, 'r', VIP).length, 2);
  });
});
