// The netlink socket against the real kernel of the host (rtnetlink, read-only requests
// about links): what the addon hands over per receive, and how a batch's answers are
// matched to its requests.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, test } from 'node:test';
import { RTM_GETLINK } from '../../lb-agent/src/netlink/rtnetlink.ts';
import { NETLINK_ROUTE, NetlinkSocket, type NlBatch } from '../../lb-agent/src/netlink/socket.ts';
import {
  NLM_F_ACK,
  NLM_F_REQUEST,
  NLMSG_ERROR,
  type NlMessage,
  NlWriter,
  parseMessages,
} from '../../lb-agent/src/netlink/wire.ts';

interface Addon {
  open(protocol: number, rcvbuf: number): { fd: number; portId: number };
  send(fd: number, data: Buffer): number;
  recv(fd: number, timeoutMs: number): Buffer | null;
  close(fd: number): void;
}
const addon = createRequire(import.meta.url)(
  '../../lb-agent/native/build/Release/portlb_netlink.node',
) as Addon;

/** RTM_GETLINK of one interface index (1 is lo; a huge one does not exist: ENODEV). */
function getLink(w: NlWriter, index: number): void {
  w.u8(0).u8(0).u16(0).i32(index).u32(0).u32(0);
}

describe('netlink socket (host kernel, rtnetlink)', () => {
  test('one receive takes two queued datagrams at once, in order, each padded to 4 bytes', () => {
    const { fd } = addon.open(NETLINK_ROUTE, 1 << 20);
    const answer = (m: NlMessage) => [
      m.seq,
      m.type !== NLMSG_ERROR ? 'reply' : m.payload.readInt32LE(0) === 0 ? 'ack' : -m.payload.readInt32LE(0),
    ];
    try {
      for (const seq of [11, 12, 13]) {
        const w = new NlWriter(64);
        const m = w.beginMessage(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
        getLink(w, seq === 12 ? 0x7ffffff0 : 1);
        w.endMessage(m);
        addon.send(fd, w.finish());
      }
      // Five datagrams queued (lo's link, its ACK, an error, lo's link, its ACK): two per
      // read, in order.
      const reads = [addon.recv(fd, 1000), addon.recv(fd, 1000), addon.recv(fd, 1000)];
      for (const r of reads) assert.equal(r!.length % 4, 0);
      assert.deepEqual(
        reads.map((r) => parseMessages(r!).map(answer)),
        [
          [
            [11, 'reply'],
            [11, 'ack'],
          ],
          [
            [12, 19], // ENODEV
            [13, 'reply'],
          ],
          [[13, 'ack']],
        ],
      );
      // Nothing left: a receive now times out (null) instead of blocking.
      assert.equal(addon.recv(fd, 10), null);
    } finally {
      addon.close(fd);
    }
  });

  test('a batch over many datagrams gets each error at its own request, also where sequence numbers wrap', async () => {
    const missing = (i: number) => i % 7 === 3;
    const batch: NlBatch = {
      length: 600,
      type: () => RTM_GETLINK,
      flags: () => 0,
      body: (w, i) => getLink(w, missing(i) ? 0x7fff0000 + i : 1),
    };
    // Small datagrams: dozens of them, each with its own barrier.
    using socket = new NetlinkSocket(NETLINK_ROUTE, { maxBatchBytes: 256 });
    for (const start of [1, 0xffffffff - 250]) {
      (socket as unknown as { seq: number }).seq = start;
      const progress: number[] = [];
      const results = await socket.execute(
        batch,
        (i) => `request ${i}`,
        (done) => progress.push(done),
      );
      assert.equal(results.length, 600);
      results.forEach((err, i) => {
        if (missing(i)) assert.equal(err?.code, 'ENODEV', `request ${i} (start ${start})`);
        else assert.equal(err, undefined, `request ${i} (start ${start})`);
      });
      assert.ok(progress.length > 20, `${progress.length} datagrams`);
      assert.equal(progress.at(-1), 600);
      // And the socket still answers single requests afterwards.
      const [lo] = socket.request({ type: RTM_GETLINK, body: (w) => getLink(w, 1) }, 'get lo');
      assert.equal(lo?.payload.readInt32LE(4), 1);
    }
  });
});
