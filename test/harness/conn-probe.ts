// Opens TCP connections to a VIP from one source address and many source ports, in
// batches, without waiting for them: each leaves one IPVS connection entry (SYN_SENT)
// naming the destination the scheduler chose for that (address, port). The caller reads
// the choices from /proc/net/ip_vs_conn.
//   node test/harness/conn-probe.ts --vip V --port P --source S --from-port N --count C
import { connect } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    vip: { type: 'string' },
    port: { type: 'string', default: '80' },
    source: { type: 'string' },
    'from-port': { type: 'string', default: '20000' },
    count: { type: 'string', default: '1000' },
    batch: { type: 'string', default: '500' },
  },
});
const first = Number(values['from-port']);
const count = Number(values.count);
const batch = Number(values.batch);
for (let at = 0; at < count; at += batch) {
  const sockets = [];
  for (let p = first + at; p < first + Math.min(count, at + batch); p++) {
    const s = connect({
      host: values.vip!,
      port: Number(values.port),
      localAddress: values.source,
      localPort: p,
    });
    s.on('error', () => {});
    sockets.push(s);
  }
  // Long enough for every SYN to leave; no answer ever comes (the destinations are not there).
  await new Promise((r) => setTimeout(r, 300));
  for (const s of sockets) s.destroy();
}
