// The agent's sync loop with fakes for every boundary (kernel, addresses, SNAT, speaker)
// and an injected clock: no sleeps, no kernel.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { FakeBgpSpeaker } from '../bgp/fake-speaker.ts';
import { GRACEFUL_SHUTDOWN } from '../bgp/types.ts';
import { computeDesired, type DesiredState, DesiredTracker } from '../core/desired.ts';
import { ep, intent } from '../core/fixtures.ts';
import type { HealthView, ServiceIntent } from '../core/types.ts';
import { HealthChecker } from '../health/checker.ts';
import type { ProbeOutcome } from '../health/probe.ts';
import { parseHealthCheckText } from '../health/spec.ts';
import { FakeIpvsClient } from '../ipvs/fake-client.ts';
import { FaultyIpvsClient, MemoryFaults } from '../ipvs/faulty-client.ts';
import { type AddressBlock, blockContains, parseAddressBlock } from '../net/pool.ts';
import { ManualClock } from '../util/clock.ts';
import { PASS_STAGES } from './data-plane.ts';
import { fakeDataPlane } from './fixtures.ts';
import { AgentMetrics } from './metrics.ts';
import { FakeNetfilter } from './netfilter.ts';
import { NetfilterRepair } from './netfilter-repair.ts';
import { type DesiredSource, Reconciler } from './reconciler.ts';
import { FakeAddressManager } from './vips.ts';

const pools = [parseAddressBlock('203.0.113.0/24'), parseAddressBlock('fd00:203::/120')] as AddressBlock[];
const owns = (a: string) => pools.some((p) => blockContains(p, a));

class TestSource implements DesiredSource {
  readonly kind = 'standalone' as const;
  intents: ServiceIntent[] = [];
  changed: () => void = () => {};
  desiredCalls = 0;
  start(changed: () => void) {
    this.changed = changed;
  }
  async stop() {}
  synced() {
    return true;
  }
  healthy() {
    return true;
  }
  /** Set: desired states come from a DesiredTracker, patched for the intents in `patch` when there are. */
  tracker: DesiredTracker | undefined;
  patch: ServiceIntent[] | undefined;
  async desired(health?: HealthView): Promise<DesiredState> {
    this.desiredCalls++;
    const node = { name: 'n1', excluded: false, ready: true };
    if (this.tracker) {
      const changed = this.patch;
      this.patch = undefined;
      return (
        (changed && this.tracker.patch(changed, node, health)) ||
        this.tracker.full({ services: this.intents, health }, node, { owns })
      );
    }
    return computeDesired(
      { services: this.intents, health },
      { name: 'n1', excluded: false, ready: true },
      { owns },
    );
  }
}

async function rig(
  o: { peerFamilies?: ('ipv4' | 'ipv6')[]; health?: HealthChecker; metrics?: AgentMetrics } = {},
) {
  const clock = new ManualClock();
  const faults = new MemoryFaults();
  const ipvs = new FakeIpvsClient();
  const addresses = new FakeAddressManager();
  const netfilter = new FakeNetfilter();
  const speaker = new FakeBgpSpeaker();
  await speaker.setGlobal({ asn: 65001, routerId: '192.0.2.1', listenPort: -1, listenAddresses: [] });
  const source = new TestSource();
  const dataPlane = fakeDataPlane({
    ipvs: new FaultyIpvsClient(ipvs, faults),
    addresses,
    netfilter,
    owns,
    timeouts: { tcpFin: 15 },
    clock,
    // Passes here never yield to the event loop on their own (data-plane.test.ts tests that):
    // a yield lets `settle` move the manual clock in the middle of a pass.
    sliceMs: Number.POSITIVE_INFINITY,
  });
  const logs: { level: number; msg: string; service?: string; vip?: string; reason?: string }[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => logs.push(JSON.parse(line)) });
  const r = new Reconciler({
    source,
    health: o.health,
    metrics: o.metrics,
    dataPlane,
    speaker,
    clock,
    logger,
    announce: { communities: ['64512:1'], peerFamilies: new Set(o.peerFamilies ?? ['ipv4', 'ipv6']) },
    minIntervalMs: 200,
    resyncMs: 60_000,
    retryMaxMs: 5_000,
    sliceMs: Number.POSITIVE_INFINITY,
  });
  // Moves the clock until no pass is running or queued (passes wait out the minimum interval).
  const settle = async () => {
    for (let i = 0; i < 50 && r.busy(); i++) await clock.advance(250);
    await r.idle();
  };
  const pass = async (full = false) => {
    r.trigger(full);
    await settle();
  };
  /** Exactly one pass (no retry slips in). */
  const once = async (full = false) => {
    await clock.advance(300);
    r.trigger(full);
    await r.idle();
  };
  return { clock, ipvs, faults, addresses, netfilter, speaker, source, r, pass, once, settle, logs };
}

describe('reconciler + data plane (fakes)', () => {
  test('the wait between passes is never longer than the last pass took, nor than sync.minIntervalMs', async () => {
    const t = await rig();
    t.source.intents = [intent('web', '203.0.113.10', [ep('10.0.0.1')])];
    t.r.start();
    await t.settle();
    // A pass that took no time: the next one runs at once (the clock does not move).
    const passes = t.r.passes;
    t.r.trigger();
    const ran = await Promise.race([
      t.r.idle().then(() => true),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 2000)),
    ]);
    assert.equal(ran, true, 'no wait after an instant pass');
    assert.equal(t.r.passes, passes + 1);
    // A pass that took 1 s: the next waits the whole minimum interval (200 ms here).
    const slow = t.source.desired.bind(t.source);
    t.source.desired = async (h) => {
      await t.clock.advance(1000);
      return slow(h);
    };
    t.r.trigger();
    await t.r.idle();
    t.source.desired = slow;
    t.r.trigger();
    await t.clock.advance(150);
    assert.equal(t.r.passes, passes + 2, 'still waiting 150 ms after a 1 s pass');
    await t.clock.advance(60);
    await t.r.idle();
    assert.equal(t.r.passes, passes + 3);
    await t.r.close({ withdraw: false });
  });
  test('incremental passes (desired states with a delta): only the changed VIPs are decided again; the speaker hears only of a change', async () => {
    const t = await rig();
    t.source.tracker = new DesiredTracker();
    const web = intent('web', '203.0.113.10', [ep('10.0.0.1'), ep('10.0.0.2')]);
    const api = intent('api', '203.0.113.11', [ep('10.0.1.1')]);
    t.source.intents = [web, api];
    t.r.start();
    await t.settle();
    let told = 0;
    const set = t.speaker.setAdvertisements.bind(t.speaker);
    t.speaker.setAdvertisements = (ads) => {
      told++;
      return set(ads);
    };
    const change = async (s: ServiceIntent) => {
      t.source.intents = t.source.intents.map((x) => (x.id === s.id ? s : x));
      t.source.patch = [s];
      await t.once();
      assert.equal(t.r.last?.report.incremental, true);
      assert.equal(t.r.last?.ok, true);
    };
    const announced = () => [...t.speaker.announced().keys()].sort();

    await change(intent('web', '203.0.113.10', [ep('10.0.0.1')]));
    assert.equal(told, 0, 'still announced: the speaker is not called');
    assert.deepEqual(announced(), ['203.0.113.10/32', '203.0.113.11/32']);

    await change(intent('api', '203.0.113.11', []));
    assert.equal(told, 1, 'api lost its last backend: withdrawn');
    assert.deepEqual(announced(), ['203.0.113.10/32']);
    assert.deepEqual(t.r.last?.withheld, [{ address: '203.0.113.11', reason: 'NoReadyBackends' }]);

    await change(intent('api', '203.0.113.11', [ep('10.0.1.2')]));
    assert.deepEqual(announced(), ['203.0.113.10/32', '203.0.113.11/32']);
    assert.deepEqual(t.r.last?.withheld, []);
    assert.deepEqual(
      t.r.last?.ads.map((a) => a.prefix).sort(),
      announced(),
      "the pass's result is what the speaker holds",
    );
    // The kernel has each change.
    const table = await t.ipvs.getTable();
    assert.deepEqual(table.map((s) => s.destinations.map((d) => d.address)).sort(), [
      ['10.0.0.1'],
      ['10.0.1.2'],
    ]);
    // A full pass after them finds nothing to do.
    const writes = t.ipvs.writes;
    await t.once(true);
    assert.equal(t.r.last?.report.incremental, false);
    assert.equal(t.ipvs.writes, writes);
    // A shutdown changes every VIP's advertisement, though no service changed.
    t.source.patch = [];
    const shutdown = t.r.beginShutdown();
    await t.settle();
    await shutdown;
    assert.deepEqual(
      [...t.speaker.announced().values()].map((a) => a.communities.includes(GRACEFUL_SHUTDOWN)),
      [true, true],
    );
    await t.r.close({ withdraw: false });
  });
  test('programs IPVS, VIP, SNAT, sysctls, then announces; a converged pass writes nothing', async () => {
    const t = await rig();
    t.source.intents = [
      intent('web', '203.0.113.10', [ep('10.0.0.1'), ep('10.0.0.2')]),
      intent('dsr', '203.0.113.12', [{ ...ep('10.0.0.3'), port: 80 }], { forwarding: 'tunnel' }),
    ];
    t.r.start();
    await t.settle();
    const table = await t.ipvs.getTable();
    assert.equal(table.length, 2);
    assert.equal(
      table.find((x) => x.service.key.kind === 'address' && x.service.key.address === '203.0.113.10')!
        .destinations.length,
      2,
    );
    assert.deepEqual([...t.addresses.addresses].sort(), ['203.0.113.10', '203.0.113.12']);
    const web = { vip: '203.0.113.10', family: 'ipv4', port: 80, protocol: 'tcp' } as const;
    const dsr = { ...web, vip: '203.0.113.12' } as const;
    assert.deepEqual(t.netfilter.rules, {
      snat: [web],
      filter: [dsr, web],
      // Tunnel and dr flows are not tracked: the LB sees one direction only, and an
      // unreplied entry makes IPVS drop a new SYN that reuses its client port (with
      // net.ipv4.vs.conntrack=1, which NAT's SNAT needs): a one-second stall.
      notrack: [dsr],
    });
    assert.deepEqual(
      await t.ipvs.getSysctls().then((s) => [s.conntrack, s.sloppy_tcp, s.expire_nodest_conn]),
      [1, 1, 1],
    );
    // A closed connection's entry lives tcpfin seconds: a reused client port must not meet
    // an old backend there after the flow moves replicas (the kernel's 120 s did, in e2e).
    assert.deepEqual(await t.ipvs.getTimeouts(), { tcp: 900, tcpFin: 15, udp: 300 });
    assert.deepEqual([...t.speaker.announced().values()].map((a) => [a.prefix, a.communities]).sort(), [
      ['203.0.113.10/32', ['64512:1']],
      ['203.0.113.12/32', ['64512:1']],
    ]);
    assert.equal(t.r.last?.ok, true);
    const writes = [t.ipvs.writes, t.addresses.changes, t.netfilter.writes, t.speaker.log.length];
    await t.pass();
    await t.pass(true);
    assert.deepEqual([t.ipvs.writes, t.addresses.changes, t.netfilter.writes, t.speaker.log.length], writes);
  });

  test('passes write netfilter only when its rules change; the repair lane rewrites them beside the passes', async () => {
    const metrics = new AgentMetrics();
    const t = await rig({ metrics });
    t.source.intents = [intent('shop/web', '203.0.113.10', [ep('10.1.0.5')])];
    await t.pass(true);
    const writes = t.netfilter.writes;
    assert.ok(writes >= 1);
    for (let i = 0; i < 5; i++) {
      await t.clock.advance(30_000);
      await t.pass(true);
    }
    assert.equal(t.netfilter.writes, writes, 'five full passes over 150 s: no rewrite inside a pass');
    // A Service more: its rules are added to the applied ones, not written whole.
    t.source.intents = [...t.source.intents, intent('shop/api', '203.0.113.11', [ep('10.1.0.6')])];
    await t.pass();
    assert.equal(t.netfilter.writes, writes + 1);
    const repair = new NetfilterRepair({
      netfilter: t.netfilter,
      intervalMs: 60_000,
      clock: t.clock,
      logger: pino({ level: 'silent' }),
      metrics,
    }).start();
    await t.clock.advance(59_000);
    assert.equal(t.netfilter.writes, writes + 1);
    await t.clock.advance(1_000);
    await t.clock.advance(60_000);
    assert.equal(t.netfilter.writes, writes + 3, 'one rewrite per interval');
    repair.close();
    await t.clock.advance(120_000);
    assert.equal(t.netfilter.writes, writes + 3, 'closed: no more rewrites');
    const text = await metrics.registry.metrics();
    assert.match(
      text,
      /^portlb_netfilter_writes_total\{kind="replaced"\} 1$/m,
      'the first pass wrote them whole',
    );
    assert.match(text, /^portlb_netfilter_writes_total\{kind="updated"\} 1$/m);
    assert.match(text, /^portlb_netfilter_writes_total\{kind="repaired"\} 2$/m);
  });

  test('health checks: the first pass waits for the first probes; a failing backend goes to weight 0, then the VIP is withheld', async () => {
    const clock = new ManualClock();
    const outcome = new Map<string, ProbeOutcome>([
      ['10.1.0.5', 'pass'],
      ['10.1.0.6', 'pass'],
    ]);
    let release: (() => void) | undefined;
    const firstHeld = new Promise<void>((r) => {
      release = r;
    });
    let t: Awaited<ReturnType<typeof rig>> | undefined;
    const checker = new HealthChecker({
      clock,
      random: () => 0.5,
      prober: async (target) => {
        await firstHeld;
        const out = outcome.get(target.address)!;
        return { outcome: out, detail: out };
      },
      onTransition: () => t?.r.trigger(),
    });
    t = await rig({ health: checker });
    // The rig has its own clock: the checker's probes are paced by `clock`.
    const spec = parseHealthCheckText('{"type":"tcp","intervalSeconds":1,"timeoutSeconds":0.5,"fall":2}');
    assert.ok(spec.ok);
    t.source.intents = [
      intent('shop/web', '203.0.113.10', [ep('10.1.0.5'), ep('10.1.0.6')], { healthCheck: spec.spec }),
    ];
    t.r.start();
    await new Promise((r) => setImmediate(r));
    assert.equal((await t.ipvs.getTable()).length, 0, 'nothing programmed while the first probes run');
    release!();
    await t.settle();
    const weights = async () =>
      (await t!.ipvs.getTable())[0]!.destinations.map((d) => [d.address, d.weight]).sort();
    assert.deepEqual(
      await weights(),
      [
        ['10.1.0.5', 1],
        ['10.1.0.6', 1],
      ],
      'the restart drained no backend: both probed before the first pass',
    );
    outcome.set('10.1.0.6', 'fail');
    for (let i = 0; i < 3; i++) await clock.advance(1000);
    await t.settle();
    assert.deepEqual(await weights(), [
      ['10.1.0.5', 1],
      ['10.1.0.6', 0],
    ]);
    assert.ok(t.speaker.announced().has('203.0.113.10/32'));
    outcome.set('10.1.0.5', 'fail');
    for (let i = 0; i < 3; i++) await clock.advance(1000);
    await t.settle();
    assert.equal(t.speaker.announced().has('203.0.113.10/32'), false, 'no healthy backend: withdrawn');
    assert.deepEqual(
      t.r.last!.withheld.map((w) => w.reason),
      ['NoHealthyBackends'],
    );
    checker.close();
  });

  test('each pass reports where its time went, stage by stage', async () => {
    const t = await rig();
    t.source.intents = [intent('shop/web', '203.0.113.10', [ep('10.1.0.5')])];
    await t.pass(true);
    assert.deepEqual(Object.keys(t.r.last!.report.stages).sort(), [...PASS_STAGES].sort());
    t.source.intents = [intent('shop/web', '203.0.113.10', [ep('10.1.0.5'), ep('10.1.0.6')])];
    await t.pass();
    assert.equal(t.r.last!.full, false);
    assert.ok(!('read' in t.r.last!.report.stages), 'an incremental pass reads nothing back');
    assert.ok(!('sysctl' in t.r.last!.report.stages), 'nor the sysctls, which it does not change');
  });

  test('adopts what the kernel already holds: a restart writes nothing', async () => {
    const first = await rig();
    first.source.intents = [intent('web', '203.0.113.10', [ep('10.0.0.1')])];
    first.r.start();
    await first.clock.advance(250);
    await first.r.idle();
    // A new agent on the same kernel and addresses.
    const clock = new ManualClock();
    const dp = fakeDataPlane({
      ipvs: first.ipvs,
      addresses: first.addresses,
      owns,
      drainTimeoutMs: 1,
      clock,
    });
    const before = first.ipvs.writes;
    const r = new Reconciler({
      source: first.source,
      dataPlane: dp,
      speaker: first.speaker,
      clock,
      announce: { communities: [], peerFamilies: new Set(['ipv4', 'ipv6']) },
      minIntervalMs: 0,
      resyncMs: 60_000,
      retryMaxMs: 1000,
    });
    r.start();
    for (let i = 0; i < 10 && r.busy(); i++) await clock.advance(250);
    await r.idle();
    assert.equal(first.ipvs.writes, before);
  });

  test('health gating: no usable backend, no announcement; one appears, announced', async () => {
    const t = await rig();
    t.source.intents = [intent('web', '203.0.113.10', [ep('10.0.0.1', false)])];
    t.r.start();
    await t.settle();
    assert.equal(t.speaker.announced().size, 0);
    assert.deepEqual(t.r.last?.withheld, [{ address: '203.0.113.10', reason: 'NoReadyBackends' }]);
    assert.deepEqual([...t.addresses.addresses], ['203.0.113.10'], 'programmed anyway');
    t.source.intents = [intent('web', '203.0.113.10', [ep('10.0.0.1')])];
    await t.pass();
    assert.equal(t.speaker.announced().size, 1);
  });

  test('a kernel refusal is reported, the VIP not announced, and a full retry scheduled', async () => {
    const t = await rig();
    t.source.intents = [
      intent('bad', '203.0.113.20', [ep('10.0.0.1')], { scheduler: 'nosuch' }),
      intent('good', '203.0.113.21', [ep('10.0.0.2')]),
    ];
    t.r.start();
    await t.settle();
    assert.equal(t.r.last?.ok, false);
    assert.deepEqual(
      t.r.last?.report.failures.map((f) => f.code),
      ['SCHEDULER_NOT_FOUND', 'SERVICE_NOT_FOUND'],
    );
    assert.deepEqual([...t.speaker.announced().keys()], ['203.0.113.21/32']);
    const passes = t.r.passes;
    await t.clock.advance(1000);
    await t.settle();
    assert.ok(t.r.passes > passes, 'retried');
  });

  test('a removed backend drains: weight 0, then deleted when idle; a bounded wait otherwise', async () => {
    const t = await rig();
    t.source.intents = [intent('web', '203.0.113.10', [ep('10.0.0.1'), ep('10.0.0.2')])];
    t.r.start();
    await t.settle();
    const key = (await t.ipvs.getTable())[0]!.service.key;
    t.ipvs.setConnections(key, { family: 'ipv4', address: '10.0.0.2', port: 8080 }, 3);
    t.source.intents = [intent('web', '203.0.113.10', [ep('10.0.0.1')])];
    // An incremental pass: the connection counts must come from the kernel, not the cache.
    await t.pass();
    const weights = async () =>
      (await t.ipvs.listDestinations(key)).map((d) => `${d.address}=${d.weight}`).sort();
    assert.deepEqual(await weights(), ['10.0.0.1=1', '10.0.0.2=0']);
    await t.pass();
    assert.deepEqual(await weights(), ['10.0.0.1=1', '10.0.0.2=0'], 'still busy');
    t.ipvs.setConnections(key, { family: 'ipv4', address: '10.0.0.2', port: 8080 }, 0);
    await t.pass();
    assert.deepEqual(await weights(), ['10.0.0.1=1']);
  });

  test('never touches an IPVS service it does not own; removes what it owns and no longer wants', async () => {
    const t = await rig();
    const foreign = {
      kind: 'address' as const,
      family: 'ipv4' as const,
      protocol: 'tcp' as const,
      address: '10.96.0.1',
      port: 443,
    };
    await t.ipvs.addService({
      key: foreign,
      scheduler: 'rr',
      schedulerFlags: [],
      onePacket: false,
      persistence: undefined,
      persistenceEngine: undefined,
    });
    t.addresses.addresses.add('192.168.1.1');
    t.addresses.addresses.add('203.0.113.99');
    t.source.intents = [intent('web', '203.0.113.10', [ep('10.0.0.1')])];
    t.r.start();
    await t.settle();
    assert.deepEqual(
      (await t.ipvs.getTable()).map((s) => s.service.key.kind === 'address' && s.service.key.address).sort(),
      ['10.96.0.1', '203.0.113.10'],
    );
    // The fake's addresses are portlb's VIP routes (protocol 240): one outside the pools is
    // portlb's too (its pool was removed), and goes (vips.ts).
    assert.deepEqual([...t.addresses.addresses].sort(), ['203.0.113.10']);
    t.source.intents = [];
    await t.pass();
    assert.deepEqual(
      (await t.ipvs.getTable()).map((s) => s.service.key.kind === 'address' && s.service.key.address),
      ['10.96.0.1'],
    );
    assert.equal(t.speaker.announced().size, 0);
  });

  test('triggers coalesce: a burst of changes makes one pass', async () => {
    const t = await rig();
    t.source.intents = [intent('web', '203.0.113.10', [ep('10.0.0.1')])];
    t.r.start();
    await t.settle();
    const calls = t.source.desiredCalls;
    for (let i = 0; i < 50; i++) t.source.changed();
    await t.settle();
    assert.ok(t.source.desiredCalls - calls <= 2, `${t.source.desiredCalls - calls} passes for 50 triggers`);
  });

  test('graceful shutdown: GRACEFUL_SHUTDOWN and LOCAL_PREF 0 first (never our own AS in the path), then the withdraw', async () => {
    const t = await rig();
    t.source.intents = [intent('web', '203.0.113.10', [ep('10.0.0.1')])];
    t.r.start();
    await t.settle();
    const shutdown = t.r.beginShutdown();
    await t.settle();
    await shutdown;
    const ad = [...t.speaker.announced().values()][0]!;
    assert.deepEqual(ad.communities, ['64512:1', '65535:0']);
    // An iBGP router drops a path with its own AS in it (a hard withdraw): the speaker
    // prepends toward eBGP peers only (its export policy).
    assert.equal(ad.asPathPrepend, 0);
    assert.equal(ad.localPref, 0);
    await t.r.close({ withdraw: true });
    assert.equal(t.speaker.announced().size, 0);
    assert.equal((await t.ipvs.getTable()).length, 1, 'IPVS stays for the next start');
  });

  test('skips, warnings and withheld VIPs are logged when they start and end, not on every pass', async () => {
    const t = await rig();
    const clash = intent('b/clash', '203.0.113.10', [ep('10.0.0.3')]);
    const tunnel = intent('c/tunnel', '203.0.113.11', [ep('10.0.0.4')], { forwarding: 'tunnel' });
    t.source.intents = [intent('a/web', '203.0.113.10', [ep('10.0.0.1', false)]), clash, tunnel];
    t.r.start();
    await t.settle();
    await t.pass(true);
    await t.pass();
    const told = () =>
      t.logs
        .filter((l) => l.msg !== 'kernel programmed')
        .map((l) => [l.level, l.msg, l.service ?? l.vip, l.reason ?? '']);
    assert.deepEqual(told(), [
      [40, 'service skipped: tcp/80 on 203.0.113.10 is already used by a/web', 'b/clash', 'PortConflict'],
      [
        40,
        'service warning: tunnel forwarding cannot change ports: backend 10.0.0.4 listens on 8080, the service on 80; traffic arrives on 80',
        'c/tunnel',
        '',
      ],
      [30, 'VIP not announced', '203.0.113.10', 'NoReadyBackends'],
    ]);
    t.logs.length = 0;
    t.source.intents = [intent('a/web', '203.0.113.10', [ep('10.0.0.1')])];
    await t.pass();
    assert.deepEqual(told(), [
      [30, 'service no longer skipped', 'b/clash', 'PortConflict'],
      [30, 'service warning cleared', 'c/tunnel', ''],
      [30, 'VIP no longer withheld', '203.0.113.10', 'NoReadyBackends'],
    ]);
  });

  test('a pass that changes the kernel says what it did, once; a converged pass is quiet', async () => {
    const t = await rig();
    t.source.intents = [intent('shop/web', '203.0.113.10', [ep('10.1.0.5'), ep('10.1.0.6')])];
    await t.pass(true);
    const programmed = () => t.logs.filter((l) => l.msg === 'kernel programmed') as Record<string, unknown>[];
    assert.equal(programmed().length, 1);
    assert.deepEqual(programmed()[0]!.applied, { 'add-service': 1, 'add-destination': 2 });
    assert.deepEqual(programmed()[0]!.vipsAdded, ['203.0.113.10']);
    await t.pass();
    await t.pass(true);
    assert.equal(programmed().length, 1, 'nothing changed: nothing logged at info');
  });

  test('a pass that adds many VIPs names the first of them and counts all (one log line stays small at 10k)', async () => {
    const t = await rig();
    t.source.intents = Array.from({ length: 50 }, (_, i) =>
      intent(`shop/web-${i}`, `203.0.113.${10 + i}`, [ep('10.1.0.5')]),
    );
    await t.pass(true);
    const line = t.logs.find((l) => l.msg === 'kernel programmed') as Record<string, unknown>;
    assert.equal((line.vipsAdded as string[]).length, 20);
    assert.equal(line.vipsAddedCount, 50);
    assert.deepEqual(line.vipsRemoved, []);
    assert.equal(line.vipsRemovedCount, 0);
  });

  test('a pass refused op by op logs the first failures by name and counts the rest in one line', async () => {
    const t = await rig();
    await t.pass(true);
    // 30 services appear behind the cache's back: the next pass's adds are refused (EEXIST).
    const key = (i: number) => ({
      kind: 'address' as const,
      family: 'ipv4' as const,
      protocol: 'tcp' as const,
      address: `203.0.113.${10 + i}`,
      port: 80,
    });
    await t.ipvs.execute(
      Array.from({ length: 30 }, (_, i) => ({
        op: 'add-service' as const,
        service: {
          key: key(i),
          scheduler: 'rr',
          schedulerFlags: [],
          onePacket: false,
          persistence: undefined,
          persistenceEngine: undefined,
        },
      })),
    );
    t.source.intents = Array.from({ length: 30 }, (_, i) =>
      intent(`shop/web-${i}`, key(i).address, [ep('10.1.0.5')]),
    );
    await t.once();
    const refused = t.logs.filter((l) => l.level === 40 && /EXISTS/.test(l.msg));
    const summary = t.logs.filter((l) => /more failures in this pass/.test(l.msg)) as Record<
      string,
      unknown
    >[];
    assert.equal(refused.length, 20, 'the first 20 by name');
    assert.equal(summary.length, 1);
    assert.ok((summary[0]!.more as number) >= 10, JSON.stringify(summary[0]));
  });

  test('the kernel cannot be read for one pass: state unknown, nothing withdrawn, then back to normal', async () => {
    const t = await rig();
    t.source.intents = [intent('web', '203.0.113.10', [ep('10.0.0.1')])];
    t.r.start();
    await t.settle();
    const speakerWrites = t.speaker.log.length;
    t.faults.faults = { read: 1 };
    await t.once(true);
    assert.equal(t.faults.fired.read, 1, 'the fault fired');
    assert.equal(t.r.last?.report.services.get('tcp:203.0.113.10:80')?.outcome, 'unknown');
    assert.deepEqual(t.r.last?.kept, ['203.0.113.10']);
    assert.deepEqual([...t.speaker.announced().keys()], ['203.0.113.10/32'], 'still announced');
    assert.equal(t.speaker.log.length, speakerWrites, 'no withdrawal, no re-announcement');
    await t.clock.advance(1000);
    await t.settle();
    assert.equal(t.r.last?.report.services.get('tcp:203.0.113.10:80')?.outcome, 'programmed');
    assert.equal(t.r.last?.kept.length, 0);
  });

  test('a write batch fails in transport: the agent stays up, keeps its announcements, recovers on the next pass', async () => {
    const t = await rig();
    t.source.intents = [intent('web', '203.0.113.10', [ep('10.0.0.1')])];
    t.r.start();
    await t.settle();
    t.faults.faults = { execute: 1 };
    t.source.intents = [
      intent('web', '203.0.113.10', [ep('10.0.0.1'), ep('10.0.0.2')]),
      intent('new', '203.0.113.11', [ep('10.0.0.3')]),
    ];
    await t.once();
    assert.equal(t.faults.fired.execute, 1);
    assert.equal(t.r.last?.ok, false);
    assert.deepEqual([...t.speaker.announced().keys()], ['203.0.113.10/32'], 'kept; the new VIP not yet');
    await t.clock.advance(1000);
    await t.settle();
    assert.equal(t.r.last?.ok, true);
    assert.deepEqual([...t.speaker.announced().keys()].sort(), ['203.0.113.10/32', '203.0.113.11/32']);
    assert.equal(
      (await t.ipvs.getTable()).find(
        (s) => s.service.key.kind === 'address' && s.service.key.address === '203.0.113.10',
      )?.destinations.length,
      2,
    );
  });

  test('one failed port of a VIP does not withdraw the VIP', async () => {
    const t = await rig();
    t.source.intents = [intent('web', '203.0.113.10', [ep('10.0.0.1')])];
    t.r.start();
    await t.settle();
    assert.deepEqual([...t.speaker.announced().keys()], ['203.0.113.10/32']);
    // A second Service on the VIP, port 443, that the kernel refuses (the fake answers
    // like the kernel: no such scheduler).
    const tls = { ...ep('10.0.0.1'), port: 8443 };
    t.source.intents.push(
      intent('web-tls', '203.0.113.10', [tls], {
        scheduler: 'nosuch',
        ports: [{ name: '', protocol: 'tcp', port: 443, endpoints: [tls] }],
      }),
    );
    await t.once(true);
    assert.equal(t.r.last?.ok, false);
    assert.equal(t.r.last?.report.services.get('tcp:203.0.113.10:443')?.outcome, 'not-programmed');
    assert.deepEqual([...t.speaker.announced().keys()], ['203.0.113.10/32'], 'port 80 still serves');
  });

  test('a pass that throws is caught, counted and retried: no unhandled rejection, nothing withdrawn', async () => {
    const t = await rig();
    t.source.intents = [intent('web', '203.0.113.10', [ep('10.0.0.1')])];
    t.r.start();
    await t.settle();
    const original = t.source.desired.bind(t.source);
    let throws = 1;
    t.source.desired = async () => {
      if (throws-- > 0) throw new TypeError('a bug');
      return original();
    };
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      await t.pass();
      await t.clock.advance(1000);
      await t.settle();
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    assert.deepEqual(unhandled, []);
    assert.deepEqual([...t.speaker.announced().keys()], ['203.0.113.10/32']);
    assert.ok(t.logs.some((l) => l.msg === 'sync pass failed'));
  });

  test('a draining backend goes once idle without waiting for an unrelated pass', async () => {
    const t = await rig();
    t.source.intents = [intent('web', '203.0.113.10', [ep('10.0.0.1'), ep('10.0.0.2')])];
    t.r.start();
    await t.settle();
    const key = (await t.ipvs.getTable())[0]!.service.key;
    t.ipvs.setConnections(key, { family: 'ipv4', address: '10.0.0.2', port: 8080 }, 2);
    t.source.intents = [intent('web', '203.0.113.10', [ep('10.0.0.1')])];
    await t.pass();
    assert.equal((await t.ipvs.listDestinations(key)).length, 2, 'draining');
    t.ipvs.setConnections(key, { family: 'ipv4', address: '10.0.0.2', port: 8080 }, 0);
    // No change, no trigger: only the drain check runs a pass.
    await t.clock.advance(2500);
    await t.settle();
    assert.deepEqual(
      (await t.ipvs.listDestinations(key)).map((d) => d.address),
      ['10.0.0.1'],
    );
  });

  test('liveness: fails when no pass completes, or the kernel stays unknown, for the window', async () => {
    const t = await rig();
    t.source.intents = [intent('web', '203.0.113.10', [ep('10.0.0.1')])];
    t.r.start();
    await t.settle();
    assert.equal(t.r.liveness(10_000).ok, true);
    t.faults.faults = { read: 1000 };
    for (let i = 0; i < 12; i++) {
      t.r.trigger(true);
      await t.clock.advance(1000);
      await t.settle();
    }
    const l = t.r.liveness(10_000);
    assert.equal(l.ok, false);
    assert.match(l.reason!, /kernel's state has been unknown/);
    assert.deepEqual([...t.speaker.announced().keys()], ['203.0.113.10/32'], 'doubt never withdraws');
    t.faults.faults = {};
    await t.clock.advance(6000);
    await t.settle();
    assert.equal(t.r.liveness(10_000).ok, true);
  });

  test('the periodic read-back never starts during a full pass, and comes resyncMs after the last one ended', async () => {
    const t = await rig();
    t.source.intents = [intent('web', '203.0.113.10', [ep('10.0.0.1')])];
    // The first pass writes for a long time (minutes at 10,000 services in UML).
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const execute = t.ipvs.execute.bind(t.ipvs);
    t.ipvs.execute = async (ops, onProgress) => {
      await gate;
      return execute(ops, onProgress);
    };
    let reads = 0;
    const listServices = t.ipvs.listServices.bind(t.ipvs);
    t.ipvs.listServices = (o) => {
      reads++;
      return listServices(o);
    };
    t.r.start();
    for (let i = 0; i < 150; i++) await t.clock.advance(1000);
    assert.equal(reads, 1, "only the first pass's own read while it runs (a read-back now would be void)");
    release();
    await t.settle();
    assert.equal(t.r.last?.full, true);
    await t.clock.advance(50_000);
    assert.equal(reads, 1, 'the cache was verified 50 s ago: no read-back yet');
    await t.clock.advance(12_000);
    await t.settle();
    assert.equal(reads, 2, 'one read-back, resyncMs after the full pass ended');
    await t.clock.advance(30_000);
    await t.settle();
    assert.equal(reads, 2, 'the read-back matched: verified, the next is due a resync later');
    assert.equal(t.r.last?.full, false, 'and no full pass: a plain one (liveness counts passes)');
  });

  test('a resync whose read-back matches what the passes applied runs no pass; a difference runs a full one that repairs it', async () => {
    const t = await rig();
    t.source.intents = [intent('web', '203.0.113.10', [ep('10.0.0.1'), ep('10.0.0.2')])];
    t.r.start();
    await t.settle();
    const passes = t.r.passes;
    await t.clock.advance(61_000);
    await t.settle();
    assert.equal(t.r.passes, passes + 1);
    assert.equal(t.r.last?.full, false, 'nothing changed in the kernel: no full pass');
    assert.equal(t.r.last?.report.applied['add-service'], 0);
    // Someone deletes the IPVS service: the next resync finds it gone and a full pass restores it.
    await t.ipvs.deleteService({
      kind: 'address',
      family: 'ipv4',
      protocol: 'tcp',
      address: '203.0.113.10',
      port: 80,
    });
    await t.clock.advance(61_000);
    await t.settle();
    assert.equal(t.r.passes, passes + 2);
    assert.equal(t.r.last?.full, true);
    assert.equal((await t.ipvs.getTable()).length, 1, 'restored');
    assert.ok(t.logs.some((l) => l.msg === 'resync: the kernel changed; a full pass repairs it'));
    // Someone removes the VIP address: the same.
    t.addresses.addresses.delete('203.0.113.10');
    await t.clock.advance(61_000);
    await t.settle();
    assert.equal(t.r.passes, passes + 3);
    assert.equal(t.r.last?.full, true);
    assert.ok(t.addresses.addresses.has('203.0.113.10'), 'the VIP is back');
    // A sysctl reset by hand: the same.
    await t.ipvs.setSysctls({ expire_nodest_conn: 0 });
    await t.clock.advance(61_000);
    await t.settle();
    assert.equal(t.r.passes, passes + 4);
    assert.equal(t.r.last?.full, true);
    assert.equal((await t.ipvs.getSysctls()).expire_nodest_conn, 1);
    await t.clock.advance(61_000);
    await t.settle();
    assert.equal(t.r.passes, passes + 5);
    assert.equal(t.r.last?.full, false, 'repaired: the next resync is clean again');
  });

  test('a wall-clock step changes no interval: passes keep their pace, drains their length', async () => {
    const t = await rig();
    t.source.intents = [intent('web', '203.0.113.10', [ep('10.0.0.1'), ep('10.0.0.2')])];
    t.r.start();
    await t.settle();
    const key = (await t.ipvs.getTable())[0]!.service.key;
    t.ipvs.setConnections(key, { family: 'ipv4', address: '10.0.0.2', port: 8080 }, 5);
    t.source.intents = [intent('web', '203.0.113.10', [ep('10.0.0.1')])];
    await t.pass();
    t.clock.jumpWall(3_600_000);
    await t.clock.advance(10_000);
    await t.settle();
    assert.equal(
      (await t.ipvs.listDestinations(key)).length,
      2,
      'a 30 s drain is not cut short by a clock step forward',
    );
    t.clock.jumpWall(-7_200_000);
    const passes = t.r.passes;
    t.source.changed();
    await t.clock.advance(500);
    await t.settle();
    assert.ok(t.r.passes > passes, 'a clock step back does not freeze the loop');
    await t.clock.advance(25_000);
    await t.settle();
    assert.equal((await t.ipvs.listDestinations(key)).length, 1, 'the drain ends after its 30 s');
  });

  test('a VIP of a family no peer carries is withheld (NoPeerForFamily), not reported as announced', async () => {
    const t = await rig({ peerFamilies: ['ipv4'] });
    t.source.intents = [
      intent('web', '203.0.113.10', [ep('10.0.0.1')]),
      intent('web6', 'fd00:203::10', [{ ...ep('fd00::1'), family: 'ipv6' }]),
    ];
    t.r.start();
    await t.settle();
    assert.deepEqual([...t.speaker.announced().keys()], ['203.0.113.10/32']);
    assert.deepEqual(t.r.last?.withheld, [{ address: 'fd00:203::10', reason: 'NoPeerForFamily' }]);
  });
});
