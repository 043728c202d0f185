// Byte-for-byte checks of the IPVS codec against netlink traffic captured from real
// ipvsadm 1.31 on a 6.1 kernel (test/fixtures/ipvsadm, made by
// scripts/capture-ipvsadm-fixtures.ts). Runs anywhere: no kernel needed.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { GENL_HDRLEN } from '../netlink/genl.ts';
import { AttrIndex, NlWriter, parseAttrs } from '../netlink/wire.ts';
import {
  decodeDestination,
  decodeService,
  decodeStats,
  writeDestination,
  writeService,
  writeServiceKey,
} from './codec.ts';
import * as K from './constants.ts';
import { realServer, virtualService } from './fixtures.ts';
import type { RealServer, RealServerState, ServiceKey, VirtualService } from './types.ts';

const fixtureDir = path.join(import.meta.dirname, '..', '..', '..', 'test', 'fixtures', 'ipvsadm');

interface Fixture {
  command: string;
  datagrams: {
    direction: 'sent' | 'received';
    messages: { type: number; flags: number; payload: string }[];
  }[];
}

function fixture(name: string): Fixture {
  return JSON.parse(readFileSync(path.join(fixtureDir, `${name}.json`), 'utf8')) as Fixture;
}

/** The genl payloads of one direction whose command is `cmd`. */
function payloads(f: Fixture, direction: 'sent' | 'received', cmd: number): Buffer[] {
  return f.datagrams
    .filter((d) => d.direction === direction)
    .flatMap((d) => d.messages)
    .map((m) => Buffer.from(m.payload, 'hex'))
    .filter((p) => p[0] === cmd);
}

/** The raw bytes (header included) of one top-level attribute of a genl payload. */
function rawAttr(payload: Buffer, type: number): Buffer {
  let off = GENL_HDRLEN;
  while (off + 4 <= payload.length) {
    const len = payload.readUInt16LE(off);
    if ((payload.readUInt16LE(off + 2) & 0x3fff) === type) return payload.subarray(off, off + len);
    off += (len + 3) & ~3;
  }
  throw new Error(`attribute ${type} not in payload`);
}

function encoded(write: (w: NlWriter) => void): Buffer {
  const w = new NlWriter();
  write(w);
  return w.finish();
}

const tcp80: ServiceKey = { kind: 'address', family: 'ipv4', protocol: 'tcp', address: '10.1.0.1', port: 80 };
const svc = virtualService;
const real = (address: string, port: number, extra: Partial<RealServer> = {}) =>
  realServer(address, { port, ...extra });

const serviceCases: [string, number, VirtualService][] = [
  ['add-service-tcp-rr', K.IPVS_CMD_NEW_SERVICE, svc(tcp80, 'rr')],
  [
    'add-service-udp-persistent',
    K.IPVS_CMD_NEW_SERVICE,
    svc({ kind: 'address', family: 'ipv4', protocol: 'udp', address: '10.1.0.2', port: 53 }, 'wlc', {
      persistence: { timeout: 300, prefix: 24 },
    }),
  ],
  [
    'add-service-mh-flags',
    K.IPVS_CMD_NEW_SERVICE,
    svc({ kind: 'address', family: 'ipv4', protocol: 'tcp', address: '10.1.0.3', port: 443 }, 'mh', {
      schedulerFlags: ['flag-1', 'flag-2'],
    }),
  ],
  [
    'add-service-sctp-ipv6',
    K.IPVS_CMD_NEW_SERVICE,
    svc({ kind: 'address', family: 'ipv6', protocol: 'sctp', address: 'fd00::10', port: 5000 }, 'sh', {
      persistence: { timeout: 60, prefix: 64 },
    }),
  ],
  ['add-service-fwmark', K.IPVS_CMD_NEW_SERVICE, svc({ kind: 'fwmark', family: 'ipv4', fwmark: 100 }, 'wrr')],
  [
    'add-service-onepacket',
    K.IPVS_CMD_NEW_SERVICE,
    svc({ kind: 'address', family: 'ipv4', protocol: 'udp', address: '10.1.0.4', port: 514 }, 'rr', {
      onePacket: true,
    }),
  ],
  ['edit-service', K.IPVS_CMD_SET_SERVICE, svc(tcp80, 'wrr')],
];

const destCases: [string, number, ServiceKey, RealServer][] = [
  [
    'add-dest-nat',
    K.IPVS_CMD_NEW_DEST,
    tcp80,
    real('10.0.0.5', 8080, { weight: 3, upperThreshold: 100, lowerThreshold: 10 }),
  ],
  ['add-dest-tunnel', K.IPVS_CMD_NEW_DEST, tcp80, real('10.0.0.6', 80, { forward: 'tunnel' })],
  [
    'add-dest-tunnel-gue',
    K.IPVS_CMD_NEW_DEST,
    tcp80,
    real('10.0.0.8', 80, { forward: 'tunnel', tunnelType: 'gue', tunnelPort: 6080 }),
  ],
  ['add-dest-dr', K.IPVS_CMD_NEW_DEST, tcp80, real('10.0.0.7', 80, { forward: 'dr', weight: 2 })],
  [
    'add-dest-ipv6',
    K.IPVS_CMD_NEW_DEST,
    { kind: 'address', family: 'ipv6', protocol: 'sctp', address: 'fd00::10', port: 5000 },
    real('fd00::20', 5000),
  ],
  [
    'add-dest-fwmark',
    K.IPVS_CMD_NEW_DEST,
    { kind: 'fwmark', family: 'ipv4', fwmark: 100 },
    real('10.0.0.9', 0, { forward: 'dr' }),
  ],
  [
    'edit-dest',
    K.IPVS_CMD_SET_DEST,
    tcp80,
    real('10.0.0.5', 8080, { weight: 0, upperThreshold: 0, lowerThreshold: 0 }),
  ],
];

describe('IPVS codec against ipvsadm traffic', () => {
  for (const [name, cmd, service] of serviceCases) {
    test(`service attributes equal ipvsadm's: ${name}`, () => {
      const [theirs] = payloads(fixture(name), 'sent', cmd);
      assert.ok(theirs, `fixture ${name} has no command ${cmd}`);
      assert.equal(
        encoded((w) => writeService(w, service)).toString('hex'),
        rawAttr(theirs, K.IPVS_CMD_ATTR_SERVICE).toString('hex'),
      );
    });
  }

  for (const [name, cmd, key, dest] of destCases) {
    test(`destination attributes equal ipvsadm's: ${name}`, () => {
      const [theirs] = payloads(fixture(name), 'sent', cmd);
      assert.ok(theirs, `fixture ${name} has no command ${cmd}`);
      assert.equal(
        encoded((w) => writeDestination(w, dest, true)).toString('hex'),
        rawAttr(theirs, K.IPVS_CMD_ATTR_DEST).toString('hex'),
      );
      // ipvsadm sends the whole service with every destination command; the key comes first.
      const ourKey = encoded((w) => writeServiceKey(w, key)).subarray(4);
      assert.equal(
        rawAttr(theirs, K.IPVS_CMD_ATTR_SERVICE)
          .subarray(4, 4 + ourKey.length)
          .toString('hex'),
        ourKey.toString('hex'),
      );
    });
  }

  test('a delete sends the key attributes that lead ipvsadm’s', () => {
    const [delDest] = payloads(fixture('del-dest'), 'sent', K.IPVS_CMD_DEL_DEST);
    const ours = encoded((w) =>
      writeDestination(w, { family: 'ipv4', address: '10.0.0.7', port: 80 }, false),
    );
    const theirs = rawAttr(delDest!, K.IPVS_CMD_ATTR_DEST);
    assert.equal(theirs.subarray(4, ours.length).toString('hex'), ours.subarray(4).toString('hex'));
    const [delSvc] = payloads(fixture('del-service'), 'sent', K.IPVS_CMD_DEL_SERVICE);
    const key = encoded((w) =>
      writeServiceKey(w, {
        kind: 'address',
        family: 'ipv4',
        protocol: 'udp',
        address: '10.1.0.4',
        port: 514,
      }),
    );
    assert.equal(
      rawAttr(delSvc!, K.IPVS_CMD_ATTR_SERVICE).subarray(4, key.length).toString('hex'),
      key.subarray(4).toString('hex'),
    );
  });

  test('decodes the kernel’s service dump as ipvsadm saw it (HASHED masked, 16-byte addresses)', () => {
    const replies = payloads(fixture('dump'), 'received', K.IPVS_CMD_NEW_SERVICE);
    const services = replies.map((p) => decodeService(parseAttrs(p, GENL_HDRLEN), false).service);
    const byId = new Map(services.map((s) => [JSON.stringify(s.key), s]));
    const expected = [
      svc(tcp80, 'wrr'),
      serviceCases[1]![2],
      serviceCases[2]![2],
      serviceCases[3]![2],
      serviceCases[4]![2],
      serviceCases[5]![2],
    ];
    assert.equal(services.length, expected.length);
    for (const e of expected) assert.deepEqual(byId.get(JSON.stringify(e.key)), e);
    // The raw dump really carried HASHED: proving the mask is what removed it.
    const rawFlags = parseAttrs(parseAttrs(replies[0]!, GENL_HDRLEN)[K.IPVS_CMD_ATTR_SERVICE]!)[
      K.IPVS_SVC_ATTR_FLAGS
    ]!;
    assert.equal(rawFlags.readUInt32LE(0) & K.IP_VS_SVC_F_HASHED, K.IP_VS_SVC_F_HASHED);
    assert.equal(rawFlags.readUInt32LE(4), 0xffffffff);
  });

  test('decodes the kernel’s destination dumps', () => {
    const replies = payloads(fixture('dump'), 'received', K.IPVS_CMD_NEW_DEST);
    const dests = replies.map((p) => decodeDestination(parseAttrs(p, GENL_HDRLEN), 'ipv4', false));
    const index = new AttrIndex(8);
    assert.deepEqual(
      replies.map((p) => decodeDestination(index.parse(p, GENL_HDRLEN), 'ipv4', true)),
      replies.map((p) => decodeDestination(parseAttrs(p, GENL_HDRLEN), 'ipv4', true)),
      'from an index as from views, stats too',
    );
    const conns = { activeConnections: 0, inactiveConnections: 0, persistentConnections: 0 };
    const expected: RealServerState[] = [
      { ...real('10.0.0.5', 8080, { weight: 0 }), ...conns },
      { ...real('10.0.0.6', 80, { forward: 'tunnel', tunnelType: 'ipip' }), ...conns },
      { ...real('10.0.0.8', 80, { forward: 'tunnel', tunnelType: 'gue', tunnelPort: 6080 }), ...conns },
      { ...real('10.0.0.7', 80, { forward: 'dr', weight: 2 }), ...conns },
      { ...real('fd00::20', 5000), ...conns },
      { ...real('10.0.0.9', 0, { forward: 'dr' }), ...conns },
    ];
    const key = (d: RealServerState) => `${d.address}:${d.port}`;
    assert.deepEqual(
      [...dests].sort((a, b) => key(a).localeCompare(key(b))),
      [...expected].sort((a, b) => key(a).localeCompare(key(b))),
    );
  });

  test('decodes stats in both layouts (STATS and STATS64)', () => {
    const [reply] = payloads(fixture('dump-stats'), 'received', K.IPVS_CMD_NEW_SERVICE);
    const svcAttrs = parseAttrs(parseAttrs(reply!, GENL_HDRLEN)[K.IPVS_CMD_ATTR_SERVICE]!);
    assert.ok(svcAttrs[K.IPVS_SVC_ATTR_STATS64], 'a 6.1 kernel sends STATS64');
    const decoded = decodeService(parseAttrs(reply!, GENL_HDRLEN), true);
    // As the client decodes it: from an index of the reply, the nests parsed in place.
    assert.deepEqual(decodeService(new AttrIndex(8).parse(reply!, GENL_HDRLEN), true), decoded);
    assert.deepEqual(Object.keys(decoded.stats!).sort(), [
      'bpsIn',
      'bpsOut',
      'bytesIn',
      'bytesOut',
      'connections',
      'cps',
      'packetsIn',
      'packetsOut',
      'ppsIn',
      'ppsOut',
    ]);
    // A synthetic 32-bit layout with known values decodes field by field.
    const w = new NlWriter();
    w.nest(K.IPVS_SVC_ATTR_STATS, () => {
      w.attrU32(K.IPVS_STATS_ATTR_CONNS, 7)
        .attrU32(K.IPVS_STATS_ATTR_INPKTS, 11)
        .attrU32(K.IPVS_STATS_ATTR_OUTPKTS, 13);
      w.bytes(encoded((x) => x.attrBytes(K.IPVS_STATS_ATTR_INBYTES, Buffer.from([0, 1, 0, 0, 0, 0, 0, 0]))));
    });
    const stats = decodeStats(parseAttrs(w.finish())[K.IPVS_SVC_ATTR_STATS], false)!;
    assert.equal(stats.connections, 7);
    assert.equal(stats.packetsIn, 11);
    assert.equal(stats.packetsOut, 13);
    assert.equal(stats.bytesIn, 256);
  });
});
