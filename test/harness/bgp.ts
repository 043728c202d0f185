// Real BGP daemons for tests and the lab: gobgpd as an LB replica's speaker (API on a
// unix socket, pprof off, no config file) and BIRD2 as the core router (ECMP into the
// kernel FIB, L4 multipath hash, graceful-shutdown policy).
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Daemon, NetnsLab } from './netns.ts';
import { waitForDaemonFile } from './netns.ts';

export interface Gobgpd {
  daemon: Daemon;
  socket: string;
  target: string;
}

/**
 * Starts gobgpd; pass the socket of a previous one to restart it as a sidecar would;
 * `nice` as the agent's (see Lab's `nice`).
 */
export async function startGobgpd(lab: NetnsLab, ns: string, socketPath?: string, nice = 0): Promise<Gobgpd> {
  const label = `gobgpd-${ns}`;
  const socket = socketPath ?? path.join(lab.dir, `${label}.sock`);
  // A killed gobgpd leaves its socket file behind; a new one must not trip over it.
  rmSync(socket, { force: true });
  const daemon = lab.spawn(ns, label, 'nice', [
    '-n',
    String(nice),
    'gobgpd',
    `--api-hosts=unix://${socket}`,
    '--pprof-disable',
    '--log-plain',
    '--log-level=info',
  ]);
  // Seconds in a busy one-CPU guest; measured over 30 s once while 1000 connections ran.
  await waitForDaemonFile(lab, daemon, socket, { timeoutMs: 90_000 });
  return { daemon, socket, target: `unix://${socket}` };
}

export interface BirdNeighbor {
  name: string;
  address: string;
  asn: number;
  password?: string;
  /** The neighbour's address family channel: ipv4 or ipv6. */
  family: 'ipv4' | 'ipv6';
  /** The BGP session follows a BFD session (docs/routers.md: `bfd on`). */
  bfd?: boolean;
}

/**
 * Starts the shipped bfd container's entrypoint (a BFD-only BIRD) with its files in `dir`;
 * `nice` as the agent's (see Lab's `bfd`).
 */
export async function startBfdResponder(lab: NetnsLab, ns: string, dir: string, nice = 0): Promise<Daemon> {
  mkdirSync(dir, { recursive: true });
  const socket = path.join(dir, 'bird-bfd.ctl');
  rmSync(socket, { force: true });
  const repo = path.resolve(import.meta.dirname, '..', '..');
  const daemon = lab.spawn(
    ns,
    `bird-bfd-${ns}`,
    'nice',
    ['-n', String(nice), 'sh', path.join(repo, 'bgp-speaker', 'bfd-entrypoint.sh')],
    {
      ...process.env,
      PORTLB_BFD_DIR: dir,
    },
  );
  await waitForDaemonFile(lab, daemon, socket, { timeoutMs: 10_000 });
  return daemon;
}

export interface BirdOptions {
  routerId: string;
  asn: number;
  neighbors: BirdNeighbor[];
  /** Hold time offered to the neighbours (seconds). */
  holdTime?: number;
  /** BFD timers for neighbours with `bfd` (a protocol bfd is added). */
  bfd?: { intervalMs: number; multiplier: number };
  /** The daemon's niceness (a router gives BFD its CPU first; see Lab's `nice`). */
  nice?: number;
  /**
   * Real-time scheduling (SCHED_FIFO), as a router's control plane has its own CPU: see
   * Lab's `nice` for why the lab's router needs it with BFD.
   */
  realtime?: boolean;
}

/**
 * BIRD2 as an ECMP core router: every replica's path to a VIP merged into one multipath
 * kernel route; paths with GRACEFUL_SHUTDOWN (65535:0) get local-pref 0 (RFC 8326) so
 * the router moves traffic off a replica before it withdraws; nothing is exported back.
 */
export function birdConfig(o: BirdOptions): string {
  const neighbors = o.neighbors
    .map(
      (n) => `
protocol bgp ${n.name} {
  local as ${o.asn};
  neighbor ${n.address} as ${n.asn};
  hold time ${o.holdTime ?? 9};
  keepalive time ${Math.max(1, Math.floor((o.holdTime ?? 9) / 3))};
  connect delay time 1;
  connect retry time 1;
  error wait time 1, 2;
  ${n.bfd ? 'bfd on;' : ''}
  ${n.password ? `password "${n.password}";` : ''}
  ${n.family} {
    import filter gshut;
    export none;
  };
}`,
    )
    .join('\n');
  return `
router id ${o.routerId};
log stderr all;
# Session state changes with timestamps, for post-mortems (PORTLB_KEEP_LABS).
debug protocols { states };

filter gshut {
  if (65535, 0) ~ bgp_community then bgp_local_pref = 0;
  accept;
}

protocol device { scan time 10; }
${o.bfd ? `protocol bfd { debug { states, events }; interface "*" { interval ${o.bfd.intervalMs} ms; multiplier ${o.bfd.multiplier}; }; }` : ''}

protocol kernel kernel4 {
  ipv4 { export all; };
  merge paths on limit 16;
}

protocol kernel kernel6 {
  ipv6 { export all; };
  merge paths on limit 16;
}
${neighbors}
`;
}

export interface Bird {
  daemon: Daemon;
  socket: string;
}

/**
 * ECMP on the router hashes each packet's own addresses, protocol and ports. Policy 1 (L4)
 * does not here: it takes a hash the packet already carries, and a packet from a socket
 * on this same kernel (the lab's client, through veth) carries its socket's random hash,
 * redrawn on a retransmission timeout, while a RST the client's kernel sends after the
 * socket is gone carries another. Such packets took the other replica: there a NAT flow's
 * conntrack knows nothing of them (invalid, dropped), so the backend never saw the RST and
 * kept the connection; the next connection from the same client port met it (a challenge
 * ACK, a second retransmitted SYN: 1-3 s stalls in the lab's NAT load, about one a
 * minute). A router's NIC hashes the 5-tuple; policy 3 with these fields (Linux >= 5.12)
 * hashes the same on any packet.
 */
function routerEcmpHash(lab: NetnsLab, ns: string): void {
  for (const v of ['ipv4', 'ipv6'])
    lab.exec(ns, 'sysctl', [
      '-qw',
      `net.${v}.fib_multipath_hash_policy=3`,
      // source and destination address, protocol, source and destination port
      `net.${v}.fib_multipath_hash_fields=0x0037`,
    ]);
}

export function startBird(
  lab: NetnsLab,
  ns: string,
  options: BirdOptions,
  label = `bird-${ns}`,
): Promise<Bird> {
  return startBirdWithConfig(lab, ns, birdConfig(options), label, options.nice, options.realtime);
}

/** BIRD with a configuration of the test's own (other routing roles than the ECMP core). */
export async function startBirdWithConfig(
  lab: NetnsLab,
  ns: string,
  config: string,
  label = `bird-${ns}`,
  nice = 0,
  realtime = false,
): Promise<Bird> {
  const conf = path.join(lab.dir, `${label}.conf`);
  const socket = path.join(lab.dir, `${label}.ctl`);
  writeFileSync(conf, config);
  routerEcmpHash(lab, ns);
  lab.exec(ns, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  lab.exec(ns, 'sysctl', ['-qw', 'net.ipv6.conf.all.forwarding=1']);
  const bird = ['bird', '-f', '-c', conf, '-s', socket];
  const daemon = realtime
    ? lab.spawn(ns, label, 'chrt', ['--fifo', '10', ...bird])
    : lab.spawn(ns, label, 'nice', ['-n', String(nice), ...bird]);
  await waitForDaemonFile(lab, daemon, socket, { timeoutMs: 10_000 });
  return { daemon, socket };
}

export function birdc(lab: NetnsLab, ns: string, bird: Bird, command: string): string {
  return lab.exec(ns, 'birdc', ['-s', bird.socket, ...command.split(' ')]);
}

/** BIRD's view of one BGP protocol: "Established", "Active", "Connect", ... */
export function birdProtocolState(lab: NetnsLab, ns: string, bird: Bird, name: string): string {
  const out = birdc(lab, ns, bird, `show protocols ${name}`);
  const line = out.split('\n').find((l) => l.startsWith(name));
  return line?.trim().split(/\s+/)[5] ?? 'unknown';
}

export interface Frr {
  zebra: Daemon;
  bgpd: Daemon;
  vtyDir: string;
}

/**
 * FRR 8.4 as the core router: zebra + bgpd in the namespace, running as the frr user
 * with their sockets in a directory of this lab. Same behaviour as the BIRD recipe:
 * multipath, graceful-shutdown route map, nothing exported back (docs/routers.md).
 */
export async function startFrr(lab: NetnsLab, ns: string, o: BirdOptions): Promise<Frr> {
  const dir = path.join(lab.dir, `frr-${ns}`);
  mkdirSync(dir, { mode: 0o777 });
  chmodSync(dir, 0o777);
  chmodSync(lab.dir, 0o755);
  const neighbors = o.neighbors
    .map(
      (n) =>
        ` neighbor ${n.address} peer-group PORTLB${n.password ? `\n neighbor ${n.address} password ${n.password}` : ''}`,
    )
    .join('\n');
  const conf = `frr defaults datacenter
hostname ${ns}
no zebra nexthop kernel enable
router bgp ${o.asn}
 bgp router-id ${o.routerId}
 no bgp ebgp-requires-policy
 neighbor PORTLB peer-group
 neighbor PORTLB remote-as ${o.neighbors[0]?.asn ?? 65001}
 neighbor PORTLB timers ${Math.max(1, Math.floor((o.holdTime ?? 9) / 3))} ${o.holdTime ?? 9}
 neighbor PORTLB timers connect 1
${neighbors}
 address-family ipv4 unicast
  maximum-paths 16
  neighbor PORTLB route-map PORTLB-IN in
  neighbor PORTLB route-map DENY-ALL out
 exit-address-family
!
bgp community-list standard GSHUT permit 65535:0
route-map PORTLB-IN permit 10
 match community GSHUT
 set local-preference 0
route-map PORTLB-IN permit 20
route-map DENY-ALL deny 10
`;
  const file = path.join(dir, 'frr.conf');
  writeFileSync(file, conf);
  routerEcmpHash(lab, ns);
  lab.exec(ns, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  const common = [
    '-f',
    file,
    '-z',
    path.join(dir, 'zserv.api'),
    '--vty_socket',
    dir,
    '-u',
    'frr',
    '-g',
    'frr',
  ];
  const start = async (name: 'zebra' | 'bgpd', readyFile: string) => {
    const d = lab.spawn(ns, `${name}-${ns}`, `/usr/lib/frr/${name}`, [
      ...common,
      '-i',
      path.join(dir, `${name}.pid`),
    ]);
    await waitForDaemonFile(lab, d, path.join(dir, readyFile));
    return d;
  };
  const zebra = await start('zebra', 'zserv.api');
  const bgpd = await start('bgpd', 'bgpd.vty');
  return { zebra, bgpd, vtyDir: dir };
}

export function vtysh(lab: NetnsLab, ns: string, frr: Frr, command: string): string {
  return lab.exec(ns, 'vtysh', ['--vty_socket', frr.vtyDir, '-c', command]);
}
