import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  AttrIndex,
  NetlinkMalformed,
  NLA_F_NESTED,
  NlWriter,
  parseAttrList,
  parseAttrs,
  parseMessages,
  readBe16,
  readString,
  readU16,
  readU32,
} from './wire.ts';

describe('netlink wire format', () => {
  test('attributes are padded to 4 bytes and lengths exclude the padding', () => {
    const w = new NlWriter(8);
    w.attrString(1, 'rr').attrU16(2, 0x1234).attrBe16(3, 80).attrU32(4, 0xdeadbeef);
    const b = w.finish();
    // "rr\0" -> len 7, padded to 8; u16 -> len 6, padded to 8.
    assert.equal(b.toString('hex'), '070001007272000006000200341200000600030000500000080004' + '00efbeadde');
    const a = parseAttrs(b);
    assert.equal(readString(a[1]), 'rr');
    assert.equal(readU16(a[2]), 0x1234);
    assert.equal(readBe16(a[3]), 80);
    assert.equal(readU32(a[4]), 0xdeadbeef);
  });

  test('an attribute index reads what parseAttrs reads, without a view per attribute', () => {
    const w = new NlWriter(8);
    w.attrString(1, 'rr').attrU16(2, 0x1234).attrBe16(3, 80).attrU32(4, 0xdeadbeef).attrU32(4, 7);
    w.nest(5, (x) => x.attrU16(1, 9)).attrU32(40, 1);
    const b = w.finish();
    const views = parseAttrs(b);
    const a = new AttrIndex(8).parse(b);
    assert.equal(a.u16(2), readU16(views[2]));
    assert.equal(a.be16(3), readBe16(views[3]));
    // The last occurrence wins, as in the kernel's parser; the nest flag is masked off.
    assert.equal(a.u32(4), 7);
    assert.equal(readU32(views[4]), 7);
    assert.deepEqual(a.bytes(5), views[5]);
    assert.equal(a.length(1), 3);
    // Absent, too short for the read, or beyond the index's size: undefined.
    assert.equal(a.u32(6), undefined);
    assert.equal(a.u32(2), undefined);
    assert.equal(a.has(40), false);
    // Reused: the next parse forgets the last one's attributes.
    a.parse(new NlWriter(8).attrU16(2, 1).finish());
    assert.equal(a.has(4), false);
    assert.equal(a.u16(2), 1);
    // A length past the end is malformed, as for parseAttrs.
    const bad = Buffer.from(b);
    bad.writeUInt16LE(200, 0);
    assert.throws(() => a.parse(bad), NetlinkMalformed);
    assert.throws(() => parseAttrs(bad), NetlinkMalformed);
  });

  test('an attribute index reads u64 counters (as Number(bigint) would), big-endian u32s and strings in place', () => {
    const u64 = (v: bigint) => {
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(v);
      return b;
    };
    const big = 0x1234_5678_9abc_def1n; // above 2^53: rounded
    const w = new NlWriter(8);
    w.attrBytes(1, u64(big))
      .attrBytes(2, u64(0xffff_ffffn))
      .attrBytes(3, u64(2n ** 53n + 1n));
    w.attrString(4, 'wrr')
      .attrBytes(5, Buffer.from('mhmh'))
      .attrBytes(6, Buffer.from([0xff, 0xff, 0xff, 0]));
    w.attrU16(7, 1).attrU16(8, 0x6162); // "ba" with no NUL: the string ends at the value's end
    const a = new AttrIndex(10).parse(w.finish());
    assert.equal(a.u64(1), Number(big));
    assert.equal(a.u64(2), 0xffff_ffff);
    assert.equal(a.u64(3), Number(2n ** 53n + 1n));
    assert.equal(a.u64(7), undefined, 'too short');
    assert.equal(a.string(4), 'wrr');
    assert.equal(a.string(5), 'mhmh', 'unterminated, no padding: a NUL in the next header is not its end');
    assert.equal(a.string(8), 'ba', 'the NUL of the padding after it is not read as its own');
    assert.equal(a.string(9), undefined);
    assert.equal(a.be32(6), 0xffffff00);
  });

  test('nested attributes carry NLA_F_NESTED and their total length', () => {
    const w = new NlWriter();
    w.nest(1, (x) => x.attrU32(1, 7).nest(2, (y) => y.attrU16(3, 9)));
    const b = w.finish();
    assert.equal(b.readUInt16LE(2), 1 | NLA_F_NESTED);
    assert.equal(b.readUInt16LE(0), b.length);
    const outer = parseAttrs(parseAttrs(b)[1]!);
    assert.equal(readU32(outer[1]), 7);
    assert.equal(readU16(parseAttrs(outer[2]!)[3]), 9);
  });

  test('messages get their length patched and split back apart', () => {
    const w = new NlWriter(16);
    for (let i = 0; i < 3; i++) {
      const start = w.beginMessage(0x1c, 1, 100 + i, 0);
      w.u8(i).u8(1).u16(0).attrU32(1, i);
      w.endMessage(start);
    }
    const msgs = parseMessages(w.finish());
    assert.deepEqual(
      msgs.map((m) => [m.type, m.flags, m.seq, m.payload.length]),
      [
        [0x1c, 1, 100, 12],
        [0x1c, 1, 101, 12],
        [0x1c, 1, 102, 12],
      ],
    );
  });

  test('malformed input throws instead of guessing', () => {
    assert.throws(() => parseAttrs(Buffer.from([0x20, 0, 1, 0, 0, 0, 0, 0])), /malformed netlink attribute/);
    assert.throws(
      () => parseMessages(Buffer.from('ff00000000000000000000000000000000', 'hex')),
      /malformed netlink message/,
    );
  });

  test('repeated attributes: parseAttrs keeps the last, parseAttrList keeps all', () => {
    const b = new NlWriter().attrU32(1, 1).attrU32(1, 2).finish();
    assert.equal(readU32(parseAttrs(b)[1]), 2);
    assert.deepEqual(
      parseAttrList(b).map((a) => readU32(a.value)),
      [1, 2],
    );
  });

  test('a reset writer writes the same bytes as a new one (strings keep their NUL, padding is zero)', () => {
    const write = (w: NlWriter) => {
      const m = w.beginMessage(30, 1, 7);
      const n = w.beginNest(1);
      w.attrString(2, 'mh').attrU8(3, 1);
      w.endNest(n);
      w.endMessage(m);
    };
    const fresh = new NlWriter(64);
    write(fresh);
    const reused = new NlWriter(64);
    reused.beginMessage(0xffff, 0xffff, 0xffffffff);
    reused.attrString(9, 'a longer string than the next one').attrU32(8, 0xffffffff);
    reused.reset();
    write(reused);
    assert.deepEqual(reused.view(), fresh.finish());
    // The nest without a closure is the nest with one.
    const closure = new NlWriter(64);
    const m = closure.beginMessage(30, 1, 7);
    closure.nest(1, (x) => x.attrString(2, 'mh').attrU8(3, 1));
    closure.endMessage(m);
    assert.deepEqual(closure.finish(), fresh.finish());
  });
});
