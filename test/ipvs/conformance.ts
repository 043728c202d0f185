// One suite, two implementations: the fake IpvsClient (on any machine) and the kernel
// through netlink (in the UML harness). If the kernel answers differently from the fake,
// the kernel run fails and the fake gets fixed.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, test } from 'node:test';
import type { IpvsClient } from '../../lb-agent/src/ipvs/client.ts';
import { IpvsError } from '../../lb-agent/src/ipvs/errors.ts';
import { realServer, virtualService } from '../../lb-agent/src/ipvs/fixtures.ts';
import type { ServiceKey, ServiceState } from '../../lb-agent/src/ipvs/types.ts';

/** Addresses the suite uses; a kernel run must route DEST_V4/DEST_V6 (masq checks it). */
export const VIP_PREFIX_V4 = '10.250.';
export const VIP_PREFIX_V6 = 'fd00:250::';
export const DEST_V4 = (n: number) => `10.249.0.${n}`;
export const DEST_V6 = (n: number) => `fd00:249::${n}`;
export const FWMARK_BASE = 25000;

const vip = (n: number, port = 80, protocol: 'tcp' | 'udp' | 'sctp' = 'tcp'): ServiceKey => ({
  kind: 'address',
  family: 'ipv4',
  protocol,
  address: `${VIP_PREFIX_V4}0.${n}`,
  port,
});
const vip6 = (n: number, port = 80): ServiceKey => ({
  kind: 'address',
  family: 'ipv6',
  protocol: 'tcp',
  address: `${VIP_PREFIX_V6}${n}`,
  port,
});
const svc = virtualService;
const dest = realServer;

export function isSuiteService(key: ServiceKey): boolean {
  if (key.kind === 'fwmark') return key.fwmark >= FWMARK_BASE && key.fwmark < FWMARK_BASE + 100;
  return key.address.startsWith(VIP_PREFIX_V4) || key.address.startsWith(VIP_PREFIX_V6);
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof IpvsError, `expected IpvsError, got ${String(err)}`);
    assert.equal(err.code, code);
    return true;
  });
}

export function ipvsConformance(label: string, open: () => Promise<IpvsClient> | IpvsClient): void {
  describe(`IpvsClient conformance: ${label}`, () => {
    let c: IpvsClient;
    beforeEach(async () => {
      c = await open();
    });
    afterEach(async () => {
      // Remove only what this suite created: other services may exist (and must survive).
      const ops = (await c.listServices())
        .filter((s) => isSuiteService(s.service.key))
        .map((s) => ({ op: 'delete-service' as const, key: s.service.key }));
      await c.execute(ops);
      c.close();
    });

    const find = async (key: ServiceKey) =>
      (await c.listServices()).find((s) => JSON.stringify(s.service.key) === JSON.stringify(key))?.service;

    test('a service reads back exactly as written', async () => {
      const s = svc(vip(1), 'wlc');
      await c.addService(s);
      assert.deepEqual(await find(vip(1)), s);
    });

    test('persistence, one-packet and mh flags round-trip', async () => {
      const a = svc(vip(2, 443), 'mh', { schedulerFlags: ['flag-1', 'flag-2'] });
      const b = svc(vip(3, 53, 'udp'), 'sh', { onePacket: true, persistence: { timeout: 300, prefix: 24 } });
      const d = svc(vip6(4), 'rr', { persistence: { timeout: 60, prefix: 64 } });
      for (const s of [a, b, d]) await c.addService(s);
      assert.deepEqual(await find(a.key), a);
      assert.deepEqual(await find(b.key), b);
      assert.deepEqual(await find(d.key), d);
    });

    test('SCTP and fwmark services', async () => {
      const sctp = svc(vip(5, 5000, 'sctp'), 'wrr');
      const fw = svc({ kind: 'fwmark', family: 'ipv4', fwmark: FWMARK_BASE + 1 }, 'rr');
      await c.addService(sctp);
      await c.addService(fw);
      assert.deepEqual(await find(sctp.key), sctp);
      assert.deepEqual(await find(fw.key), fw);
      await c.addDestination(fw.key, dest(DEST_V4(9), { port: 0, forward: 'dr' }));
      assert.equal((await c.listDestinations(fw.key))[0]?.forward, 'dr');
    });

    test('adding a service twice: SERVICE_EXISTS', async () => {
      await c.addService(svc(vip(6)));
      await rejectsWith(c.addService(svc(vip(6), 'wrr')), 'SERVICE_EXISTS');
    });

    test('update replaces every field and keeps the destinations', async () => {
      await c.addService(svc(vip(7)));
      await c.addDestination(vip(7), dest(DEST_V4(1)));
      const changed = svc(vip(7), 'mh', {
        schedulerFlags: ['flag-2'],
        persistence: { timeout: 30, prefix: 32 },
      });
      await c.updateService(changed);
      assert.deepEqual(await find(vip(7)), changed);
      await c.updateService(svc(vip(7)));
      assert.deepEqual(await find(vip(7)), svc(vip(7)));
      assert.equal((await c.listDestinations(vip(7))).length, 1);
    });

    test('missing services: SERVICE_NOT_FOUND for update, delete and destination commands', async () => {
      await rejectsWith(c.updateService(svc(vip(8))), 'SERVICE_NOT_FOUND');
      await rejectsWith(c.deleteService(vip(8)), 'SERVICE_NOT_FOUND');
      await rejectsWith(c.addDestination(vip(8), dest(DEST_V4(1))), 'SERVICE_NOT_FOUND');
      await rejectsWith(c.deleteDestination(vip(8), dest(DEST_V4(1))), 'SERVICE_NOT_FOUND');
    });

    test('unknown scheduler: SCHEDULER_NOT_FOUND', async () => {
      await rejectsWith(c.addService(svc(vip(9), 'nosuchsched')), 'SCHEDULER_NOT_FOUND');
      await c.addService(svc(vip(9)));
      await rejectsWith(c.updateService(svc(vip(9), 'nosuchsched')), 'SCHEDULER_NOT_FOUND');
    });

    test('destinations: add, read back, update, delete, with the kernel’s errors', async () => {
      await c.addService(svc(vip(10)));
      const d = dest(DEST_V4(1), { weight: 3, upperThreshold: 100, lowerThreshold: 10 });
      await c.addDestination(vip(10), d);
      const [got] = await c.listDestinations(vip(10));
      assert.deepEqual(got, { ...d, activeConnections: 0, inactiveConnections: 0, persistentConnections: 0 });
      await rejectsWith(c.addDestination(vip(10), d), 'DESTINATION_EXISTS');
      await c.updateDestination(vip(10), { ...d, weight: 0 });
      assert.equal((await c.listDestinations(vip(10)))[0]?.weight, 0);
      await rejectsWith(c.updateDestination(vip(10), dest(DEST_V4(2))), 'DESTINATION_NOT_FOUND');
      await rejectsWith(c.deleteDestination(vip(10), dest(DEST_V4(2))), 'DESTINATION_NOT_FOUND');
      await c.deleteDestination(vip(10), d);
      assert.deepEqual(await c.listDestinations(vip(10)), []);
    });

    test('the destination list is in the kernel’s order: the newest first, an update keeps its place', async () => {
      await c.addService(svc(vip(11), 'mh'));
      for (const n of [1, 2, 3]) await c.addDestination(vip(11), dest(DEST_V4(n)));
      const order = async () => (await c.listDestinations(vip(11))).map((d) => d.address);
      assert.deepEqual(await order(), [DEST_V4(3), DEST_V4(2), DEST_V4(1)]);
      await c.updateDestination(vip(11), dest(DEST_V4(2), { weight: 5 }));
      assert.deepEqual(await order(), [DEST_V4(3), DEST_V4(2), DEST_V4(1)]);
      // Deleted and added again in one batch: it moves to the head.
      await c.execute([
        { op: 'delete-destination', key: vip(11), destination: dest(DEST_V4(1)) },
        { op: 'add-destination', key: vip(11), destination: dest(DEST_V4(1)) },
      ]);
      assert.deepEqual(await order(), [DEST_V4(1), DEST_V4(3), DEST_V4(2)]);
    });

    test('bad weight or thresholds: OUT_OF_RANGE', async () => {
      await c.addService(svc(vip(11)));
      await rejectsWith(c.addDestination(vip(11), dest(DEST_V4(1), { weight: -1 })), 'OUT_OF_RANGE');
      await rejectsWith(
        c.addDestination(vip(11), dest(DEST_V4(1), { upperThreshold: 5, lowerThreshold: 10 })),
        'OUT_OF_RANGE',
      );
      await c.addDestination(vip(11), dest(DEST_V4(1)));
      await rejectsWith(c.updateDestination(vip(11), dest(DEST_V4(1), { weight: -5 })), 'OUT_OF_RANGE');
    });

    test('forwarding methods and tunnel types round-trip', async () => {
      await c.addService(svc(vip(12)));
      const ds = [
        dest(DEST_V4(1), { forward: 'nat' }),
        dest(DEST_V4(2), { forward: 'tunnel', tunnelType: 'ipip' }),
        dest(DEST_V4(3), { forward: 'dr', port: 80 }),
        dest(DEST_V4(4), { forward: 'tunnel', tunnelType: 'gue', tunnelPort: 6080 }),
      ];
      for (const d of ds) await c.addDestination(vip(12), d);
      const got = (await c.listDestinations(vip(12))).map(
        ({ activeConnections, inactiveConnections, persistentConnections, ...rest }) => rest,
      );
      assert.deepEqual(
        got.sort((a, b) => a.address.localeCompare(b.address)),
        ds,
      );
      await rejectsWith(
        c.addDestination(vip(12), dest(DEST_V4(5), { forward: 'tunnel', tunnelType: 'gue' })),
        'INVALID_ARGUMENT',
      );
    });

    test('IPv6 service with IPv6 destinations; mixed families only through a tunnel', async () => {
      await c.addService(svc(vip6(13)));
      await c.addDestination(vip6(13), dest(DEST_V6(1)));
      assert.equal((await c.listDestinations(vip6(13)))[0]?.address, DEST_V6(1));
      await c.addService(svc(vip(13)));
      await rejectsWith(c.addDestination(vip(13), dest(DEST_V6(2))), 'INVALID_ARGUMENT');
      await c.addDestination(vip(13), dest(DEST_V6(2), { forward: 'tunnel', tunnelType: 'ipip' }));
      const [mixed] = await c.listDestinations(vip(13));
      assert.equal(mixed?.family, 'ipv6');
      assert.equal(mixed?.address, DEST_V6(2));
    });

    test('listing destinations of a missing service is empty, not an error', async () => {
      assert.deepEqual(await c.listDestinations(vip(14)), []);
    });

    test('a batch continues past failures and reports each one', async () => {
      const results = await c.execute([
        { op: 'add-service', service: svc(vip(15)) },
        { op: 'add-destination', key: vip(16), destination: dest(DEST_V4(1)) },
        { op: 'add-service', service: svc(vip(15)) },
        { op: 'add-destination', key: vip(15), destination: dest(DEST_V4(1)) },
        { op: 'add-service', service: svc(vip(16), 'nosuchsched') },
        { op: 'add-service', service: svc(vip(17)) },
      ]);
      assert.deepEqual(
        results.map((r) => r?.code),
        [undefined, 'SERVICE_NOT_FOUND', 'SERVICE_EXISTS', undefined, 'SCHEDULER_NOT_FOUND', undefined],
      );
      assert.equal((await c.listDestinations(vip(15))).length, 1);
      assert.ok(await find(vip(17)));
    });

    test('a large batch spans many datagrams and applies completely', async () => {
      const ops = [];
      for (let i = 0; i < 300; i++) {
        const key = vip(100 + (i % 100), 1000 + Math.floor(i / 100));
        ops.push({ op: 'add-service' as const, service: svc(key) });
        for (let j = 1; j <= 5; j++)
          ops.push({ op: 'add-destination' as const, key, destination: dest(DEST_V4(j)) });
      }
      const results = await c.execute(ops);
      assert.equal(results.filter(Boolean).length, 0);
      const table = (await c.getTable()).filter((s) => isSuiteService(s.service.key));
      assert.equal(table.length, 300);
      assert.ok(table.every((s) => s.destinations.length === 5));
    });

    test('a whole-table read hands each service over as it reads it and keeps what the caller says', async () => {
      for (const n of [40, 41]) {
        await c.addService(svc(vip(n)));
        await c.addDestination(vip(n), dest(DEST_V4(1)));
      }
      const seen: ServiceState[] = [];
      const kept = await c.getTable({ stats: true }, (s) => {
        if (!isSuiteService(s.service.key)) return undefined;
        seen.push(s);
        return s.service.key.kind === 'address' &&
          s.service.key.port === 80 &&
          s.service.key.address === `${VIP_PREFIX_V4}0.40`
          ? 'forty'
          : undefined;
      });
      assert.deepEqual(kept, ['forty']);
      assert.equal(seen.length, 2);
      for (const s of seen) {
        assert.equal(s.stats?.connections, 0);
        assert.equal(s.destinations.length, 1);
        assert.equal(s.destinations[0]!.stats?.connections, 0);
      }
      const plain = (await c.getTable()).filter((s) => isSuiteService(s.service.key));
      assert.ok(plain.length === 2 && plain.every((s) => !s.stats && s.destinations.every((d) => !d.stats)));
    });

    test('sysctls read back what was written', async () => {
      const before = await c.getSysctls();
      try {
        await c.setSysctls({ sloppy_tcp: 1, expire_nodest_conn: 1 });
        const after = await c.getSysctls();
        assert.equal(after.sloppy_tcp, 1);
        assert.equal(after.expire_nodest_conn, 1);
        assert.equal(after.conn_reuse_mode, before.conn_reuse_mode);
      } finally {
        await c.setSysctls({ sloppy_tcp: before.sloppy_tcp, expire_nodest_conn: before.expire_nodest_conn });
      }
    });

    test('info reports the IPVS version', async () => {
      const info = await c.info();
      assert.match(info.version, /^\d+\.\d+\.\d+$/);
      assert.ok(info.connectionTableSize > 0);
    });
  });
}
