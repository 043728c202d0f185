import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ManualClock } from '../util/clock.ts';
import {
  DeadManSwitch,
  FakeGuard,
  legacyGuardText,
  legacyRefreshText,
  nftGuardScript,
  nftRefreshScript,
} from './dead-man.ts';

const peers = ['10.0.0.1', 'fd00::1'];

test('dead-man guard: only BFD to the configured peers, dropped unless the peer is in the alive set', () => {
  const nft = nftGuardScript(peers, [179], 2000);
  assert.match(nft, /table ip portlb_bfd \{\}\ndelete table ip portlb_bfd/);
  assert.match(nft, /ip daddr \{ 10\.0\.0\.1 \} udp dport \{ 3784, 4784 \} ip daddr != @alive counter drop/);
  assert.match(nft, /ip6 daddr \{ fd00::1 \} udp dport/);
  assert.match(nft, /ip daddr \{ 10\.0\.0\.1 \} tcp dport \{ 179 \} ip daddr != @alive counter drop/);
  assert.match(nft, /ip daddr \{ 10\.0\.0\.1 \} tcp sport \{ 179 \} ip daddr != @alive counter drop/);
  assert.match(
    nft,
    /set alive \{ type ipv4_addr; flags timeout; elements = \{ 10\.0\.0\.1 timeout 2000ms \} \}/,
  );
  assert.equal(
    nftRefreshScript(peers, 2000),
    'flush set ip portlb_bfd alive\nadd element ip portlb_bfd alive { 10.0.0.1 timeout 2000ms }\nflush set ip6 portlb_bfd alive\nadd element ip6 portlb_bfd alive { fd00::1 timeout 2000ms }\n',
  );
  const legacy = legacyGuardText(peers, [179, 1790], 'ipv4');
  assert.match(legacy.ipset, /^create portlb-bfd4 hash:ip family inet timeout 1 -exist$/m);
  assert.match(
    legacy.iptables,
    /-A PORTLB-BFD -d 10\.0\.0\.1\/32 -p udp --dport 3784 -m set ! --match-set portlb-bfd4 dst .* -j DROP\n-A PORTLB-BFD -d 10\.0\.0\.1\/32 -p udp --dport 4784 /,
  );
  assert.match(
    legacy.iptables,
    /-d 10\.0\.0\.1\/32 -p tcp --dport 1790 -m set ! --match-set portlb-bfd4 dst/,
  );
  assert.match(legacy.iptables, /-d 10\.0\.0\.1\/32 -p tcp --sport 179 -m set ! --match-set portlb-bfd4 dst/);
  assert.equal(legacy.iptables.match(/-j DROP/g)?.length, 6);
  assert.doesNotMatch(legacy.iptables, /fd00/);
  // ipset counts whole seconds: never 0 (that would mean "no timeout": BFD let out for ever).
  assert.equal(legacyRefreshText(peers, 'ipv4', 400), 'add portlb-bfd4 10.0.0.1 timeout 1 -exist\n');
  assert.equal(legacyRefreshText(peers, 'ipv6', 2000), 'add portlb-bfd6 fd00::1 timeout 2 -exist\n');
});

test('dead-man switch: refreshes while live, holds BFD down (by not refreshing) while not, resumes', async () => {
  const clock = new ManualClock();
  const guard = new FakeGuard();
  let live = true;
  const changes: (string | undefined)[] = [];
  const dm = new DeadManSwitch({
    peers: ['10.0.0.1'],
    bgpPorts: [179],
    timeoutMs: 2000,
    backend: guard,
    live: () =>
      live ? { ok: true, reason: undefined } : { ok: false, reason: 'a sync pass has been running for 31 s' },
    clock,
    onChange: (h) => changes.push(h),
  });
  await dm.tick();
  assert.equal(guard.installs, 1);
  assert.deepEqual(guard.refreshes, [{ peers: ['10.0.0.1'], timeoutMs: 2000 }]);
  live = false;
  await dm.tick();
  await dm.tick();
  assert.equal(guard.refreshes.length, 1, 'no refresh while not live: the kernel lets the element expire');
  assert.equal(dm.holding, 'a sync pass has been running for 31 s');
  live = true;
  await dm.tick();
  assert.equal(guard.refreshes.length, 2);
  assert.equal(dm.holding, undefined);
  assert.deepEqual(changes, ['a sync pass has been running for 31 s', undefined]);
  // A failed refresh is retried (and reinstalls: someone may have flushed the guard).
  guard.fail = new Error('nft: Operation not permitted');
  await dm.tick();
  guard.fail = undefined;
  await dm.tick();
  assert.equal(guard.installs, 2);
  assert.equal(guard.refreshes.length, 3);
});

test('dead-man switch: a refresh later than the timeout is reported as a lapse (a stalled agent), a held-down one is not', async () => {
  const clock = new ManualClock();
  const guard = new FakeGuard();
  let live = true;
  const lapses: number[] = [];
  const dm = new DeadManSwitch({
    peers: ['10.0.0.1'],
    bgpPorts: [179],
    timeoutMs: 1000,
    backend: guard,
    live: () => (live ? { ok: true, reason: undefined } : { ok: false, reason: 'stuck' }),
    clock,
    onLapse: (gap) => lapses.push(gap),
    cpuMs: () => 0,
  });
  await dm.tick();
  await clock.advance(250);
  await dm.tick();
  await clock.advance(1000);
  await dm.tick();
  assert.deepEqual(lapses, [], 'within the timeout: the element never expired');
  await clock.advance(1400);
  await dm.tick();
  assert.deepEqual(lapses, [1400]);
  // Held down on purpose, then let out: the gap is the switch's own doing, not a stall.
  live = false;
  await clock.advance(250);
  await dm.tick();
  await clock.advance(5000);
  live = true;
  await dm.tick();
  assert.deepEqual(lapses, [1400]);
});
