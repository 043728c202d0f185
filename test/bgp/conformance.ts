// One suite for both BgpSpeaker implementations: the fake (unit phase) and the gobgpd
// adapter against a real gobgpd (host phase). Same inputs, same answers, same errors.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { BgpError } from '../../lb-agent/src/bgp/errors.ts';
import {
  type Advertisement,
  advertisement,
  type BgpPeerConfig,
  type BgpSpeaker,
} from '../../lb-agent/src/bgp/types.ts';

export interface SpeakerUnderTest {
  speaker: BgpSpeaker;
  /** Kills the daemon behind the speaker and brings it back empty. */
  restartDaemon(): Promise<void>;
  /** Waits until the speaker reports it is connected (and provisioned). */
  waitConnected(): Promise<void>;
  /** A second speaker on the same daemon (a restarted agent), connected. */
  another(): Promise<BgpSpeaker>;
  close(): Promise<void>;
}

/** Short for the tables below. */
export const ad = advertisement;

export const peer = (address: string, extra: Partial<BgpPeerConfig> = {}): BgpPeerConfig => ({
  address,
  asn: 65000,
  port: 179,
  password: undefined,
  holdTime: 9,
  keepaliveInterval: 3,
  ebgpMultihopTtl: undefined,
  gracefulRestart: undefined,
  families: ['ipv4'],
  localAddress: undefined,
  passive: false,
  description: undefined,
  ...extra,
});

const byPrefix = (ads: Advertisement[]) => [...ads].sort((a, b) => a.prefix.localeCompare(b.prefix));

export function speakerConformance(label: string, make: () => Promise<SpeakerUnderTest>): void {
  describe(`BgpSpeaker conformance: ${label}`, () => {
    let u: SpeakerUnderTest;
    before(async () => {
      u = await make();
      await u.waitConnected();
    });
    after(() => u.close());

    test('advertisements need the global configuration first', async () => {
      await assert.rejects(u.speaker.setAdvertisements([ad('192.0.2.1/32')]), (e: unknown) => {
        assert.ok(e instanceof BgpError);
        assert.equal(e.code, 'SPEAKER_ERROR');
        return true;
      });
    });

    test('exactly the given set is announced, attributes included', async () => {
      await u.speaker.setGlobal({ asn: 65001, routerId: '192.0.2.254', listenPort: -1, listenAddresses: [] });
      const first = [
        ad('192.0.2.1/32'),
        ad('192.0.2.2/32', { communities: ['65535:0', '64512:7'], med: 20, localPref: 50, asPathPrepend: 2 }),
        ad('2001:db8::1/128', { origin: 'incomplete' }),
      ];
      await u.speaker.setAdvertisements(first);
      const expected = first.map((a) => ({ ...a, communities: [...a.communities].sort() }));
      assert.deepEqual(byPrefix(await u.speaker.listAdvertisements()), byPrefix(expected));
      await u.speaker.setAdvertisements([ad('192.0.2.2/32'), ad('192.0.2.3/32')]);
      assert.deepEqual(byPrefix(await u.speaker.listAdvertisements()), [
        ad('192.0.2.2/32'),
        ad('192.0.2.3/32'),
      ]);
    });

    test('peers are added, updated and deleted declaratively; listings never show passwords', async () => {
      await u.speaker.setPeers([peer('192.0.2.100', { password: 'sekrit-one' }), peer('192.0.2.101')]);
      assert.deepEqual((await u.speaker.listPeers()).map((p) => [p.address, p.asn]).sort(), [
        ['192.0.2.100', 65000],
        ['192.0.2.101', 65000],
      ]);
      await u.speaker.setPeers([peer('192.0.2.101', { asn: 65010 })]);
      assert.deepEqual(
        (await u.speaker.listPeers()).map((p) => [p.address, p.asn]),
        [['192.0.2.101', 65010]],
      );
      assert.doesNotMatch(JSON.stringify(await u.speaker.listPeers()), /sekrit/);
      for (const p of await u.speaker.listPeers()) assert.notEqual(p.state, 'established');
    });

    test('invalid input: BGP_INVALID_CONFIG naming the field, and nothing changes', async () => {
      const before = byPrefix(await u.speaker.listAdvertisements());
      await assert.rejects(
        u.speaker.setAdvertisements([ad('192.0.2.9/32'), ad('192.0.2.300/32')]),
        (e: unknown) => {
          assert.ok(e instanceof BgpError);
          assert.equal(e.code, 'BGP_INVALID_CONFIG');
          assert.match(e.message, /advertisements\[1\]\.prefix: must be a CIDR .*"192\.0\.2\.300\/32"/);
          return true;
        },
      );
      await assert.rejects(
        u.speaker.setPeers([peer('192.0.2.101', { holdTime: 1, keepaliveInterval: 0 })]),
        /holdTime/,
      );
      assert.deepEqual(byPrefix(await u.speaker.listAdvertisements()), before);
    });

    test('after the daemon restarts, everything is provisioned again from desired state', async () => {
      await u.restartDaemon();
      await u.waitConnected();
      assert.deepEqual(byPrefix(await u.speaker.listAdvertisements()), [
        ad('192.0.2.2/32'),
        ad('192.0.2.3/32'),
      ]);
      assert.deepEqual(
        (await u.speaker.listPeers()).map((p) => [p.address, p.asn]),
        [['192.0.2.101', 65010]],
      );
    });

    test('a new speaker on a running daemon leaves its peers alone until told who they are', async () => {
      const before = (await u.speaker.listPeers()).map((p) => `${p.address} AS${p.asn}`).sort();
      assert.ok(before.length > 0);
      const second = await u.another();
      try {
        await second.setGlobal({ asn: 65001, routerId: '192.0.2.254', listenPort: -1, listenAddresses: [] });
        await new Promise((r) => setTimeout(r, 300));
        assert.deepEqual(
          (await second.listPeers()).map((p) => `${p.address} AS${p.asn}`).sort(),
          before,
          'no peer deleted before setPeers',
        );
      } finally {
        await second.close();
      }
    });

    test('a new speaker on a running daemon adopts its paths until told what to announce', async () => {
      const before = byPrefix(await u.speaker.listAdvertisements());
      assert.ok(before.length > 0);
      const second = await u.another();
      try {
        await second.setGlobal({ asn: 65001, routerId: '192.0.2.254', listenPort: -1, listenAddresses: [] });
        await second.setPeers([peer('192.0.2.101', { asn: 65010 })]);
        assert.deepEqual(byPrefix(await second.listAdvertisements()), before, 'nothing withdrawn yet');
        await second.setAdvertisements([ad('192.0.2.3/32')]);
        assert.deepEqual(byPrefix(await second.listAdvertisements()), [ad('192.0.2.3/32')]);
      } finally {
        await second.close();
      }
    });
  });
}
