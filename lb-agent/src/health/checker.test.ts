import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { HealthTarget } from '../core/types.ts';
import { ManualClock } from '../util/clock.ts';
import { HealthChecker, type HealthTransition } from './checker.ts';
import type { ProbeOutcome, ProbeResult, ProbeTarget } from './probe.ts';
import { parseHealthCheckText } from './spec.ts';

const spec = (() => {
  const r = parseHealthCheckText('{"type":"tcp","intervalSeconds":1,"timeoutSeconds":0.5,"rise":2,"fall":3}');
  if (!r.ok) throw new Error(r.problem);
  return r.spec;
})();
const target = (address: string, service = 'shop/web'): HealthTarget => ({
  service,
  address,
  family: 'ipv4',
  port: 8080,
  spec,
});
const flush = async () => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
};

/** Probes answer what the test says per address; each call is recorded. */
function rig(o: { concurrency?: number } = {}) {
  const clock = new ManualClock();
  const outcome = new Map<string, ProbeOutcome>();
  const calls: { address: string; at: number }[] = [];
  const transitions: HealthTransition[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const gates: (() => void)[] = [];
  let gated = false;
  const checker = new HealthChecker({
    clock,
    concurrency: o.concurrency,
    random: () => 0.5,
    prober: async (t: ProbeTarget): Promise<ProbeResult> => {
      calls.push({ address: t.address, at: clock.monotonic() });
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      if (gated) await new Promise<void>((r) => gates.push(r));
      inFlight--;
      const out = outcome.get(t.address) ?? 'pass';
      return {
        outcome: out,
        detail: out === 'pass' ? 'connected' : out === 'fail' ? 'ECONNREFUSED' : 'ENETUNREACH',
      };
    },
    onTransition: (t) => transitions.push(t),
  });
  return {
    clock,
    outcome,
    calls,
    transitions,
    checker,
    gates,
    gate: (on: boolean) => {
      gated = on;
    },
    maxInFlight: () => maxInFlight,
  };
}

describe('health checker', () => {
  test('a new backend is pending until its first probe, which runs at once; then fall and rise decide', async () => {
    const t = rig();
    t.outcome.set('10.0.0.1', 'pass');
    t.checker.setTargets([target('10.0.0.1')]);
    assert.equal(t.checker.state('shop/web', '10.0.0.1', 8080), 'pending');
    const v0 = t.checker.version('shop/web');
    await flush();
    assert.equal(t.calls.length, 1, 'probed at once, not after an interval');
    assert.equal(t.checker.state('shop/web', '10.0.0.1', 8080), 'up');
    assert.ok(t.checker.version('shop/web') > v0);

    t.outcome.set('10.0.0.1', 'fail');
    // Phase spread: the second probe comes within the first interval (random 0.5 -> 500 ms).
    await t.clock.advance(500);
    await flush();
    assert.equal(t.calls.length, 2);
    assert.equal(t.checker.state('shop/web', '10.0.0.1', 8080), 'up', 'one failure of fall 3');
    await t.clock.advance(1000);
    await flush();
    assert.equal(t.checker.state('shop/web', '10.0.0.1', 8080), 'up', 'two of fall 3');
    await t.clock.advance(1000);
    await flush();
    assert.equal(t.checker.state('shop/web', '10.0.0.1', 8080), 'down', 'the third failure takes it out');
    assert.deepEqual(
      t.transitions.map((x) => [x.from, x.to, x.detail]),
      [
        ['pending', 'up', 'connected'],
        ['up', 'down', 'ECONNREFUSED'],
      ],
    );

    t.outcome.set('10.0.0.1', 'pass');
    await t.clock.advance(1000);
    await flush();
    assert.equal(t.checker.state('shop/web', '10.0.0.1', 8080), 'down', 'one pass of rise 2');
    await t.clock.advance(1000);
    await flush();
    assert.equal(t.checker.state('shop/web', '10.0.0.1', 8080), 'up');
  });

  test('a backend down at start stays out: two failures back to back decide, without waiting an interval', async () => {
    const t = rig();
    t.outcome.set('10.0.0.2', 'fail');
    t.checker.setTargets([target('10.0.0.2')]);
    await flush();
    assert.equal(t.checker.state('shop/web', '10.0.0.2', 8080), 'down');
    assert.equal(t.calls.length, 2);
    assert.equal(t.clock.monotonic(), t.calls[0]!.at, 'no time passed');
  });

  test('a first probe that fails once (a busy start) does not decide alone', async () => {
    const t = rig();
    let first = true;
    const checker = new HealthChecker({
      clock: t.clock,
      prober: async () => {
        const out = first ? 'fail' : 'pass';
        first = false;
        return { outcome: out, detail: out };
      },
    });
    checker.setTargets([target('10.0.0.5')]);
    await checker.firstProbes(1000);
    assert.equal(checker.state('shop/web', '10.0.0.5', 8080), 'up');
    checker.close();
  });

  test('a probe that cannot run is never a failure: an up backend stays up, a new one is trusted', async () => {
    const t = rig();
    t.checker.setTargets([target('10.0.0.1'), target('10.0.0.3')]);
    await flush();
    t.outcome.set('10.0.0.1', 'error');
    for (let i = 0; i < 5; i++) await t.clock.advance(1000);
    await flush();
    assert.equal(t.checker.state('shop/web', '10.0.0.1', 8080), 'up');
    t.outcome.set('10.0.0.4', 'error');
    t.checker.setTargets([target('10.0.0.1'), target('10.0.0.3'), target('10.0.0.4')]);
    await flush();
    assert.equal(t.checker.state('shop/web', '10.0.0.4', 8080), 'up');
    const s = t.checker.summary()[0]!;
    assert.equal(s.total, 3);
    assert.equal(s.backends.find((b) => b.address === '10.0.0.4')!.last?.outcome, 'error');
  });

  test('removed backends are no longer probed; firstProbes waits for new ones only', async () => {
    const t = rig();
    t.gate(true);
    t.checker.setTargets([target('10.0.0.1'), target('10.0.0.2')]);
    assert.equal(t.checker.hasPending(), true);
    let waited = false;
    const first = t.checker.firstProbes(5000).then(() => {
      waited = true;
    });
    await flush();
    assert.equal(waited, false);
    for (const g of t.gates.splice(0)) g();
    await first;
    assert.equal(t.checker.hasPending(), false);
    t.gate(false);
    t.checker.setTargets([target('10.0.0.2')]);
    assert.equal(t.checker.state('shop/web', '10.0.0.1', 8080), undefined);
    const before = t.calls.filter((c) => c.address === '10.0.0.1').length;
    for (let i = 0; i < 5; i++) await t.clock.advance(1000);
    assert.equal(t.calls.filter((c) => c.address === '10.0.0.1').length, before);
    assert.ok(t.calls.filter((c) => c.address === '10.0.0.2').length >= 5);
  });

  test('while a pass holds them, no new probe starts; they resume when it ends', async () => {
    const t = rig();
    const release = t.checker.hold();
    const second = t.checker.hold();
    t.checker.setTargets([target('10.0.0.1'), target('10.0.0.2')]);
    await flush();
    assert.equal(t.calls.length, 0);
    release();
    release();
    await flush();
    assert.equal(t.calls.length, 0, 'another holder remains');
    second();
    await flush();
    assert.equal(t.calls.length, 2);
    t.checker.close();
  });

  test("a new backend's first probe goes ahead of the routine probes waiting their turn", async () => {
    const t = rig({ concurrency: 1 });
    t.checker.setTargets([target('10.0.0.1'), target('10.0.0.2'), target('10.0.0.3')]);
    await flush();
    await t.checker.firstProbes(1000);
    t.gate(true);
    // The routine probes come due (random 0.5: all at 500 ms): one runs, two wait.
    await t.clock.advance(500);
    await flush();
    const before = t.calls.length;
    t.checker.setTargets([target('10.0.0.1'), target('10.0.0.2'), target('10.0.0.3'), target('10.0.0.4')]);
    await flush();
    for (let i = 0; i < 4; i++) {
      for (const g of t.gates.splice(0)) g();
      await flush();
    }
    const order = t.calls.slice(before).map((c) => c.address);
    assert.equal(order[0], '10.0.0.4', `order: ${order.join(' ')}`);
    t.gate(false);
    t.checker.close();
  });

  test('firstProbes gives up after its timeout (a probe that hangs does not hold the first pass)', async () => {
    const t = rig();
    t.gate(true);
    t.checker.setTargets([target('10.0.0.1')]);
    let waited = false;
    const first = t.checker.firstProbes(3000).then(() => {
      waited = true;
    });
    await t.clock.advance(2999);
    assert.equal(waited, false);
    await t.clock.advance(1);
    await first;
    assert.equal(t.checker.state('shop/web', '10.0.0.1', 8080), 'pending');
    for (const g of t.gates.splice(0)) g();
  });

  test('1,000 backends: at most `concurrency` probes in flight, and later rounds spread over the interval', async () => {
    const t = rig({ concurrency: 16 });
    const targets = Array.from({ length: 1000 }, (_, i) => target(`10.1.${i >> 8}.${i & 255}`));
    t.gate(true);
    t.checker.setTargets(targets);
    while (t.calls.length < 1000) {
      await flush();
      for (const g of t.gates.splice(0)) g();
    }
    await flush();
    assert.equal(t.maxInFlight(), 16);
    t.gate(false);
    t.checker.close();
  });

  test('real jitter: after the first round, probes are spread over the interval, not in a burst', async () => {
    const clock = new ManualClock();
    const calls: number[] = [];
    const checker = new HealthChecker({
      clock,
      prober: async () => {
        calls.push(clock.monotonic());
        return { outcome: 'pass', detail: 'connected' };
      },
    });
    checker.setTargets(Array.from({ length: 200 }, (_, i) => target(`10.2.0.${i}`)));
    await flush();
    const start = clock.monotonic();
    for (let i = 0; i < 10; i++) await clock.advance(100);
    await flush();
    // Second probes between start and start + 1 s, in each tenth of the interval.
    const second = calls.filter((c) => c > start);
    assert.ok(second.length >= 190, `${second.length} second probes`);
    const buckets = new Set(second.map((c) => Math.floor((c - start - 1) / 100)));
    assert.ok(buckets.size >= 9, `spread over ${buckets.size} of 10 tenths`);
    checker.close();
  });
});
