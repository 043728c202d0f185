// Captures the netlink traffic of real `ipvsadm` commands (under strace) inside the
// kernel harness, as fixtures for the codec's byte-for-byte tests.
//
//   scripts/uml-run.sh -- node scripts/capture-ipvsadm-fixtures.ts
//
// Needs strace and ipvsadm installed. Writes test/fixtures/ipvsadm/*.json: the command,
// and the payload of each netlink message it sent and received (headers' seq and port
// id are per run, so the fixtures keep type, flags and payload separately).
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseMessages } from '../lb-agent/src/netlink/wire.ts';

const out = path.join(import.meta.dirname, '..', 'test', 'fixtures', 'ipvsadm');

if (process.argv.includes('--help')) {
  console.log(
    'Usage: scripts/uml-run.sh -- node scripts/capture-ipvsadm-fixtures.ts\nRegenerates test/fixtures/ipvsadm/*.json from real ipvsadm traffic (run inside the kernel harness).',
  );
  process.exit(0);
}
if (process.env.PORTLB_IN_UML !== '1') {
  console.error(
    'capture-ipvsadm-fixtures: run this inside the kernel harness (scripts/uml-run.sh -- node ...)',
  );
  process.exit(2);
}

const sh = (cmd: string): string => execFileSync('bash', ['-c', cmd], { encoding: 'utf8' });

interface Datagram {
  direction: 'sent' | 'received';
  messages: { type: number; flags: number; payload: string }[];
}

function parseStrace(text: string): Datagram[] {
  const out: Datagram[] = [];
  let current: { direction: 'sent' | 'received'; hex: string[] } | undefined;
  const flush = () => {
    if (current?.hex.length) {
      const bytes = Buffer.from(current.hex.join(''), 'hex');
      out.push({
        direction: current.direction,
        messages: parseMessages(bytes).map((m) => ({
          type: m.type,
          flags: m.flags,
          payload: m.payload.toString('hex'),
        })),
      });
    }
    current = undefined;
  };
  for (const line of text.split('\n')) {
    if (line.startsWith('sendmsg(') || line.startsWith('recvmsg(')) {
      flush();
      // MSG_PEEK reads are repeated by the real read that follows.
      if (line.includes('MSG_PEEK')) continue;
      current = { direction: line.startsWith('send') ? 'sent' : 'received', hex: [] };
      continue;
    }
    const m = /^ \| [0-9a-f]{5} {2}((?:[0-9a-f]{2} {1,2}){1,16})/.exec(line);
    if (m && current) current.hex.push(m[1]!.replace(/\s+/g, ''));
  }
  flush();
  return out;
}

function capture(name: string, command: string, note: string): void {
  sh(`strace -e trace=sendmsg,recvmsg -e write=all -e read=all -o /tmp/trace.txt ${command} >/dev/null`);
  const datagrams = parseStrace(readFileSync('/tmp/trace.txt', 'utf8'));
  // Drop the nlctrl family lookup (type 0x10) and its ACK: our resolver is tested separately.
  const isNlctrl = (m: { type: number; payload: string }) =>
    m.type === 0x10 || (m.type === 2 && m.payload.slice(16, 20) === '1000');
  const ipvs = datagrams
    .map((d) => ({ ...d, messages: d.messages.filter((m) => !isNlctrl(m)) }))
    .filter((d) => d.messages.length > 0);
  writeFileSync(
    path.join(out, `${name}.json`),
    `${JSON.stringify({ command, note, kernel: sh('uname -r').trim(), datagrams: ipvs }, null, 2)}\n`,
  );
  console.log(`captured ${name}: ${command}`);
}

mkdirSync(out, { recursive: true });
sh(`ip link add fx0 type dummy && ip link set fx0 up && ip addr add 10.0.0.1/24 dev fx0 &&
    ip -6 addr add fd00::1/64 dev fx0 nodad`);

capture('add-service-tcp-rr', 'ipvsadm -A -t 10.1.0.1:80 -s rr', 'TCP service, rr, no persistence');
capture(
  'add-service-udp-persistent',
  'ipvsadm -A -u 10.1.0.2:53 -s wlc -p 300 -M 255.255.255.0',
  'UDP, wlc, persistence 300 s, /24 netmask',
);
capture(
  'add-service-mh-flags',
  'ipvsadm -A -t 10.1.0.3:443 -s mh -b mh-fallback,mh-port',
  'mh with both flags',
);
capture(
  'add-service-sctp-ipv6',
  'ipvsadm -A --sctp-service [fd00::10]:5000 -s sh -p 60 --netmask 64',
  'SCTP over IPv6, persistent /64',
);
capture('add-service-fwmark', 'ipvsadm -A -f 100 -s wrr', 'fwmark service');
capture('add-service-onepacket', 'ipvsadm -A -u 10.1.0.4:514 -s rr -o', 'UDP one-packet scheduling');
capture(
  'add-dest-nat',
  'ipvsadm -a -t 10.1.0.1:80 -r 10.0.0.5:8080 -m -w 3 -x 100 -y 10',
  'masq, weight 3, thresholds',
);
capture('add-dest-tunnel', 'ipvsadm -a -t 10.1.0.1:80 -r 10.0.0.6:80 -i -w 1', 'ipip tunnel');
capture(
  'add-dest-tunnel-gue',
  'ipvsadm -a -t 10.1.0.1:80 -r 10.0.0.8:80 -i --tun-type gue --tun-port 6080',
  'GUE tunnel',
);
capture('add-dest-dr', 'ipvsadm -a -t 10.1.0.1:80 -r 10.0.0.7:80 -g -w 2', 'direct routing');
capture(
  'add-dest-ipv6',
  'ipvsadm -a --sctp-service [fd00::10]:5000 -r [fd00::20]:5000 -m',
  'IPv6 masq destination',
);
capture('add-dest-fwmark', 'ipvsadm -a -f 100 -r 10.0.0.9:0 -g', 'destination of a fwmark service');
capture('edit-service', 'ipvsadm -E -t 10.1.0.1:80 -s wrr', 'scheduler change');
capture('edit-dest', 'ipvsadm -e -t 10.1.0.1:80 -r 10.0.0.5:8080 -m -w 0', 'weight 0 (drain)');
capture('dump', 'ipvsadm -Ln --exact', 'service and destination dumps of everything above');
capture('dump-stats', 'ipvsadm -Ln --stats --exact', 'the same with stats');
capture('get-service', 'ipvsadm -Ln --exact -u 10.1.0.2:53', 'GET_SERVICE of one service');
capture('del-dest', 'ipvsadm -d -t 10.1.0.1:80 -r 10.0.0.7:80', 'delete a destination');
capture('del-service', 'ipvsadm -D -u 10.1.0.4:514', 'delete a service');
sh('ipvsadm -C && ip link del fx0');
