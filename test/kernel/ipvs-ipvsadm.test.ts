// Our netlink client against ipvsadm on the same kernel: what we write, ipvsadm reads
// back identically; what ipvsadm writes, we read back identically; and services outside
// our ownership predicate survive a full reconcile untouched.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { applyOperations } from '../../lb-agent/src/ipvs/apply.ts';
import { NetlinkIpvsClient } from '../../lb-agent/src/ipvs/netlink-client.ts';
import { planIpvs } from '../../lb-agent/src/ipvs/planner.ts';
import { type ServiceSpec, type ServiceState, serviceId } from '../../lb-agent/src/ipvs/types.ts';
import { ensureDummy, requireKernelHarness, sh } from '../harness/kernel.ts';

requireKernelHarness();

const ws = (s: string) => s.trim().replace(/\s+/g, ' ');

/** The lines `ipvsadm -Ln --exact` prints for a table, written independently of our CLI. */
function asIpvsadm(table: readonly ServiceState[]): string[] {
  const lines: string[] = [];
  for (const { service: s, destinations } of table) {
    const k = s.key;
    let line =
      k.kind === 'fwmark'
        ? `FWM ${k.fwmark}${k.family === 'ipv6' ? ' IPv6' : ''} ${s.scheduler}`
        : `${k.protocol.toUpperCase()} ${k.family === 'ipv6' ? `[${k.address}]` : k.address}:${k.port} ${s.scheduler}`;
    if (s.schedulerFlags.length) {
      const names = { 'flag-1': 'fallback', 'flag-2': 'port', 'flag-3': 'flag-3' } as const;
      line += ` (${s.schedulerFlags.map((f) => `${s.scheduler}-${names[f]}`).join(',')})`;
    }
    if (s.persistence) {
      line += ` persistent ${s.persistence.timeout}`;
      const full = k.family === 'ipv4' ? 32 : 128;
      if (s.persistence.prefix !== full) {
        line +=
          k.family === 'ipv4'
            ? ` mask ${[24, 16, 8, 0].map((sh) => ((0xffffffff << (32 - s.persistence!.prefix)) >>> sh) & 255).join('.')}`
            : ` mask ${s.persistence.prefix}`;
      }
    }
    if (s.onePacket) line += ' ops';
    lines.push(line);
    const fwd = { nat: 'Masq', tunnel: 'Tunnel', dr: 'Route', local: 'Local', bypass: 'Bypass' } as const;
    for (const d of [...destinations].sort((a, b) => a.address.localeCompare(b.address))) {
      const host = d.family === 'ipv6' ? `[${d.address}]` : d.address;
      lines.push(
        `-> ${host}:${d.port} ${fwd[d.forward]} ${d.weight} ${d.activeConnections} ${d.inactiveConnections}`,
      );
    }
  }
  return lines;
}

/** ipvsadm's listing as sorted service blocks (its order is the kernel's hash order). */
function ipvsadmBlocks(text: string): string[] {
  const blocks: string[][] = [];
  for (const raw of text.split('\n').slice(3)) {
    const line = ws(raw);
    if (!line) continue;
    if (line.startsWith('->')) blocks.at(-1)!.push(line);
    else blocks.push([line]);
  }
  return blocks.map((b) => [b[0], ...b.slice(1).sort()].join('\n')).sort();
}

function ourBlocks(table: readonly ServiceState[]): string[] {
  return table.map((s) => asIpvsadm([s]).join('\n')).sort();
}

describe('netlink client vs ipvsadm on the same kernel', () => {
  let c: NetlinkIpvsClient;
  before(() => {
    ensureDummy('pladm0', ['10.249.1.254/24', 'fd00:249:1::fe/64']);
    sh('ipvsadm -C');
    c = NetlinkIpvsClient.open();
  });
  after(() => {
    c.close();
    sh('ipvsadm -C');
  });

  test('what we write, ipvsadm lists identically', async () => {
    const desired: ServiceSpec[] = [
      {
        service: {
          key: { kind: 'address', family: 'ipv4', protocol: 'tcp', address: '10.250.1.1', port: 80 },
          scheduler: 'mh',
          schedulerFlags: ['flag-1', 'flag-2'],
          onePacket: false,
          persistence: undefined,
          persistenceEngine: undefined,
        },
        destinations: [
          {
            family: 'ipv4',
            address: '10.249.1.1',
            port: 8080,
            forward: 'nat',
            weight: 3,
            upperThreshold: 0,
            lowerThreshold: 0,
          },
          {
            family: 'ipv4',
            address: '10.249.1.2',
            port: 80,
            forward: 'tunnel',
            weight: 1,
            upperThreshold: 0,
            lowerThreshold: 0,
          },
          {
            family: 'ipv4',
            address: '10.249.1.3',
            port: 80,
            forward: 'dr',
            weight: 0,
            upperThreshold: 0,
            lowerThreshold: 0,
          },
        ],
      },
      {
        service: {
          key: { kind: 'address', family: 'ipv4', protocol: 'udp', address: '10.250.1.2', port: 53 },
          scheduler: 'wlc',
          schedulerFlags: [],
          onePacket: true,
          persistence: { timeout: 300, prefix: 24 },
          persistenceEngine: undefined,
        },
        destinations: [],
      },
      {
        service: {
          key: { kind: 'address', family: 'ipv6', protocol: 'tcp', address: 'fd00:250::1', port: 443 },
          scheduler: 'rr',
          schedulerFlags: [],
          onePacket: false,
          persistence: { timeout: 30, prefix: 64 },
          persistenceEngine: undefined,
        },
        destinations: [
          {
            family: 'ipv6',
            address: 'fd00:249:1::1',
            port: 8443,
            forward: 'nat',
            weight: 1,
            upperThreshold: 0,
            lowerThreshold: 0,
          },
        ],
      },
      {
        service: {
          key: { kind: 'fwmark', family: 'ipv4', fwmark: 25001 },
          scheduler: 'sh',
          schedulerFlags: ['flag-2'],
          onePacket: false,
          persistence: undefined,
          persistenceEngine: undefined,
        },
        destinations: [],
      },
    ];
    const plan = planIpvs({
      desired,
      actual: [],
      owns: () => true,
      now: 0,
      draining: new Map(),
      drainTimeoutMs: 0,
    });
    const report = await applyOperations(c, plan.operations);
    assert.deepEqual(report.failed, []);
    const expected = desired.map((d) => ({
      service: d.service,
      destinations: d.destinations.map((x) => ({
        ...x,
        activeConnections: 0,
        inactiveConnections: 0,
        persistentConnections: 0,
      })),
    }));
    assert.deepEqual(ipvsadmBlocks(sh('ipvsadm -Ln --exact')), ourBlocks(expected));
  });

  test('what ipvsadm writes, we list identically', async () => {
    sh(`ipvsadm -C
      ipvsadm -A -t 10.250.2.1:80 -s wrr -p 120 -M 255.255.0.0
      ipvsadm -a -t 10.250.2.1:80 -r 10.249.1.5:80 -g -w 7 -x 50 -y 5
      ipvsadm -a -t 10.250.2.1:80 -r 10.249.1.6:81 -m -w 2
      ipvsadm -A --sctp-service [fd00:250::2]:5000 -s mh -b mh-port
      ipvsadm -a --sctp-service [fd00:250::2]:5000 -r [fd00:249:1::2]:5000 -m
      ipvsadm -A -f 7 -6 -s lc
      ipvsadm -A -u 10.250.2.2:514 -s rr -o`);
    const table = await c.getTable();
    assert.equal(table.length, 4);
    assert.deepEqual(ourBlocks(table), ipvsadmBlocks(sh('ipvsadm -Ln --exact')));
    const dr = table.find((s) => s.service.key.kind === 'address' && s.service.key.address === '10.250.2.1');
    const d5 = dr?.destinations.find((d) => d.address === '10.249.1.5');
    assert.deepEqual([d5?.upperThreshold, d5?.lowerThreshold], [50, 5]);
  });

  test('a reconcile never touches a service outside the ownership predicate', async () => {
    sh(`ipvsadm -C
      ipvsadm -A -t 192.0.2.80:80 -s rr
      ipvsadm -a -t 192.0.2.80:80 -r 10.249.1.9:80 -m
      ipvsadm -A -t 10.250.3.1:80 -s rr
      ipvsadm -a -t 10.250.3.1:80 -r 10.249.1.9:80 -m`);
    const foreignBefore = sh('ipvsadm -Ln --exact -t 192.0.2.80:80');
    const owns = (k: { kind: string; address?: string }) =>
      k.kind === 'address' && !!k.address?.startsWith('10.250.');
    // Desired: nothing of ours survives, and someone asks for the foreign VIP too.
    const plan = planIpvs({
      desired: [
        {
          service: {
            key: { kind: 'address', family: 'ipv4', protocol: 'tcp', address: '192.0.2.80', port: 80 },
            scheduler: 'mh',
            schedulerFlags: [],
            onePacket: false,
            persistence: undefined,
            persistenceEngine: undefined,
          },
          destinations: [],
        },
      ],
      actual: await c.getTable(),
      owns: owns as never,
      now: 0,
      draining: new Map(),
      drainTimeoutMs: 0,
    });
    assert.equal(plan.foreign, 1);
    assert.equal(plan.refused.length, 1);
    assert.deepEqual(
      plan.operations.map((o) => o.op),
      ['delete-service'],
    );
    await applyOperations(c, plan.operations);
    assert.equal(sh('ipvsadm -Ln --exact -t 192.0.2.80:80'), foreignBefore);
    assert.deepEqual(
      (await c.getTable()).map((s) => serviceId(s.service.key)),
      ['tcp:192.0.2.80:80'],
    );
  });

  test('connection timeouts: what we set, ipvsadm lists; what ipvsadm sets, we read; unset ones stay', async () => {
    const before = await c.getTimeouts();
    try {
      await c.setTimeouts({ tcpFin: 15 });
      assert.deepEqual(await c.getTimeouts(), { ...before, tcpFin: 15 });
      assert.equal(
        ws(sh('ipvsadm -L --timeout')),
        `Timeout (tcp tcpfin udp): ${before.tcp} 15 ${before.udp}`,
      );
      sh('ipvsadm --set 600 20 200');
      assert.deepEqual(await c.getTimeouts(), { tcp: 600, tcpFin: 20, udp: 200 });
    } finally {
      sh(`ipvsadm --set ${before.tcp} ${before.tcpFin} ${before.udp}`);
    }
  });
});
