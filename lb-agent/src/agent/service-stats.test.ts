import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { IpvsClient } from '../ipvs/client.ts';
import { type AddressServiceKey, type IpvsStats, noTraffic, type RealServerState } from '../ipvs/types.ts';
import { type ServiceFigures, ServiceStatsReader } from './service-stats.ts';

const key = (n: number): AddressServiceKey => ({
  kind: 'address',
  family: 'ipv4',
  protocol: 'tcp',
  address: `203.0.113.${n}`,
  port: 80,
});
const stats = (connections: number): IpvsStats => ({ ...noTraffic(), connections });

/** A kernel whose counters and connection counts the test sets; counts each destination read. */
function kernel() {
  const services = new Map<
    string,
    { key: AddressServiceKey; conns: number | undefined; active: number; inactive: number }
  >();
  const reads: string[] = [];
  const client = {
    listServices: async () =>
      [...services.values()].map((s) => ({
        service: {
          key: s.key,
          scheduler: 'rr',
          schedulerFlags: [],
          onePacket: false,
          persistence: undefined,
          persistenceEngine: undefined,
        },
        stats: s.conns === undefined ? undefined : stats(s.conns),
      })),
    listDestinations: async (k: AddressServiceKey): Promise<RealServerState[]> => {
      reads.push(k.address);
      const s = services.get(k.address)!;
      return [
        {
          family: 'ipv4',
          address: '10.0.0.1',
          port: 8080,
          forward: 'nat',
          weight: 1,
          upperThreshold: 0,
          lowerThreshold: 0,
          activeConnections: s.active,
          inactiveConnections: s.inactive,
          persistentConnections: 0,
        },
      ];
    },
  } satisfies Pick<IpvsClient, 'listServices' | 'listDestinations'>;
  const set = (n: number, conns: number | undefined, active = 0, inactive = 0) =>
    services.set(key(n).address, { key: key(n), conns, active, inactive });
  return { client: client as unknown as IpvsClient, set, reads };
}

test('per-service figures: real servers read again only where a connection can have changed', async () => {
  const k = kernel();
  for (let n = 1; n <= 4; n++) k.set(n, 0);
  k.set(99, 0); // not portlb's
  const reader = new ServiceStatsReader();
  const read = async () => {
    k.reads.length = 0;
    const out: ServiceFigures[] = [];
    let pauses = 0;
    const r = await reader.read(
      k.client,
      (key) => !key.address.endsWith('.99'),
      (f) => out.push(f),
      async () => {
        pauses++;
      },
    );
    return { ...r, pauses, active: Object.fromEntries(out.map((f) => [f.key.address, f.activeConnections])) };
  };
  // The first read knows nothing: every service of portlb's is read.
  const first = await read();
  assert.equal(first.destinationReads, 4);
  assert.equal(first.pauses, 5, "a turn for the event loop after each service, portlb's or not");
  // Nothing moved, nobody connected: no real server read at all.
  const quiet = await read();
  assert.equal(quiet.destinationReads, 0);
  assert.equal(quiet.services, 4);
  assert.equal(quiet.active['203.0.113.1'], 0);
  // A new connection on 2 (still SYN_RECV: inactive), one on 3 (established).
  k.set(2, 1, 0, 1);
  k.set(3, 1, 1, 0);
  const moved = await read();
  assert.deepEqual(k.reads.sort(), ['203.0.113.2', '203.0.113.3']);
  assert.equal(moved.active['203.0.113.3'], 1);
  // 2's connection is established now without the counter moving: it was connected, so read.
  k.set(2, 1, 1, 0);
  const established = await read();
  assert.deepEqual(k.reads.sort(), ['203.0.113.2', '203.0.113.3']);
  assert.equal(established.active['203.0.113.2'], 1);
  // Both end; once read idle, they are left alone again.
  k.set(2, 1, 0, 0);
  k.set(3, 1, 0, 0);
  await read();
  assert.equal((await read()).destinationReads, 0);
  // A kernel without counters for a service: that one is always read.
  k.set(4, undefined);
  await read();
  assert.deepEqual(k.reads, ['203.0.113.4']);
  await read();
  assert.deepEqual(k.reads, ['203.0.113.4']);
});
