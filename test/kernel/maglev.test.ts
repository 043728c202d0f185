// Maglev (mh) on the real kernel: the TypeScript model (lb-agent/src/ipvs/maglev.ts)
// predicts the kernel's choice for every flow; two services with the same backends but
// different histories, both programmed by the agent's data plane, agree on every flow (and
// two left to the kernel's own order do not); the disruption when a backend leaves; and
// what moving destinations (delete and add again in one batch) does to open connections.
//
// The kernel's choices are observed without backends: local connections from one source
// address and many source ports (the services have mh-port) each leave a SYN_SENT entry in
// /proc/net/ip_vs_conn naming the destination chosen for that port.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DataPlane } from '../../lb-agent/src/agent/data-plane.ts';
import { FakeNetfilter } from '../../lb-agent/src/agent/netfilter.ts';
import { FakeAddressManager } from '../../lb-agent/src/agent/vips.ts';
import { computeDesired } from '../../lb-agent/src/core/desired.ts';
import { intent } from '../../lb-agent/src/core/fixtures.ts';
import type { Endpoint, ServiceIntent } from '../../lb-agent/src/core/types.ts';
import { addressKey, realServer } from '../../lb-agent/src/ipvs/fixtures.ts';
import { MH_TABLE_SIZE, type MhDestination, mhLookup, mhTable } from '../../lb-agent/src/ipvs/maglev.ts';
import { NetlinkIpvsClient } from '../../lb-agent/src/ipvs/netlink-client.ts';
import type { RealServer } from '../../lb-agent/src/ipvs/types.ts';
import { ManualClock } from '../../lb-agent/src/util/clock.ts';
import { ensureDummy, requireKernelHarness, sh } from '../harness/kernel.ts';
import { NetnsLab, waitFor } from '../harness/netns.ts';

requireKernelHarness();

const repo = path.resolve(import.meta.dirname, '..', '..');
const SOURCE = '10.248.0.1';
const backend = (i: number) => `10.248.${1 + (i >> 8)}.${i & 255}`;
const key = (vip: string) => addressKey(vip);
const dest = (address: string, weight = 1) => realServer(address, { weight });

/**
 * The kernel's choice for `count` source ports from `from` to `vip`: port -> destination
 * address. The same ports may probe several VIPs (the connections are closed again).
 */
function kernelChoices(vip: string, from: number, count: number): Map<number, string> {
  execFileSync(process.execPath, [
    path.join(repo, 'test', 'harness', 'conn-probe.ts'),
    '--vip',
    vip,
    '--source',
    SOURCE,
    '--from-port',
    String(from),
    '--count',
    String(count),
  ]);
  const hex = (a: string) =>
    a
      .split('.')
      .map((o) => Number(o).toString(16).padStart(2, '0'))
      .join('')
      .toUpperCase();
  const ip = (h: string) => (h.match(/../g) ?? []).map((b) => Number.parseInt(b, 16)).join('.');
  const out = new Map<number, string>();
  for (const line of readFileSync('/proc/net/ip_vs_conn', 'utf8').split('\n').slice(1)) {
    const [, f, fport, to, , d] = line.trim().split(/\s+/);
    const port = Number.parseInt(fport ?? '', 16);
    if (f === hex(SOURCE) && to === hex(vip) && d && port >= from && port < from + count)
      out.set(port, ip(d));
  }
  return out;
}

describe('Maglev (mh) on the real kernel', () => {
  const ipvs = NetlinkIpvsClient.open();
  const mhService = (vip: string) => ({
    key: key(vip),
    scheduler: 'mh',
    schedulerFlags: ['flag-1', 'flag-2'] as ('flag-1' | 'flag-2')[],
    onePacket: false,
    persistence: undefined,
    persistenceEngine: undefined,
  });
  /** The model's inputs, read from the kernel: the list in its order, weights; last weights as given. */
  const modelOf = async (vip: string, lastWeights: Map<string, number> = new Map()) =>
    (await ipvs.listDestinations(key(vip))).map(
      (d): MhDestination => ({
        address: d.address,
        port: d.port,
        weight: d.weight,
        lastWeight: d.weight > 0 ? d.weight : (lastWeights.get(d.address) ?? 1),
      }),
    );

  before(() => {
    sh('ipvsadm -C');
    // The client address and a route for the destinations: SYNs leave and nobody answers.
    // The VIPs are local addresses (as on an LB node): IPVS schedules local clients at
    // LOCAL_OUT, and an unroutable VIP would fail the connect before it gets there.
    ensureDummy('plmh0', [
      `${SOURCE}/24`,
      ...['10.250.77.1', '10.250.78.1', '10.250.78.2', '10.250.78.3', '10.250.79.1'].map((v) => `${v}/32`),
    ]);
    sh('ip route replace 10.248.1.0/24 dev plmh0; ip route replace 10.248.2.0/24 dev plmh0');
    sh('sysctl -qw net.ipv4.vs.conntrack=1');
  });
  after(() => {
    sh('ipvsadm -C; ip link del plmh0 2>/dev/null; true');
    ipvs.close();
  });

  test('the model picks the kernel’s backend for every one of 12,000 flows (weights, a drained backend, fallback)', async () => {
    const vip = '10.250.77.1';
    await ipvs.addService(mhService(vip));
    // One at a time, as a running agent adds them: the list is the reverse of this.
    for (let i = 1; i <= 12; i++) await ipvs.addDestination(key(vip), dest(backend(i), i === 3 ? 2 : 1));
    await ipvs.updateDestination(key(vip), dest(backend(7), 0)); // drained: keeps its slots
    const model = await modelOf(vip);
    const table = mhTable(model);
    const seen = kernelChoices(vip, 20000, 12_000);
    assert.ok(seen.size >= 11_900, `observed ${seen.size} flows`);
    let agree = 0;
    const mismatches: string[] = [];
    for (const [port, address] of seen) {
      const i = mhLookup(table, model, { address: SOURCE, port });
      if (i !== undefined && model[i]!.address === address) agree++;
      else if (mismatches.length < 5)
        mismatches.push(`${port}: kernel ${address}, model ${i === undefined ? '-' : model[i]!.address}`);
    }
    console.log(`# measured: model vs kernel: ${agree} of ${seen.size} flows agree`);
    assert.equal(agree, seen.size, mismatches.join('; '));
    assert.ok(![...seen.values()].includes(backend(7)), 'no new flow to the drained backend');
  });

  test('two services, same 100 backends, different histories through the data plane: one order, every flow agrees', async () => {
    const A = '10.250.78.1';
    const B = '10.250.78.2';
    const C = '10.250.78.3';
    const all = Array.from({ length: 100 }, (_, i) => backend(i + 1));
    const ep = (address: string): Endpoint => ({
      address,
      family: 'ipv4',
      port: 8080,
      ready: true,
      serving: true,
      terminating: false,
      nodeName: undefined,
    });
    const mh = (id: string, vip: string, addresses: string[]): ServiceIntent =>
      intent(id, vip, addresses.map(ep), { schedulerFlags: ['flag-2'] });
    const clock = new ManualClock();
    // Each replica owns only its own VIP (both run in this one kernel).
    const dataPlane = (vip: string) =>
      new DataPlane({
        ipvs,
        addresses: new FakeAddressManager(),
        netfilter: new FakeNetfilter(),
        vipFilter: false,
        snat: false,
        owns: (a) => a === vip,
        drainTimeoutMs: 0,
        clock,
      });
    const node = { name: 'n1', excluded: false, ready: true };
    const program = async (dp: DataPlane, intents: ServiceIntent[]) => {
      const vip = intents[0]!.vips[0]!;
      const report = await dp.apply(
        computeDesired({ services: intents }, node, { owns: (a) => a === vip }),
        true,
      );
      assert.deepEqual(report.failures, []);
      return report;
    };
    // Replica A: everything at once, after a restart.
    await program(dataPlane(A), [mh('a', A, all)]);
    // Replica B: half, then the rest, then ten leave and come back, one by one; then it restarts.
    let b = dataPlane(B);
    await program(b, [mh('b', B, all.slice(50))]);
    await program(b, [mh('b', B, all)]);
    const leaving = all.filter((_, i) => i % 10 === 3);
    await program(b, [
      mh(
        'b',
        B,
        all.filter((x) => !leaving.includes(x)),
      ),
    ]);
    let moved = 0;
    for (const n of leaving.keys()) {
      const report = await program(b, [
        mh(
          'b',
          B,
          all.filter((y) => !leaving.slice(n + 1).includes(y)),
        ),
      ]);
      moved += report.moved;
    }
    b = dataPlane(B);
    await program(b, [mh('b', B, all)]);
    // Control: the same history left to the kernel's own order (no reordering).
    await ipvs.addService(mhService(C));
    for (const x of all.slice(50)) await ipvs.addDestination(key(C), dest(x));
    for (const x of all.slice(0, 50)) await ipvs.addDestination(key(C), dest(x));
    const order = async (vip: string) => (await ipvs.listDestinations(key(vip))).map((d) => d.address);
    assert.deepEqual(await order(B), await order(A), 'the same list order');
    // The same client ports on each VIP: the kernel's own choices, compared flow by flow.
    const flows = 4000;
    const [ca, cb, cc] = [A, B, C].map((vip) => kernelChoices(vip, 30000, flows)) as [
      Map<number, string>,
      Map<number, string>,
      Map<number, string>,
    ];
    let agreeAB = 0;
    let agreeAC = 0;
    for (const [port, d] of ca) {
      if (cb.get(port) === d) agreeAB++;
      if (cc.get(port) === d) agreeAC++;
    }
    console.log(
      `# measured: same 100 backends, different histories: ${agreeAB} of ${ca.size} flows agree in canonical order (${moved} moves on the way); ${agreeAC} of ${ca.size} in the kernel's own order`,
    );
    assert.ok(ca.size >= flows * 0.99 && cb.size === ca.size, `observed ${ca.size} and ${cb.size}`);
    assert.equal(agreeAB, ca.size, 'every flow agrees');
    assert.ok(agreeAC < ca.size, 'left to the kernel, the histories disagree (the premise)');
  });
  test('the table’s imbalance at 10, 40, 100, 300 and 1000 backends (the model the kernel agrees with)', () => {
    const lines: string[] = [];
    for (const n of [10, 40, 100, 300, 1000]) {
      const dests = Array.from(
        { length: n },
        (_, i): MhDestination => ({ address: backend(i + 1), port: 8080, weight: 1 }),
      );
      const counts = new Array<number>(n).fill(0);
      for (const i of mhTable(dests)) counts[i]!++;
      const mean = MH_TABLE_SIZE / n;
      const max = Math.max(...counts);
      lines.push(
        `${n}: ${Math.min(...counts)}-${max} slots (mean ${mean.toFixed(1)}, busiest +${((max / mean - 1) * 100).toFixed(1)}%)`,
      );
      assert.ok(max <= Math.ceil(mean) + 1, `${n}: ${max}`);
    }
    console.log(`# measured: mh table (${MH_TABLE_SIZE} slots) per backend: ${lines.join('; ')}`);
  });

  test('a backend leaves one of N: only its flows move (disruption <= 1/N + 1%)', async () => {
    const vip = '10.250.79.1';
    await ipvs.addService(mhService(vip));
    for (let i = 10; i >= 1; i--) await ipvs.addDestination(key(vip), dest(backend(i)));
    const before = await modelOf(vip);
    await ipvs.deleteDestination(key(vip), dest(backend(4)));
    const afterModel = await modelOf(vip);
    const [t0, t1] = [mhTable(before), mhTable(afterModel)];
    let moved = 0;
    const ports = kernelChoices(vip, 40000, 4000);
    for (const [port, address] of ports) {
      const was = before[mhLookup(t0, before, { address: SOURCE, port })!]!.address;
      const now = afterModel[mhLookup(t1, afterModel, { address: SOURCE, port })!]!.address;
      assert.equal(now, address, 'the kernel picks what the model says after the change');
      if (was !== now) moved++;
    }
    const share = moved / ports.size;
    console.log(
      `# measured: one of 10 backends leaves: ${(share * 100).toFixed(1)}% of flows move (bound ${(100 / 10 + 1).toFixed(0)}%)`,
    );
    assert.ok(share <= 1 / 10 + 0.01, `${share}`);
  });
});

describe('moving destinations (delete and add in one batch) under open connections', () => {
  const lab = new NetnsLab('plmv');
  const VIP = '10.250.80.1';
  const ipvs = NetlinkIpvsClient.open();
  const backends = [1, 2, 3].map((n) => `10.248.11.${1 + n}`);
  const real = (address: string): RealServer => ({ ...dest(address), port: 8080 });

  before(async () => {
    sh('ipvsadm -C');
    sh('sysctl -qw net.ipv4.ip_forward=1 net.ipv4.vs.conntrack=1 net.ipv4.vs.expire_nodest_conn=1');
    // The LB is this (root) namespace: the VIP on a dummy, a client and three backends on veths.
    ensureDummy('plmv0', [`${VIP}/32`]);
    lab.addNamespace('cl');
    sh(`ip link add plmvcl type veth peer name eth0 netns ${lab.ns('cl')}`);
    sh('ip addr add 10.248.10.1/24 dev plmvcl && ip link set plmvcl up');
    lab.exec('cl', 'ip', ['addr', 'add', '10.248.10.2/24', 'dev', 'eth0']);
    lab.exec('cl', 'ip', ['link', 'set', 'eth0', 'up']);
    lab.exec('cl', 'ip', ['route', 'add', 'default', 'via', '10.248.10.1']);
    sh('ip link add plmvbr type bridge && ip addr add 10.248.11.1/24 dev plmvbr && ip link set plmvbr up');
    for (const [i, address] of backends.entries()) {
      const name = `be${i + 1}`;
      lab.addNamespace(name);
      sh(`ip link add plmvb${i + 1} type veth peer name eth0 netns ${lab.ns(name)}`);
      sh(`ip link set plmvb${i + 1} master plmvbr && ip link set plmvb${i + 1} up`);
      lab.exec(name, 'ip', ['addr', 'add', `${address}/24`, 'dev', 'eth0']);
      lab.exec(name, 'ip', ['link', 'set', 'eth0', 'up']);
      lab.exec(name, 'ip', ['route', 'add', 'default', 'via', '10.248.11.1']);
      const d = lab.spawn(name, `backend-${name}`, process.execPath, [
        path.join(repo, 'test', 'harness', 'backend-server.ts'),
        name,
        '8080',
      ]);
      await waitFor(`${name} listening`, () => lab.log(d).includes('listening'), { timeoutMs: 30_000 });
    }
    await ipvs.addService({
      key: key(VIP),
      scheduler: 'mh',
      schedulerFlags: ['flag-1', 'flag-2'],
      onePacket: false,
      persistence: undefined,
      persistenceEngine: undefined,
    });
    for (const b of backends) await ipvs.addDestination(key(VIP), real(b));
  });
  after(async () => {
    await lab.cleanup();
    sh('ipvsadm -C; ip link del plmv0; ip link del plmvcl; ip link del plmvbr; true');
    for (const i of [1, 2, 3]) sh(`ip link del plmvb${i} 2>/dev/null; true`);
    ipvs.close();
  });

  test('every destination moved three times while 60 keep-alive connections run: none breaks, no packet is lost', async () => {
    const out: string[] = [];
    const spawned = Date.now();
    const client = lab.spawn('cl', 'client', process.execPath, [
      path.join(repo, 'test', 'harness', 'load-client.ts'),
      '--url',
      `http://${VIP}/`,
      '--seconds',
      '12',
      '--keepalive',
      '60',
      '--interval-ms',
      '300',
    ]);
    await waitFor(
      'connections on every backend',
      async () => {
        const ds = await ipvs.listDestinations(key(VIP));
        return ds.every((d) => d.activeConnections > 0);
      },
      { timeoutMs: 30_000 },
    );
    // Every connection is open and answered: the moves start after this.
    const connectedAt = Date.now();
    const moves: string[] = [];
    for (let round = 0; round < 3; round++) {
      await new Promise((r) => setTimeout(r, 1500));
      moves.push(((Date.now() - spawned) / 1000).toFixed(1));
      const ds = await ipvs.listDestinations(key(VIP));
      // Reverse the list: each destination deleted and added again, in one batch.
      const ops = ds.flatMap((d) => [
        { op: 'delete-destination' as const, key: key(VIP), destination: real(d.address) },
        { op: 'add-destination' as const, key: key(VIP), destination: real(d.address) },
      ]);
      const errors = await ipvs.execute(ops);
      assert.deepEqual(errors.filter(Boolean), []);
      const after = await ipvs.listDestinations(key(VIP));
      assert.deepEqual(
        after.map((d) => d.address),
        ds.map((d) => d.address).reverse(),
      );
      out.push(after.map((d) => `${d.address}:${d.activeConnections}`).join(' '));
    }
    await waitFor('the client’s summary', () => lab.log(client).includes('"requests"'), {
      timeoutMs: 60_000,
    });
    const r = JSON.parse(lab.log(client).trim().split('\n').at(-1)!) as {
      requests: number;
      failed: number;
      failures: Record<string, number>;
      connections?: { broken: number; opened: number };
      latencyMs?: { p99: number; max: number };
      stalls: { over900ms: number; at: number[]; startedAt: number[]; retransSegs: number };
    };
    // Requests that began before every connection was open are the warm-up.
    const warmup = r.stalls.startedAt.filter((t) => t < connectedAt).length;
    console.log(
      `# measured: 3 moves of every destination under 60 keep-alive connections: ${r.failed} failed of ${r.requests}, ${r.connections?.broken ?? '?'} connections broken, ${r.stalls.over900ms} requests over 900 ms${r.stalls.at.length ? ` (at ${r.stalls.at.join(', ')} s)` : ''}, ${warmup} of them begun before every connection was open (connected at ${((connectedAt - spawned) / 1000).toFixed(1)} s) (moves at ${moves.join(', ')} s), ${r.stalls.retransSegs} segments retransmitted, latency p99 ${r.latencyMs?.p99} ms max ${r.latencyMs?.max} ms; connections after each move: ${out.join(' | ')}`,
    );
    assert.equal(r.failed, 0, JSON.stringify(r.failures));
    assert.equal(r.connections?.broken, 0);
    // A move that harmed a flow would send its packets astray: a retransmission, or a
    // reset (a broken connection). Slow answers without either are this guest's CPU: two
    // fresh-clone runs beside the other kernel shard's netfilter tests had 13 and 46
    // requests over 900 ms (p99 1.4 s) with 0 segments retransmitted, the same test alone
    // none over 900 ms. Stalls under moves with real traffic are asserted end to end
    // (e2e: hitless replica changes, 0 over 900 ms).
    assert.equal(r.stalls.retransSegs, 0, 'no segment retransmitted');
  });
});
