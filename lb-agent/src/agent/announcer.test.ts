import assert from 'node:assert/strict';
import { test } from 'node:test';
import { normalizeAdvertisement, sameAdvertisement } from '../bgp/gobgp-codec.ts';
import { type Advertisement, advertisement } from '../bgp/types.ts';
import { validateAdvertisements } from '../bgp/validate.ts';
import type { DesiredState } from '../core/desired.ts';
import { announcements, announcementsSliced, servicesByVip } from './announcer.ts';
import type { ServiceOutcome } from './data-plane.ts';

const desired = (vips: string[]): DesiredState => ({
  virtualServices: vips.map((vip) => ({
    owner: `ns/${vip}`,
    vip,
    spec: {
      service: {
        key: { kind: 'address', family: 'ipv4', protocol: 'tcp', address: vip, port: 80 },
        scheduler: 'rr',
        schedulerFlags: [],
        onePacket: false,
        persistence: undefined,
        persistenceEngine: undefined,
      },
      destinations: [],
    },
    snat: false,
    notrack: false,
    usable: 1,
  })),
  vips: vips.map((address) => ({
    address,
    family: 'ipv4',
    owners: [`ns/${address}`],
    announce: true,
    withheld: undefined,
  })),
  skipped: [],
  warnings: [],
  checks: [],
});
const programmed = (vips: string[]) => ({
  services: new Map<string, ServiceOutcome>(
    vips.map((v) => [`tcp:${v}:80`, { outcome: 'programmed', usable: 1 }]),
  ),
});
const opts = { communities: ['65000:1'], shuttingDown: false, peerFamilies: new Set(['ipv4'] as const) };

test('an unchanged advertisement is handed on as the same frozen object; a changed one is new', () => {
  const vips = ['203.0.113.1', '203.0.113.2'];
  const first = announcements(desired(vips), programmed(vips), new Map(), opts);
  assert.equal(first.ads.length, 2);
  assert.ok(first.ads.every((a) => Object.isFrozen(a)));
  const previous = new Map(first.ads.map((a) => [a.prefix, a]));
  const again = announcements(desired(vips), programmed(vips), previous, opts);
  assert.equal(again.ads[0], first.ads[0]);
  assert.equal(again.ads[1], first.ads[1]);
  const draining = announcements(desired(vips), programmed(vips), previous, { ...opts, shuttingDown: true });
  assert.notEqual(draining.ads[0], first.ads[0]);
  assert.equal(draining.ads[0]!.localPref, 0);
  assert.deepEqual(draining.ads[0]!.communities, ['65000:1', '65535:0']);
});

test('the speaker side remembers frozen advertisements only: a mutable one is read afresh', () => {
  const frozen: Advertisement = Object.freeze(advertisement('203.0.113.10/32'));
  assert.equal(normalizeAdvertisement(frozen), normalizeAdvertisement(frozen));
  const mutable: Advertisement = { ...frozen, prefix: '203.0.113.11/32' };
  assert.equal(normalizeAdvertisement(mutable).prefix, '203.0.113.11/32');
  mutable.prefix = '203.0.113.12/32';
  assert.equal(normalizeAdvertisement(mutable).prefix, '203.0.113.12/32');
  assert.ok(sameAdvertisement(frozen, { ...frozen }));
  assert.ok(!sameAdvertisement(frozen, { ...frozen, localPref: 0 }));
  // Validated once, still checked for duplicates in every list it comes in.
  validateAdvertisements([frozen]);
  assert.throws(() => validateAdvertisements([frozen, frozen]), /duplicate 203\.0\.113\.10\/32/);
  mutable.prefix = 'not-a-prefix';
  assert.throws(() => validateAdvertisements([mutable]), /prefix: must be a CIDR/);
});

test('decided in slices, the announcements are the same, with a pause after each VIP', async () => {
  const vips = Array.from({ length: 30 }, (_, i) => `203.0.113.${i + 1}`);
  const d = desired(vips);
  // Some programmed, some not: both announced and withheld VIPs.
  const report = programmed(vips.filter((_, i) => i % 3));
  let pauses = 0;
  const sliced = await announcementsSliced(d, report, new Map(), opts, servicesByVip(d), async () => {
    pauses++;
  });
  const whole = announcements(d, report, new Map(), opts);
  assert.ok(whole.ads.length > 0 && whole.withheld.length > 0);
  assert.deepEqual(sliced, whole);
  assert.equal(pauses, vips.length);
});
