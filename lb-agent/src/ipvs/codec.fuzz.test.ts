// Property: whatever bytes the kernel (or a bug) hands the decoders, random or truncated
// attribute streams, the outcome is a decoded object or a typed error, never a crash.
import { test } from 'node:test';
import fc from 'fast-check';
import { NLA_HDRLEN, parseAttrList, parseAttrs, parseMessages } from '../netlink/wire.ts';
import { FUZZ_RUNS, typedOutcome } from '../util/fuzz.ts';
import { decodeDestination, decodeInfo, decodeService, decodeStats } from './codec.ts';
import * as K from './constants.ts';

/** An attribute stream: well-formed attributes of random types and payloads, maybe nested. */
const attr = fc.letrec((tie) => ({
  leaf: fc.record({ type: fc.integer({ min: 0, max: 16 }), payload: fc.uint8Array({ maxLength: 24 }) }),
  node: fc.oneof(
    { depthSize: 'small' },
    tie('leaf'),
    fc.record({ type: fc.integer({ min: 0, max: 16 }), children: fc.array(tie('node'), { maxLength: 6 }) }),
  ),
}));

type Node = { type: number; payload?: Uint8Array; children?: Node[] };
function encode(nodes: Node[]): Buffer {
  const parts: Buffer[] = [];
  for (const n of nodes) {
    const payload = n.children ? encode(n.children) : Buffer.from(n.payload ?? []);
    const len = NLA_HDRLEN + payload.length;
    const head = Buffer.alloc(NLA_HDRLEN);
    head.writeUInt16LE(len, 0);
    head.writeUInt16LE(n.type | (n.children ? 0x8000 : 0), 2);
    parts.push(head, payload, Buffer.alloc(((len + 3) & ~3) - len));
  }
  return Buffer.concat(parts);
}

const stream = fc.oneof(
  fc.array(attr.node as fc.Arbitrary<Node>, { maxLength: 12 }).map(encode),
  // Well-formed, then cut anywhere.
  fc.tuple(fc.array(attr.node as fc.Arbitrary<Node>, { maxLength: 12 }), fc.nat()).map(([nodes, cut]) => {
    const b = encode(nodes);
    return b.subarray(0, b.length ? cut % (b.length + 1) : 0);
  }),
  fc.uint8Array({ maxLength: 200 }).map((u) => Buffer.from(u)),
);

test('netlink: random and truncated attribute streams decode or fail with a typed error', () => {
  fc.assert(
    fc.property(stream, (buf) => {
      typedOutcome(() => parseAttrs(buf));
      typedOutcome(() => parseAttrList(buf));
      typedOutcome(() => parseMessages(buf));
    }),
    { numRuns: FUZZ_RUNS },
  );
});

test('IPVS decoders: any service, destination, stats or info payload decodes or fails with a typed error', () => {
  fc.assert(
    fc.property(
      stream,
      fc.boolean(),
      fc.constantFrom('ipv4' as const, 'ipv6' as const),
      (buf, stats, family) => {
        const cmd: (Buffer | undefined)[] = [];
        cmd[K.IPVS_CMD_ATTR_SERVICE] = buf;
        cmd[K.IPVS_CMD_ATTR_DEST] = buf;
        typedOutcome(() => decodeService(cmd, stats));
        typedOutcome(() => decodeDestination(cmd, family, stats));
        typedOutcome(() => decodeStats(buf, stats));
        typedOutcome(() => decodeInfo(parseAttrs(buf)));
      },
    ),
    { numRuns: FUZZ_RUNS },
  );
});
