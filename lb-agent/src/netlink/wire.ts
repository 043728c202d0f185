import { PortlbError } from '../errors.ts';
// Netlink framing: message headers and type-length-value attributes, in host byte order
// (netlink's own fields are native-endian; the agent only runs on little-endian Linux).
// Protocol payloads (IPVS, rtnetlink) build on these two primitives.

export const NLMSG_HDRLEN = 16;
export const NLA_HDRLEN = 4;
export const NLA_F_NESTED = 0x8000;
export const NLA_F_NET_BYTEORDER = 0x4000;
const NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xffff;

// linux/netlink.h
export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLMSG_OVERRUN = 4;
export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_DUMP_INTR = 0x10;
export const NLM_F_ROOT = 0x100;
export const NLM_F_MATCH = 0x200;
export const NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH;
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
// Flags of an NLMSG_ERROR message.
export const NLM_F_CAPPED = 0x100;
export const NLM_F_ACK_TLVS = 0x200;
export const NLMSGERR_ATTR_MSG = 1;

export const align4 = (n: number): number => (n + 3) & ~3;

/** Bytes that are not well-formed netlink (a truncated or corrupt message or attribute). */
export class NetlinkMalformed extends PortlbError<'NETLINK_MALFORMED'> {}

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error('portlb netlink codec supports little-endian hosts only');
}

/**
 * Appends netlink messages and attributes to one growing buffer. Lengths are patched in
 * when a message or a nested attribute is closed, so encoding allocates nothing per field.
 */
export class NlWriter {
  private buf: Buffer;
  private pos = 0;

  constructor(initialSize = 4096) {
    this.buf = Buffer.alloc(initialSize);
  }

  get length(): number {
    return this.pos;
  }

  private reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.alloc(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  // The buffer is zeroed at allocation and only ever written forward, so padding and
  // in-place attributes need no clearing (tiny Buffer.fill calls dominated encoding time).
  private pad(): void {
    const aligned = align4(this.pos);
    this.reserve(aligned - this.pos);
    this.pos = aligned;
  }

  /** Opens a message; returns its start offset for endMessage. */
  beginMessage(type: number, flags: number, seq: number, pid = 0): number {
    this.pad();
    const start = this.pos;
    this.reserve(NLMSG_HDRLEN);
    this.buf.writeUInt32LE(0, start);
    this.buf.writeUInt16LE(type, start + 4);
    this.buf.writeUInt16LE(flags, start + 6);
    this.buf.writeUInt32LE(seq >>> 0, start + 8);
    this.buf.writeUInt32LE(pid >>> 0, start + 12);
    this.pos += NLMSG_HDRLEN;
    return start;
  }

  endMessage(start: number): void {
    this.pad();
    this.buf.writeUInt32LE(this.pos - start, start);
  }

  u8(v: number): this {
    this.reserve(1);
    this.buf.writeUInt8(v, this.pos);
    this.pos += 1;
    return this;
  }

  u16(v: number): this {
    this.reserve(2);
    this.buf.writeUInt16LE(v, this.pos);
    this.pos += 2;
    return this;
  }

  u32(v: number): this {
    this.reserve(4);
    this.buf.writeUInt32LE(v >>> 0, this.pos);
    this.pos += 4;
    return this;
  }

  i32(v: number): this {
    this.reserve(4);
    this.buf.writeInt32LE(v, this.pos);
    this.pos += 4;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.reserve(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  private attrHeader(type: number, payloadLength: number): void {
    this.pad();
    this.reserve(NLA_HDRLEN + payloadLength);
    this.buf.writeUInt16LE(NLA_HDRLEN + payloadLength, this.pos);
    this.buf.writeUInt16LE(type, this.pos + 2);
    this.pos += NLA_HDRLEN;
  }

  attrU8(type: number, v: number): this {
    this.attrHeader(type, 1);
    return this.u8(v);
  }

  attrU16(type: number, v: number): this {
    this.attrHeader(type, 2);
    return this.u16(v);
  }

  /** A 16-bit value in network byte order (ports). */
  attrBe16(type: number, v: number): this {
    this.attrHeader(type, 2);
    this.buf.writeUInt16BE(v, this.pos);
    this.pos += 2;
    return this;
  }

  attrU32(type: number, v: number): this {
    this.attrHeader(type, 4);
    return this.u32(v);
  }

  /** A 32-bit value in network byte order (IPv4 netmasks). */
  attrBe32(type: number, v: number): this {
    this.attrHeader(type, 4);
    this.buf.writeUInt32BE(v >>> 0, this.pos);
    this.pos += 4;
    return this;
  }

  /** Two u32s, as struct ip_vs_flags {flags, mask} and similar pairs. */
  attrU32Pair(type: number, a: number, b: number): this {
    this.attrHeader(type, 8);
    return this.u32(a).u32(b);
  }

  attrBytes(type: number, b: Uint8Array): this {
    this.attrHeader(type, b.length);
    return this.bytes(b);
  }

  /** A NUL-terminated string, as the kernel's NLA_NUL_STRING / NLA_STRING policies expect. */
  attrString(type: number, s: string): this {
    let ascii = true;
    for (let i = 0; i < s.length && ascii; i++) ascii = s.charCodeAt(i) < 0x80;
    if (!ascii) return this.attrBytes(type, Buffer.from(`${s}\0`, 'utf8'));
    this.attrHeader(type, s.length + 1);
    for (let i = 0; i < s.length; i++) this.buf[this.pos + i] = s.charCodeAt(i);
    this.pos += s.length + 1;
    return this;
  }

  /** An attribute of `length` bytes that `fill` writes in place (no intermediate buffer). */
  attrInPlace(type: number, length: number, fill: (buf: Buffer, offset: number) => void): this {
    const at = this.attrSpace(type, length);
    fill(this.buf, at);
    return this;
  }

  /**
   * Opens a nested attribute; returns its start for endNest. The same as nest() without a
   * closure (the IPVS create writes 110,000 pairs of nests at 10,000 services).
   */
  beginNest(type: number): number {
    this.pad();
    const start = this.pos;
    this.attrHeader(type | NLA_F_NESTED, 0);
    return start;
  }

  endNest(start: number): this {
    this.buf.writeUInt16LE(this.pos - start, start);
    return this;
  }

  /**
   * An attribute of `length` zeroed bytes; returns their offset in `buffer`, where the
   * caller writes the value before the next write (attrInPlace without a closure).
   */
  attrSpace(type: number, length: number): number {
    this.attrHeader(type, length);
    const at = this.pos;
    this.pos += length;
    return at;
  }

  /** The buffer being written (see attrSpace); it changes when it grows. */
  get buffer(): Buffer {
    return this.buf;
  }

  /** A nested attribute whose children `fill` writes. */
  nest(type: number, fill: (w: this) => void): this {
    const start = this.beginNest(type);
    fill(this);
    return this.endNest(start);
  }

  /** The bytes written so far, as an independent copy. */
  finish(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.pos));
  }

  /** The bytes written so far, as a view: valid until the next reset or write. */
  view(): Buffer {
    return this.buf.subarray(0, this.pos);
  }

  /** Starts over in the same buffer, zeroed again (padding and string ends rely on it). */
  reset(): void {
    this.buf.fill(0, 0, this.pos);
    this.pos = 0;
  }
}

/**
 * One received netlink message: header fields, and where its payload lies in the datagram
 * (`data` from `start` to `end`). `payload` is a view of it, made on first use; the dumps'
 * decoders read in place instead (a view per message was a tenth of what the agent
 * allocated while resyncing at 10,000 services).
 */
export class NlMessage {
  readonly type: number;
  readonly flags: number;
  readonly seq: number;
  readonly pid: number;
  readonly data: Buffer;
  readonly start: number;
  readonly end: number;
  private view: Buffer | undefined = undefined;

  constructor(
    type: number,
    flags: number,
    seq: number,
    pid: number,
    data: Buffer,
    start: number,
    end: number,
  ) {
    this.type = type;
    this.flags = flags;
    this.seq = seq;
    this.pid = pid;
    this.data = data;
    this.start = start;
    this.end = end;
  }

  get payload(): Buffer {
    this.view ??= this.data.subarray(this.start, this.end);
    return this.view;
  }
}

/** Splits a datagram into messages. Truncated trailing bytes are an error: never guess. */
export function parseMessages(datagram: Buffer): NlMessage[] {
  const out: NlMessage[] = [];
  let off = 0;
  while (off + NLMSG_HDRLEN <= datagram.length) {
    const len = datagram.readUInt32LE(off);
    if (len < NLMSG_HDRLEN || off + len > datagram.length) {
      throw new NetlinkMalformed(
        'NETLINK_MALFORMED',
        `malformed netlink message: length ${len} at offset ${off} of ${datagram.length}`,
      );
    }
    out.push(
      new NlMessage(
        datagram.readUInt16LE(off + 4),
        datagram.readUInt16LE(off + 6),
        datagram.readUInt32LE(off + 8),
        datagram.readUInt32LE(off + 12),
        datagram,
        off + NLMSG_HDRLEN,
        off + len,
      ),
    );
    off += align4(len);
  }
  return out;
}

/**
 * Attributes of a payload, indexed by type (flags masked off). A repeated type keeps the
 * last occurrence, as the kernel's own parser does.
 */
export type Attrs = (Buffer | undefined)[];

/**
 * Walks the attributes of a payload: `visit` gets each one's type (flags masked off), the
 * offset of its value and the value's length. A length that does not fit is malformed.
 */
function forEachAttr(
  buf: Buffer,
  start: number,
  end: number,
  visit: (type: number, at: number, length: number) => void,
): void {
  let off = start;
  while (off + NLA_HDRLEN <= end) {
    const len = buf.readUInt16LE(off);
    if (len < NLA_HDRLEN || off + len > end) {
      throw new NetlinkMalformed(
        'NETLINK_MALFORMED',
        `malformed netlink attribute: length ${len} at offset ${off}`,
      );
    }
    visit(buf.readUInt16LE(off + 2) & NLA_TYPE_MASK, off + NLA_HDRLEN, len - NLA_HDRLEN);
    off += align4(len);
  }
}

export function parseAttrs(buf: Buffer, start = 0, end = buf.length): Attrs {
  const attrs: Attrs = [];
  forEachAttr(buf, start, end, (type, at, length) => {
    attrs[type] = buf.subarray(at, at + length);
  });
  return attrs;
}

/**
 * Where each attribute of a payload is, by type, without a Buffer view for each: the
 * resync's read-back decodes 100,000 real servers of about 15 attributes each at 10,000
 * services, and a view per attribute was most of what it allocated. Same rules as
 * parseAttrs (flags masked off, the last occurrence wins, a malformed length throws);
 * types at or above `size` are skipped. One index is reused: read it before the next parse.
 */
export class AttrIndex {
  private buf: Buffer = Buffer.alloc(0);
  private readonly offsets: Int32Array;
  private readonly lengths: Int32Array;

  constructor(size: number) {
    this.offsets = new Int32Array(size).fill(-1);
    this.lengths = new Int32Array(size);
  }

  parse(buf: Buffer, start = 0, end = buf.length): this {
    this.buf = buf;
    this.offsets.fill(-1);
    forEachAttr(buf, start, end, this.record);
    return this;
  }

  private readonly record = (type: number, at: number, length: number): void => {
    if (type >= this.offsets.length) return;
    this.offsets[type] = at;
    this.lengths[type] = length;
  };

  has(type: number): boolean {
    return this.offsets[type]! >= 0;
  }

  /** The value's length (-1 when absent). */
  length(type: number): number {
    return this.offsets[type]! >= 0 ? this.lengths[type]! : -1;
  }

  /** Where the value starts in the parsed buffer (only for a present attribute). */
  offset(type: number): number {
    return this.offsets[type]!;
  }

  get buffer(): Buffer {
    return this.buf;
  }

  u8(type: number): number | undefined {
    return this.length(type) >= 1 ? this.buf[this.offsets[type]!] : undefined;
  }
  u16(type: number): number | undefined {
    return this.length(type) >= 2 ? this.buf.readUInt16LE(this.offsets[type]!) : undefined;
  }
  be16(type: number): number | undefined {
    return this.length(type) >= 2 ? this.buf.readUInt16BE(this.offsets[type]!) : undefined;
  }
  u32(type: number): number | undefined {
    return this.length(type) >= 4 ? this.buf.readUInt32LE(this.offsets[type]!) : undefined;
  }
  i32(type: number): number | undefined {
    return this.length(type) >= 4 ? this.buf.readInt32LE(this.offsets[type]!) : undefined;
  }
  be32(type: number): number | undefined {
    return this.length(type) >= 4 ? this.buf.readUInt32BE(this.offsets[type]!) : undefined;
  }
  /**
   * A u64 as a number, without a BigInt: rounded to the nearest double above 2^53 as
   * Number(bigint) would be (counters: exact for 285 years of 1 Mpps).
   */
  u64(type: number): number | undefined {
    if (this.length(type) < 8) return undefined;
    const at = this.offsets[type]!;
    return this.buf.readUInt32LE(at + 4) * 0x1_0000_0000 + this.buf.readUInt32LE(at);
  }
  /** A NUL-terminated (or unterminated) string value, as readString. */
  string(type: number): string | undefined {
    const at = this.offsets[type]!;
    if (at < 0) return undefined;
    const end = at + this.lengths[type]!;
    let stop = at;
    while (stop < end && this.buf[stop] !== 0) stop++;
    return this.buf.toString('utf8', at, stop);
  }
  /** A view of the value (for the rare attribute that needs one: a nest, an IPv6 address). */
  bytes(type: number): Buffer | undefined {
    const at = this.offsets[type]!;
    return at >= 0 ? this.buf.subarray(at, at + this.lengths[type]!) : undefined;
  }
}

/** Every occurrence of each attribute, in order (for lists such as repeated nests). */
export function parseAttrList(buf: Buffer): { type: number; value: Buffer }[] {
  const out: { type: number; value: Buffer }[] = [];
  forEachAttr(buf, 0, buf.length, (type, at, length) => {
    out.push({ type, value: buf.subarray(at, at + length) });
  });
  return out;
}

export const readU8 = (b: Buffer | undefined): number | undefined =>
  b && b.length >= 1 ? b.readUInt8(0) : undefined;
export const readU16 = (b: Buffer | undefined): number | undefined =>
  b && b.length >= 2 ? b.readUInt16LE(0) : undefined;
export const readBe16 = (b: Buffer | undefined): number | undefined =>
  b && b.length >= 2 ? b.readUInt16BE(0) : undefined;
export const readU32 = (b: Buffer | undefined): number | undefined =>
  b && b.length >= 4 ? b.readUInt32LE(0) : undefined;
export const readU64 = (b: Buffer | undefined): bigint | undefined =>
  b && b.length >= 8 ? b.readBigUInt64LE(0) : undefined;

/** A NUL-terminated (or unterminated) string attribute. */
export function readString(b: Buffer | undefined): string | undefined {
  if (!b) return undefined;
  const nul = b.indexOf(0);
  return b.toString('utf8', 0, nul === -1 ? b.length : nul);
}
