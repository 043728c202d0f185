// The dead-man switch (docs/bfd.md): BFD and BGP toward a peer are allowed out only while
// the agent keeps saying it is live. The permission is an element with a timeout in a kernel set,
// refreshed several times per timeout from the agent's event loop, and only while no sync
// pass is stuck. A frozen agent (SIGSTOP, a blocked event loop), a wedged one or a dead one
// stops refreshing; the kernel lets the element expire, drops the BFD packets, the router
// declares the session down within its detection time and stops sending this node
// traffic. Nothing has to run for that to happen. When the agent is live again the next
// refresh lets BFD out, the session comes up, BGP returns.
// BGP is held with BFD because a router that ties BGP to BFD drops the session when BFD
// goes down but may well bring it back while BFD stays down (BIRD 2.0 does, measured:
// the route was back 3.4 s later, the agent still frozen).
// Only BFD (UDP 3784 single hop, 4784 multihop) and BGP (TCP, the peers' and our
// listener's port, either direction) to the configured BFD peers are touched.
import { type ChildProcess, spawn } from 'node:child_process';
import { describeError } from '../errors.ts';
import { type Family, ipFamily } from '../net/ip.ts';
import type { Clock } from '../util/clock.ts';
import { ensureJumpFirst, feed } from '../util/feed.ts';
import { type Logger, silentLogger } from '../util/log.ts';

export const GUARD_CHAIN = 'PORTLB-BFD';
export const GUARD_TABLE = 'portlb_bfd';
export const GUARD_SETS = { ipv4: 'portlb-bfd4', ipv6: 'portlb-bfd6' } as const;
const COMMENT = 'portlb dead-man switch: BFD and BGP held down while the agent is not live';

const byFamily = (peers: readonly string[], family: Family) =>
  [...peers].filter((p) => ipFamily(p) === family).sort();

/** nftables: the guard tables, recreated whole, the peers let out for `timeoutMs` from the start. */
export function nftGuardScript(
  peers: readonly string[],
  bgpPorts: readonly number[],
  timeoutMs: number,
): string {
  const ports = [...new Set(bgpPorts)].sort((a, b) => a - b).join(', ');
  const out: string[] = [];
  for (const [family, nf, type] of [
    ['ipv4', 'ip', 'ipv4_addr'],
    ['ipv6', 'ip6', 'ipv6_addr'],
  ] as const) {
    const list = byFamily(peers, family);
    out.push(`table ${nf} ${GUARD_TABLE} {}`, `delete table ${nf} ${GUARD_TABLE}`);
    if (!list.length) continue;
    out.push(
      `table ${nf} ${GUARD_TABLE} {`,
      `  set alive { type ${type}; flags timeout; elements = { ${list.map((p) => `${p} timeout ${timeoutMs}ms`).join(', ')} } }`,
      '  chain output {',
      '    type filter hook output priority filter; policy accept;',
      `    ${nf} daddr { ${list.join(', ')} } udp dport { 3784, 4784 } ${nf} daddr != @alive counter drop comment "${COMMENT}"`,
      `    ${nf} daddr { ${list.join(', ')} } tcp dport { ${ports} } ${nf} daddr != @alive counter drop comment "${COMMENT}"`,
      `    ${nf} daddr { ${list.join(', ')} } tcp sport { ${ports} } ${nf} daddr != @alive counter drop comment "${COMMENT}"`,
      '  }',
      '}',
    );
  }
  return `${out.join('\n')}\n`;
}

/** nftables: one refresh (the set replaced, atomically, with fresh timeouts). */
export function nftRefreshScript(peers: readonly string[], timeoutMs: number): string {
  const out: string[] = [];
  for (const [family, nf] of [
    ['ipv4', 'ip'],
    ['ipv6', 'ip6'],
  ] as const) {
    const list = byFamily(peers, family);
    if (!list.length) continue;
    out.push(
      `flush set ${nf} ${GUARD_TABLE} alive`,
      `add element ${nf} ${GUARD_TABLE} alive { ${list.map((p) => `${p} timeout ${timeoutMs}ms`).join(', ')} }`,
    );
  }
  return `${out.join('\n')}\n`;
}

/** Legacy iptables: the sets (elements carry their own timeouts) and the chain of one family. */
export function legacyGuardText(
  peers: readonly string[],
  bgpPorts: readonly number[],
  family: Family,
): { ipset: string; iptables: string } {
  const ports = [...new Set(bgpPorts)].sort((a, b) => a - b);
  const set = GUARD_SETS[family];
  const bits = family === 'ipv4' ? 32 : 128;
  const list = byFamily(peers, family);
  return {
    ipset: `create ${set} hash:ip family ${family === 'ipv4' ? 'inet' : 'inet6'} timeout 1 -exist\n`,
    iptables: [
      '*filter',
      `:${GUARD_CHAIN} - [0:0]`,
      // Two rules rather than -m multiport: one match module fewer for the kernel to have.
      ...list.flatMap((p) =>
        [
          ...[3784, 4784].map((port) => `-p udp --dport ${port}`),
          ...ports.flatMap((port) => [`-p tcp --dport ${port}`, `-p tcp --sport ${port}`]),
        ].map(
          (match) =>
            `-A ${GUARD_CHAIN} -d ${p}/${bits} ${match} -m set ! --match-set ${set} dst -m comment --comment "${COMMENT}" -j DROP`,
        ),
      ),
      'COMMIT',
      '',
    ].join('\n'),
  };
}

export function legacyRefreshText(peers: readonly string[], family: Family, timeoutMs: number): string {
  const seconds = Math.max(1, Math.round(timeoutMs / 1000));
  return byFamily(peers, family)
    .map((p) => `add ${GUARD_SETS[family]} ${p} timeout ${seconds} -exist\n`)
    .join('');
}

export interface GuardBackend {
  /**
   * The guard for these peers, BFD and BGP on these TCP ports (theirs and our listener's),
   * with the peers already let out for `timeoutMs`: installing never interrupts BFD.
   */
  install(peers: readonly string[], bgpPorts: readonly number[], timeoutMs: number): Promise<void>;
  refresh(peers: readonly string[], timeoutMs: number): Promise<void>;
  close?(): void;
}

/**
 * One long-running interactive `ipset -` or `nft -i`, which applies each line as it
 * arrives: a refresh is a write to a pipe, not a new process (forks cost hundreds of
 * milliseconds on a busy small machine, and a late refresh is a false trip). Whatever
 * the tool prints on stderr fails the next write, which restarts it.
 */
export class LineShell {
  private child: ChildProcess | undefined;
  private error = '';
  private readonly cmd: string;
  private readonly args: string[];
  constructor(cmd: string, args: string[]) {
    this.cmd = cmd;
    this.args = args;
  }

  write(line: string): void {
    if (this.error) {
      const error = this.error.trim();
      this.error = '';
      this.close();
      throw new Error(`${this.cmd} ${this.args.join(' ')}: ${error}`);
    }
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) this.start();
    this.child!.stdin!.write(`${line}\n`);
  }

  close(): void {
    this.child?.stdin?.end();
    this.child?.kill();
    this.child = undefined;
  }

  private start(): void {
    const child = spawn(this.cmd, this.args, { stdio: ['pipe', 'ignore', 'pipe'] });
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => (this.error += d));
    child.on('error', (err) => (this.error += err.message));
    child.stdin!.on('error', (err) => (this.error += err.message));
    this.child = child;
  }
}

/** `prefix` runs the tools through another command (tests: `ip netns exec NS`). */
const via = (prefix: readonly string[], cmd: string, args: string[]): [string, string[]] =>
  prefix.length ? [prefix[0]!, [...prefix.slice(1), cmd, ...args]] : [cmd, args];

export class NftGuard implements GuardBackend {
  private readonly shell: LineShell;
  private readonly prefix: readonly string[];
  constructor(prefix: readonly string[] = []) {
    this.prefix = prefix;
    this.shell = new LineShell(...via(prefix, 'nft', ['-i']));
  }
  install(peers: readonly string[], bgpPorts: readonly number[], timeoutMs: number): Promise<void> {
    return feed(...via(this.prefix, 'nft', ['-f', '-']), nftGuardScript(peers, bgpPorts, timeoutMs));
  }
  async refresh(peers: readonly string[], timeoutMs: number): Promise<void> {
    // One line, one transaction: the set is never seen empty.
    this.shell.write(nftRefreshScript(peers, timeoutMs).trim().split('\n').join('; '));
  }
  close(): void {
    this.shell.close();
  }
}

export class LegacyGuard implements GuardBackend {
  private readonly shell = new LineShell('ipset', ['-']);
  async install(peers: readonly string[], bgpPorts: readonly number[], timeoutMs: number): Promise<void> {
    for (const [family, bin, restore] of [
      ['ipv4', 'iptables-legacy', 'iptables-legacy-restore'],
      ['ipv6', 'ip6tables-legacy', 'ip6tables-legacy-restore'],
    ] as const) {
      if (!byFamily(peers, family).length) continue;
      const text = legacyGuardText(peers, bgpPorts, family);
      // The set and its elements before the rules that drop what is not in it.
      await feed('ipset', ['-exist', 'restore'], text.ipset + legacyRefreshText(peers, family, timeoutMs));
      await feed(restore, ['-w', '--noflush'], text.iptables);
      await ensureJumpFirst(bin, 'filter', 'OUTPUT', GUARD_CHAIN, 'portlb dead-man switch');
    }
  }
  async refresh(peers: readonly string[], timeoutMs: number): Promise<void> {
    for (const family of ['ipv4', 'ipv6'] as const) {
      for (const line of legacyRefreshText(peers, family, timeoutMs).split('\n'))
        if (line) this.shell.write(line);
    }
  }
  close(): void {
    this.shell.close();
  }
}

export interface DeadManOptions {
  peers: string[];
  /** BGP's TCP ports toward those peers: theirs, and our listener's if any. */
  bgpPorts: number[];
  timeoutMs: number;
  backend: GuardBackend;
  /** Whether the agent is live now (no pass stuck). */
  live: () => { ok: boolean; reason: string | undefined };
  clock: Clock;
  logger?: Logger;
  /** Told when the switch starts or stops holding BFD down. */
  onChange?: (holding: string | undefined) => void;
  /**
   * Told when a refresh came later than the timeout allows (ms since the previous one):
   * the agent's event loop stalled that long, and BFD was held down though nothing was stuck.
   */
  onLapse?: (gapMs: number) => void;
  /** CPU time this process used so far, ms (tells a busy agent from one that got no CPU). */
  cpuMs?: () => number;
}

const processCpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

export class DeadManSwitch {
  private readonly o: DeadManOptions;
  private readonly log: Logger;
  private readonly stop = new AbortController();
  private installed = false;
  private lastRefresh: { at: number; cpuMs: number } | undefined;
  readonly timeoutMs: number;
  holding: string | undefined;

  constructor(options: DeadManOptions) {
    this.o = options;
    this.timeoutMs = options.timeoutMs;
    this.log = options.logger ?? silentLogger;
  }

  start(): this {
    void this.loop();
    return this;
  }

  close(): void {
    this.stop.abort();
    this.o.backend.close?.();
  }

  /** One tick: install the guard if needed, then let BFD out for another timeout if live. */
  async tick(): Promise<void> {
    try {
      if (!this.installed) {
        await this.o.backend.install(this.o.peers, this.o.bgpPorts, this.o.timeoutMs);
        this.installed = true;
      }
      const live = this.o.live();
      if (!live.ok) {
        if (!this.holding) {
          this.log.error({ reason: live.reason }, 'dead-man switch: BFD and BGP held down (agent not live)');
          this.o.onChange?.(live.reason);
        }
        this.holding = live.reason;
        return;
      }
      const before = this.lastRefresh;
      await this.o.backend.refresh(this.o.peers, this.o.timeoutMs);
      const now = { at: this.o.clock.monotonic(), cpuMs: (this.o.cpuMs ?? processCpuMs)() };
      this.lastRefresh = now;
      if (before !== undefined && !this.holding && now.at - before.at > this.o.timeoutMs) {
        const gapMs = Math.round(now.at - before.at);
        const cpuMs = Math.round(now.cpuMs - before.cpuMs);
        this.log.warn(
          { gapMs, cpuMs, timeoutMs: this.o.timeoutMs },
          `dead-man switch: refreshed too late, BFD was held down meanwhile (the agent ${cpuMs > gapMs / 2 ? 'was busy: its event loop blocked' : 'got little CPU: the node is overloaded'}); a larger bfd.deadManSeconds tolerates that`,
        );
        this.o.onLapse?.(gapMs);
      }
      if (this.holding) {
        this.log.info('dead-man switch: agent live again, BFD and BGP let out');
        this.o.onChange?.(undefined);
      }
      this.holding = undefined;
    } catch (err) {
      // The guard expires by itself: a failed refresh holds BFD down, which is the safe side.
      this.installed = false;
      this.lastRefresh = undefined;
      this.log.warn({ err: describeError(err) }, 'dead-man switch: refresh failed; retrying');
    }
  }

  private async loop(): Promise<void> {
    const every = Math.max(100, Math.floor(this.o.timeoutMs / 4));
    while (!this.stop.signal.aborted) {
      await this.tick();
      try {
        await this.o.clock.sleep(every, this.stop.signal);
      } catch {
        return;
      }
    }
  }
}

/** A guard that records what it was asked (tests; agents built with a fake netfilter). */
export class FakeGuard implements GuardBackend {
  installs = 0;
  refreshes: { peers: string[]; timeoutMs: number }[] = [];
  fail: Error | undefined;
  async install(): Promise<void> {
    if (this.fail) throw this.fail;
    this.installs++;
  }
  async refresh(peers: readonly string[], timeoutMs: number): Promise<void> {
    if (this.fail) throw this.fail;
    this.refreshes.push({ peers: [...peers], timeoutMs });
  }
}
