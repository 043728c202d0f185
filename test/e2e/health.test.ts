// Active health checks under load, in the kernel harness: a backend down at start, a
// frozen one (SIGSTOP: the kernel still accepts its connections, nothing answers) and
// one whose port is filtered (SYNs dropped). Each must leave IPVS within fall x interval
// (+ timeout), after which no new request fails, and come back after rise passes.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { beAddress, Lab, type LabService } from '../harness/lab.ts';
import { waitFor } from '../harness/netns.ts';

const VIP = '203.0.113.13';
const CHECK = { intervalS: 0.5, timeoutS: 0.3, rise: 2, fall: 2 };
const services: LabService[] = [
  {
    name: 'web-checked',
    vip: VIP,
    port: 80,
    forwarding: 'nat',
    backendPort: 80,
    backends: [{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }],
    healthCheck: `{ type: http, path: /, intervalSeconds: ${CHECK.intervalS}, timeoutSeconds: ${CHECK.timeoutS}, rise: ${CHECK.rise}, fall: ${CHECK.fall} }`,
  },
];
/**
 * Out within fall intervals (+10% jitter) and a timeout; in after rise; plus 1.5 s for the
 * pass and the scheduling of a guest that shares its CPU with a second one in CI (alone,
 * it measured 0.9-1.1 s out and 0.5-0.8 s back).
 */
const OUT_MS = CHECK.fall * CHECK.intervalS * 1100 + CHECK.timeoutS * 1000 + 1500;
const IN_MS = CHECK.rise * CHECK.intervalS * 1100 + 1500;

describe('e2e: active health checks under load (standalone mode)', () => {
  if (process.env.PORTLB_IN_UML !== '1')
    throw new Error('e2e tests run inside the kernel harness (npm test does)');
  const lab = new Lab({ prefix: 'e2h', maxReplicas: 1, backends: 4, services });
  const say = (line: string) => console.log(`    ${line}`);

  const weightOf = (n: number) => lab.backendsIn(1, VIP).find((b) => b.address === beAddress(n))?.weight;
  /**
   * Waits until backend n has this weight in the kernel; returns ms from `since` (epoch ms)
   * to the agent's pass that wrote it, from the agent's log (same clock; polling the kernel
   * through a process per poll is too coarse in this guest).
   */
  const weightAfter = async (n: number, weight: number, since: number) => {
    await waitFor(`be${n} at weight ${weight}`, () => weightOf(n) === weight, {
      timeoutMs: 30_000,
      intervalMs: 100,
    });
    // The agent's output reaches its log file through this process: wait for the lines.
    const verdict = weight ? 'backend passes its health check' : 'backend failed its health check: weight 0';
    const programmed = await waitFor(
      `"${verdict}" then "kernel programmed" for be${n} in the agent's log`,
      () => {
        const lines = lab.net
          .log(lab.agent(1)!)
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as { time: string; msg: string; backend?: string });
        const at = lines.findIndex(
          (l) => Date.parse(l.time) >= since && l.msg === verdict && l.backend === `${beAddress(n)}:80`,
        );
        return at < 0 ? undefined : lines.slice(at).find((l) => l.msg === 'kernel programmed');
      },
      { timeoutMs: 10_000, intervalMs: 100 },
    );
    return Date.parse(programmed.time) - since;
  };
  const connectionsOf = (n: number) => {
    const table = lab.ipvsadm(1, ['-Ln', '--stats', '-t', `${VIP}:80`]);
    const line = table.split('\n').find((l) => l.includes(`${beAddress(n)}:80`));
    if (!line) throw new Error(`be${n} not in ${table}`);
    return Number(line.trim().split(/\s+/)[2]);
  };

  before(async () => {
    await lab.up();
    // be4 is down before the agent starts.
    lab.signalBackend(4, 'SIGKILL');
    await lab.startReplica(1, { env: { PORTLB_LOG_LEVEL: 'debug' } });
    await lab.waitNextHops(VIP, 1);
  });
  after(async () => {
    await lab.down();
  });

  test('a backend down at start never receives a connection; it joins after rise passes', async () => {
    assert.equal(weightOf(4), 0, 'be4 is in IPVS at weight 0');
    const r = await lab.load({ vips: [VIP], seconds: 5, concurrency: 4 }).done;
    assert.equal(r.failed, 0, JSON.stringify(r.failures));
    assert.deepEqual(Object.keys(r.byBackend).sort(), ['be1', 'be2', 'be3']);
    assert.equal(connectionsOf(4), 0, 'the kernel scheduled nothing to be4');
    const status = await lab.status(1);
    const be4 = status.health[0].backends.find(
      (b: { backend: string }) => b.backend === `${beAddress(4)}:80`,
    );
    assert.equal(be4.state, 'down');
    assert.match(be4.last, /^fail: ECONNREFUSED/);

    await lab.restartBackend(4);
    const t0 = Date.now();
    const inMs = await weightAfter(4, 1, t0);
    say(
      `be4 listening -> weight 1 in ${inMs} ms (rise ${CHECK.rise} x ${CHECK.intervalS} s; bound ${IN_MS} ms)`,
    );
    assert.ok(inMs <= IN_MS, `be4 joined after ${inMs} ms`);
    const again = await lab.load({ vips: [VIP], seconds: 4, concurrency: 4 }).done;
    assert.equal(again.failed, 0, JSON.stringify(again.failures));
    assert.ok((again.byBackend.be4 ?? 0) > 0, 'be4 serves now');
  });

  /** Breaks backend n under load, measures out and back, counts failed new requests. */
  async function outAndBack(n: number, what: string, breakIt: () => number, mend: () => number) {
    const load = lab.load({ vips: [VIP], seconds: 16, concurrency: 4 });
    await load.started;
    await new Promise((r) => setTimeout(r, 3000));
    const t0 = breakIt();
    const outMs = await weightAfter(n, 0, t0);
    const removedAt = t0 + outMs;
    await new Promise((r) => setTimeout(r, 4000));
    const t1 = mend();
    const inMs = await weightAfter(n, 1, t1);
    const r = await load.done;
    const late = r.failedAt.filter((at) => at >= removedAt).length;
    say(
      `${what}: out of IPVS in ${outMs} ms (bound ${OUT_MS} ms), back in ${inMs} ms (bound ${IN_MS} ms); requests ${r.requests}, failed ${r.failed} (${JSON.stringify(r.failures)}), of them started after the removal: ${late}; over 900 ms: ${r.stalls.over900ms}`,
    );
    assert.ok(outMs <= OUT_MS, `${what}: removed after ${outMs} ms`);
    assert.ok(inMs <= IN_MS, `${what}: restored after ${inMs} ms`);
    assert.equal(late, 0, `${what}: new requests failed after the removal`);
    return r;
  }

  test('a frozen backend (SIGSTOP) leaves within fall x interval; no new request fails after; back after rise', async () => {
    await outAndBack(
      2,
      'frozen be2',
      () => lab.signalBackend(2, 'SIGSTOP'),
      () => lab.signalBackend(2, 'SIGCONT'),
    );
    const log = lab.net.log(lab.agent(1)!);
    assert.match(log, /"backend":"10\.0\.0\.22:80","detail":"timed out after 300 ms","msg":"backend failed/);
  });

  test('a filtered port (SYNs dropped) leaves the same way, and comes back', async () => {
    const rule = ['-p', 'tcp', '--dport', '80', '-j', 'DROP'];
    // From when the rule is known to be in place (the command returned): starting a
    // process costs this guest up to a second.
    const iptables = (op: '-I' | '-D') => {
      lab.inBackend(3, 'iptables-legacy', ['-w', op, 'INPUT', ...rule]);
      return Date.now();
    };
    await outAndBack(
      3,
      'filtered be3',
      () => iptables('-I'),
      () => iptables('-D'),
    );
  });
});
