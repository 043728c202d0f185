import { createRequire } from 'node:module';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { errnoName, PortlbError } from '../errors.ts';
import type { Pause } from '../util/slicer.ts';
import {
  NLM_F_ACK,
  NLM_F_ACK_TLVS,
  NLM_F_CAPPED,
  NLM_F_DUMP,
  NLM_F_DUMP_INTR,
  NLM_F_REQUEST,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_HDRLEN,
  NLMSG_NOOP,
  NLMSG_OVERRUN,
  NLMSGERR_ATTR_MSG,
  type NlMessage,
  NlWriter,
  parseAttrs,
  parseMessages,
  readString,
} from './wire.ts';

export const NETLINK_ROUTE = 0;
export const NETLINK_GENERIC = 16;

export type NetlinkErrorCode =
  | 'NETLINK_ADDON_MISSING'
  | 'NETLINK_SOCKET'
  | 'NETLINK_TIMEOUT'
  | 'NETLINK_PROTOCOL'
  | 'NETLINK_DUMP_INTERRUPTED';

/** A failure of the transport itself (not an answer from the kernel). */
export class NetlinkError extends PortlbError<NetlinkErrorCode> {}

/**
 * The kernel refused one request. `code` is the errno name (EEXIST, ENOENT, ...), stable
 * across kernels; `extAck` is the kernel's explanation where the subsystem gives one.
 */
export class KernelError extends PortlbError<string> {
  readonly errno: number;
  readonly extAck: string | undefined;
  constructor(errno: number, context: string, extAck?: string) {
    const name = errnoName(errno);
    super(name, `${context}: ${name}${extAck ? ` (${extAck})` : ''}`);
    this.errno = errno;
    this.extAck = extAck;
  }
}

interface Addon {
  open(protocol: number, rcvbuf: number): { fd: number; portId: number };
  send(fd: number, data: Buffer): number;
  /** The datagrams queued, up to two (at least one), each padded to 4 bytes; null on timeout. */
  recv(fd: number, timeoutMs: number): Buffer | null;
  close(fd: number): void;
}

let addon: Addon | undefined;
function loadAddon(): Addon {
  if (addon) return addon;
  const require = createRequire(import.meta.url);
  try {
    addon = require('../../native/build/Release/portlb_netlink.node') as Addon;
  } catch (err) {
    throw new NetlinkError(
      'NETLINK_ADDON_MISSING',
      'the netlink addon is not built (lb-agent/native/build/Release/portlb_netlink.node): run `npm install` or `npm rebuild` on Linux',
      { cause: err },
    );
  }
  return addon;
}

/** One request in a batch; `body` writes what follows the netlink header. */
export interface NlRequest {
  type: number;
  /** Extra flags beside NLM_F_REQUEST (and the ACK the socket adds). */
  flags?: number;
  body: (w: NlWriter) => void;
}

/**
 * Many requests, written one by one as the datagrams fill: the IPVS create at 10,000
 * services is 110,000 requests, and an object and closures per request were most of what
 * it allocated.
 */
export interface NlBatch {
  readonly length: number;
  /** Request `index`'s netlink message type. */
  type(index: number): number;
  /** Its flags beside NLM_F_REQUEST (and the ACK the socket adds). */
  flags(index: number): number;
  /** Writes what follows its netlink header. */
  body(w: NlWriter, index: number): void;
}

/** A list of requests as a batch. */
function batchOf(requests: readonly NlRequest[]): NlBatch {
  return {
    length: requests.length,
    type: (i) => requests[i]!.type,
    flags: (i) => requests[i]!.flags ?? 0,
    body: (w, i) => requests[i]!.body(w),
  };
}

export interface SocketOptions {
  /** How long to wait for the kernel's answer; it answers synchronously, so this only catches bugs. */
  timeoutMs?: number;
  /** Upper bound of one datagram; must stay below the socket's send buffer. */
  maxBatchBytes?: number;
  receiveBufferBytes?: number;
}

/** Interpreted NLMSG_ERROR payload: errno 0 is an ACK. */
function parseError(msg: NlMessage): { errno: number; extAck: string | undefined } {
  if (msg.payload.length < 4) throw new NetlinkError('NETLINK_PROTOCOL', 'truncated NLMSG_ERROR');
  const errno = -msg.payload.readInt32LE(0);
  let extAck: string | undefined;
  if (errno !== 0 && msg.flags & NLM_F_ACK_TLVS && msg.payload.length >= 4 + NLMSG_HDRLEN) {
    const origLen = msg.flags & NLM_F_CAPPED ? NLMSG_HDRLEN : msg.payload.readUInt32LE(4);
    const tlvStart = 4 + ((origLen + 3) & ~3);
    if (tlvStart <= msg.payload.length) {
      extAck = readString(parseAttrs(msg.payload, tlvStart)[NLMSGERR_ATTR_MSG]);
    }
  }
  return { errno, extAck };
}

/**
 * A netlink socket speaking one protocol. Requests are batched: many messages per
 * datagram, ACK requested on the last one only. The kernel handles them in order, so
 * that ACK is a barrier, and any earlier failure has already come back as its own error.
 */
export class NetlinkSocket implements Disposable {
  private readonly lib: Addon;
  private fd: number;
  readonly portId: number;
  private seq: number;
  private readonly timeoutMs: number;
  private readonly maxBatchBytes: number;
  /** The dump in progress (the kernel answers EBUSY to a second one): the next waits for it. */
  private dumpDone: Promise<void> = Promise.resolve();
  /**
   * A dump that yields between datagrams (at 10,000 IPVS services or VIP addresses its
   * replies are megabytes) shares the socket meanwhile: a request made then may read the
   * dump's next datagram while it waits for its own answer. Such messages are kept here, by
   * sequence number, for the dump to take first when it resumes.
   */
  private readonly kept = new Map<number, NlMessage[]>();
  /** One writer for every request this socket sends, reset before each (never shared across an await). */
  private writer: NlWriter | undefined;

  constructor(protocol: number, options: SocketOptions = {}) {
    this.lib = loadAddon();
    try {
      const { fd, portId } = this.lib.open(protocol, options.receiveBufferBytes ?? 8 * 1024 * 1024);
      this.fd = fd;
      this.portId = portId;
    } catch (err) {
      throw new NetlinkError('NETLINK_SOCKET', `cannot open netlink socket: ${(err as Error).message}`, {
        cause: err,
      });
    }
    this.seq = Math.floor(Math.random() * 0x7fffffff);
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.maxBatchBytes = options.maxBatchBytes ?? 128 * 1024;
  }

  private nextSeq(): number {
    this.seq = (this.seq + 1) >>> 0;
    if (this.seq === 0) this.seq = 1;
    return this.seq;
  }

  /**
   * The first of `count` consecutive sequence numbers that do not wrap (a datagram's
   * requests are then told apart by arithmetic, without a map); `useSeqs` says how many
   * were taken.
   */
  private firstOfSeqs(count: number): number {
    if (this.seq + count >= 0xffffffff) this.seq = 0;
    return this.seq + 1;
  }

  private useSeqs(first: number, used: number): void {
    this.seq = first + used - 1;
  }

  private freshWriter(): NlWriter {
    this.writer ??= new NlWriter(Math.min(this.maxBatchBytes + 4096, 1 << 20));
    this.writer.reset();
    return this.writer;
  }

  /** The messages of the datagrams queued, up to two (waiting for the first). */
  private receive(): NlMessage[] {
    if (this.fd < 0) throw new NetlinkError('NETLINK_SOCKET', 'netlink socket is closed');
    let datagrams: Buffer | null;
    try {
      datagrams = this.lib.recv(this.fd, this.timeoutMs);
    } catch (err) {
      throw new NetlinkError('NETLINK_SOCKET', `netlink receive failed: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (datagrams === null) {
      throw new NetlinkError('NETLINK_TIMEOUT', `no answer from the kernel within ${this.timeoutMs} ms`);
    }
    return parseMessages(datagrams).filter((m) => m.type !== NLMSG_NOOP);
  }

  /** The received messages for `mine`; a paused dump's are kept for it, anything else is stale. */
  private receiveFor(mine: (seq: number) => boolean): NlMessage[] {
    const out: NlMessage[] = [];
    for (const msg of this.receive()) {
      if (mine(msg.seq)) out.push(msg);
      else this.kept.get(msg.seq)?.push(msg);
    }
    return out;
  }

  private send(data: Buffer): void {
    if (this.fd < 0) throw new NetlinkError('NETLINK_SOCKET', 'netlink socket is closed');
    try {
      this.lib.send(this.fd, data);
    } catch (err) {
      throw new NetlinkError('NETLINK_SOCKET', `netlink send failed: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  /**
   * Sends the requests in as few datagrams as fit, yielding to the event loop between
   * datagrams. Returns one entry per request: undefined when it succeeded, or the kernel's
   * error. `onProgress` sees the count done after each datagram.
   */
  async execute(
    requests: readonly NlRequest[] | NlBatch,
    context: (index: number) => string,
    onProgress?: (done: number) => void,
  ): Promise<(KernelError | undefined)[]> {
    const batch = Array.isArray(requests) ? batchOf(requests as readonly NlRequest[]) : (requests as NlBatch);
    const results: (KernelError | undefined)[] = new Array(batch.length).fill(undefined);
    let index = 0;
    while (index < batch.length) {
      const w = this.freshWriter();
      const firstIndex = index;
      // A datagram closes once past maxBatchBytes, and every message is at least a header.
      const firstSeq = this.firstOfSeqs(Math.ceil(this.maxBatchBytes / NLMSG_HDRLEN) + 1);
      let lastStart = 0;
      do {
        lastStart = w.beginMessage(
          batch.type(index),
          NLM_F_REQUEST | batch.flags(index),
          firstSeq + index - firstIndex,
          0,
        );
        batch.body(w, index);
        w.endMessage(lastStart);
        index++;
      } while (index < batch.length && w.length < this.maxBatchBytes);
      const count = index - firstIndex;
      this.useSeqs(firstSeq, count);
      const lastSeq = firstSeq + count - 1;
      const datagram = w.view();
      // The ACK on the last message is the barrier for the whole datagram.
      datagram.writeUInt16LE(datagram.readUInt16LE(lastStart + 6) | NLM_F_ACK, lastStart + 6);
      this.send(datagram);
      const ours = (seq: number) => seq >= firstSeq && seq <= lastSeq;
      let acked = false;
      while (!acked) {
        for (const msg of this.receiveFor(ours)) {
          if (msg.type !== NLMSG_ERROR) continue;
          const at = firstIndex + msg.seq - firstSeq;
          const { errno, extAck } = parseError(msg);
          if (errno !== 0) results[at] = new KernelError(errno, context(at), extAck);
          if (msg.seq === lastSeq) acked = true;
        }
      }
      onProgress?.(index);
      if (index < batch.length) await yieldToEventLoop();
    }
    return results;
  }

  /** One request; throws the kernel's error; returns the reply messages (if any). */
  request(req: NlRequest, context: string): NlMessage[] {
    const w = this.freshWriter();
    const seq = this.nextSeq();
    const start = w.beginMessage(req.type, NLM_F_REQUEST | NLM_F_ACK | (req.flags ?? 0), seq, 0);
    req.body(w);
    w.endMessage(start);
    this.send(w.view());
    const replies: NlMessage[] = [];
    for (;;) {
      for (const msg of this.receiveFor((s) => s === seq)) {
        if (msg.type === NLMSG_ERROR) {
          const { errno, extAck } = parseError(msg);
          if (errno !== 0) throw new KernelError(errno, context, extAck);
          return replies;
        }
        replies.push(msg);
      }
    }
  }

  /**
   * A dump: all multipart replies until NLMSG_DONE. One dump at a time per socket (the
   * kernel answers EBUSY to a second one): a dump asked for meanwhile waits its turn.
   * Requests and batches may run while a dump pauses (see `kept`).
   */
  async dump(
    req: NlRequest,
    context: string,
    /** Awaited after each datagram (a TimeSlicer's pause): other work runs meanwhile. */
    pause?: Pause,
  ): Promise<NlMessage[]> {
    const before = this.dumpDone;
    let done!: () => void;
    this.dumpDone = new Promise((resolve) => {
      done = resolve;
    });
    await before;
    let seq: number | undefined;
    try {
      const w = this.freshWriter();
      seq = this.nextSeq();
      const start = w.beginMessage(req.type, NLM_F_REQUEST | NLM_F_DUMP | (req.flags ?? 0), seq, 0);
      req.body(w);
      w.endMessage(start);
      this.send(w.view());
      const own = seq;
      const kept: NlMessage[] = [];
      this.kept.set(own, kept);
      const replies: NlMessage[] = [];
      let interrupted = false;
      for (;;) {
        const batch = kept.length ? kept.splice(0) : this.receiveFor((s) => s === own);
        for (const msg of batch) {
          if (msg.flags & NLM_F_DUMP_INTR) interrupted = true;
          if (msg.type === NLMSG_DONE) {
            if (msg.payload.length >= 4) {
              const errno = -msg.payload.readInt32LE(0);
              if (errno > 0) throw new KernelError(errno, context);
            }
            if (interrupted) {
              throw new NetlinkError(
                'NETLINK_DUMP_INTERRUPTED',
                `${context}: the table changed during the dump`,
              );
            }
            return replies;
          }
          if (msg.type === NLMSG_ERROR) {
            const { errno, extAck } = parseError(msg);
            if (errno !== 0) throw new KernelError(errno, context, extAck);
            continue;
          }
          if (msg.type === NLMSG_OVERRUN) throw new NetlinkError('NETLINK_PROTOCOL', `${context}: overrun`);
          replies.push(msg);
        }
        if (pause) await pause();
      }
    } finally {
      if (seq !== undefined) this.kept.delete(seq);
      done();
    }
  }

  close(): void {
    if (this.fd < 0) return;
    const fd = this.fd;
    this.fd = -1;
    this.lib.close(fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
