// A dump of one service's real servers on the real kernel: its replies and its end come in
// one receive (two system calls per dump, which a whole-table read makes once per service).
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { after, test } from 'node:test';
import { writeServiceKey } from '../../lb-agent/src/ipvs/codec.ts';
import * as K from '../../lb-agent/src/ipvs/constants.ts';
import { addressKey, realServer, virtualService } from '../../lb-agent/src/ipvs/fixtures.ts';
import { NetlinkIpvsClient } from '../../lb-agent/src/ipvs/netlink-client.ts';
import { resolveFamily, writeGenlHeader } from '../../lb-agent/src/netlink/genl.ts';
import { NETLINK_GENERIC, NetlinkSocket } from '../../lb-agent/src/netlink/socket.ts';
import {
  NLM_F_DUMP,
  NLM_F_REQUEST,
  NLMSG_DONE,
  NlWriter,
  parseMessages,
} from '../../lb-agent/src/netlink/wire.ts';
import { ensureDummy, requireKernelHarness } from '../harness/kernel.ts';

requireKernelHarness();

const addon = createRequire(import.meta.url)('../../lb-agent/native/build/Release/portlb_netlink.node') as {
  open(protocol: number, rcvbuf: number): { fd: number };
  send(fd: number, data: Buffer): number;
  recv(fd: number, timeoutMs: number): Buffer | null;
  close(fd: number): void;
};

const key = addressKey('10.248.0.1');
const client = NetlinkIpvsClient.open();
after(async () => {
  await client.deleteService(key).catch(() => {});
  client.close();
});

test("a service's real servers and the dump's end come in one receive", async () => {
  ensureDummy('pldump0', ['10.248.1.254/24']);
  await client.addService(virtualService(key));
  for (let i = 1; i <= 10; i++) await client.addDestination(key, realServer(`10.248.1.${i}`));
  const family = resolveFamily(new NetlinkSocket(NETLINK_GENERIC), K.IPVS_GENL_NAME);
  assert.ok(family);
  const { fd } = addon.open(NETLINK_GENERIC, 1 << 20);
  /** One dump: the count of messages each receive brought, until the end. */
  const dump = (seq: number): number[] => {
    const w = new NlWriter(256);
    const m = w.beginMessage(family, NLM_F_REQUEST | NLM_F_DUMP, seq);
    writeGenlHeader(w, K.IPVS_CMD_GET_DEST, K.IPVS_GENL_VERSION);
    writeServiceKey(w, key);
    w.endMessage(m);
    addon.send(fd, w.finish());
    const counts: number[] = [];
    for (let done = false; !done; ) {
      const got = parseMessages(addon.recv(fd, 1000)!);
      counts.push(got.length);
      done = got.at(-1)?.type === NLMSG_DONE;
    }
    return counts;
  };
  try {
    // A socket's first dump brings its end in a receive of its own (as this 6.1 kernel
    // does); every later one in the same receive as the replies.
    assert.deepEqual(dump(1), [10, 1]);
    for (let seq = 2; seq <= 4; seq++)
      assert.deepEqual(dump(seq), [11], 'ten real servers and the end, in one receive');
    assert.equal(addon.recv(fd, 10), null, 'nothing left');
  } finally {
    addon.close(fd);
  }
  // And the client reads them.
  assert.equal((await client.listDestinations(key)).length, 10);
});
