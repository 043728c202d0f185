// Network namespaces, veth links and daemons for tests and the lab. Everything a lab
// creates carries its own prefix and is removed by cleanup(), even after a failure.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { cpSync, createWriteStream, existsSync, lstatSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export function run(cmd: string, args: string[], input?: string): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], input });
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.stderr || e.stdout || e.message}`);
  }
}

export interface Daemon {
  name: string;
  ns: string;
  child: ChildProcess;
  logFile: string;
  exited: Promise<number | null>;
}

/** Polls until `check` returns a value that is not undefined/false, or fails after timeoutMs. */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  { timeoutMs = 15_000, intervalMs = 50 } = {},
): Promise<T> {
  // Monotonic: some tests step the wall clock.
  const deadline = performance.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (performance.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`,
      );
    }
    await sleep(intervalMs);
  }
}

/** Waits until a daemon has created `file`; fails at once, with its log, if it exits first. */
export async function waitForDaemonFile(
  lab: NetnsLab,
  d: Daemon,
  file: string,
  { timeoutMs = 15_000 } = {},
): Promise<void> {
  const exited = () => d.child.exitCode !== null || d.child.signalCode !== null;
  await waitFor(`${d.name}: ${path.basename(file)}`, () => existsSync(file) || exited(), { timeoutMs });
  if (!existsSync(file))
    throw new Error(`${d.name} exited before creating ${file}: ${lab.log(d).slice(-2000)}`);
}

export class NetnsLab {
  readonly prefix: string;
  readonly dir: string;
  private readonly namespaces: string[] = [];
  private readonly daemons: Daemon[] = [];

  constructor(prefix = `pl${process.pid % 100000}`) {
    this.prefix = prefix;
    this.dir = mkdtempSync(path.join(tmpdir(), `${prefix}-`));
  }

  ns(name: string): string {
    return `${this.prefix}${name}`;
  }

  addNamespace(name: string, sysctls: Record<string, string> = {}): string {
    const ns = this.ns(name);
    run('ip', ['netns', 'add', ns]);
    this.namespaces.push(ns);
    this.exec(name, 'ip', ['link', 'set', 'lo', 'up']);
    for (const [k, v] of Object.entries(sysctls)) this.exec(name, 'sysctl', ['-qw', `${k}=${v}`]);
    return ns;
  }

  exec(name: string, cmd: string, args: string[], input?: string): string {
    return run('ip', ['netns', 'exec', this.ns(name), cmd, ...args], input);
  }

  /** A veth pair between two namespaces, with addresses (CIDR notation) on each end. */
  link(a: string, ifA: string, addrsA: string[], b: string, ifB: string, addrsB: string[]): void {
    run('ip', [
      'link',
      'add',
      ifA,
      'netns',
      this.ns(a),
      'type',
      'veth',
      'peer',
      'name',
      ifB,
      'netns',
      this.ns(b),
    ]);
    for (const [name, ifc, addrs] of [
      [a, ifA, addrsA],
      [b, ifB, addrsB],
    ] as const) {
      for (const addr of addrs) {
        this.exec(name, 'ip', ['addr', 'add', addr, 'dev', ifc, ...(addr.includes(':') ? ['nodad'] : [])]);
      }
      this.exec(name, 'ip', ['link', 'set', ifc, 'up']);
    }
  }

  /** Starts a long-running process inside a namespace; its output goes to a log file. */
  spawn(name: string, label: string, cmd: string, args: string[], env?: NodeJS.ProcessEnv): Daemon {
    return this.start(name, label, 'ip', ['netns', 'exec', this.ns(name), cmd, ...args], env);
  }

  /** Starts a long-running process in the current (root) namespace, cleaned up with the lab. */
  spawnHost(label: string, cmd: string, args: string[], env?: NodeJS.ProcessEnv): Daemon {
    return this.start('', label, cmd, args, env);
  }

  private start(name: string, label: string, cmd: string, args: string[], env?: NodeJS.ProcessEnv): Daemon {
    const logFile = path.join(this.dir, `${label}.log`);
    const out = createWriteStream(logFile, { flags: 'a' });
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
    child.stdout?.pipe(out);
    child.stderr?.pipe(out);
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const d: Daemon = { name: label, ns: name, child, logFile, exited };
    this.daemons.push(d);
    return d;
  }

  async kill(d: Daemon, signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 5000): Promise<void> {
    if (d.child.exitCode !== null || d.child.signalCode !== null) return;
    d.child.kill(signal);
    const done = await Promise.race([d.exited.then(() => true), sleep(timeoutMs).then(() => false)]);
    if (!done) {
      d.child.kill('SIGKILL');
      await d.exited;
    }
  }

  log(d: Daemon): string {
    try {
      return readFileSync(d.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  async cleanup(): Promise<void> {
    await Promise.all(this.daemons.map((d) => this.kill(d, 'SIGKILL', 2000).catch(() => {})));
    for (const ns of this.namespaces.reverse()) {
      try {
        run('ip', ['netns', 'del', ns]);
      } catch {
        // already gone
      }
    }
    // PORTLB_KEEP_LABS=<dir> keeps each lab's files (daemon logs, configs) for a post-mortem.
    const keep = process.env.PORTLB_KEEP_LABS;
    if (keep)
      cpSync(this.dir, path.join(keep, path.basename(this.dir)), {
        recursive: true,
        filter: (src) => {
          const st = lstatSync(src);
          return st.isFile() || st.isDirectory();
        },
      });
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Next hops of the route to `prefix` in a namespace's kernel FIB (sorted; empty when none). */
export function fibNextHops(lab: NetnsLab, ns: string, prefix: string): string[] {
  const v6 = prefix.includes(':');
  const out = lab.exec(ns, 'ip', [...(v6 ? ['-6'] : []), '-j', 'route', 'show', 'exact', prefix]);
  const routes = JSON.parse(out || '[]') as { gateway?: string; nexthops?: { gateway: string }[] }[];
  const hops: string[] = [];
  for (const r of routes) {
    if (r.nexthops) hops.push(...r.nexthops.map((n) => n.gateway));
    else if (r.gateway) hops.push(r.gateway);
  }
  return hops.sort();
}

/** Parses a timestamp as `ip -ts` and the shell below print it (local time; compared as is). */
const localStamp = (s: string) => Date.parse(`${s}Z`);

/**
 * Route changes in a namespace's FIB as the kernel announces them (`ip -ts monitor
 * route`), each with its own timestamp: a failover measured from these is not inflated by
 * polling or by the cost of starting processes in a slow guest.
 */
export class RouteMonitor {
  readonly events: { at: number; prefix: string; hops: string[]; deleted: boolean }[] = [];
  private readonly child: ChildProcess;
  private partial = '';
  private current: { at: number; prefix: string; hops: string[]; deleted: boolean } | undefined;

  /** `nice`: a measuring instrument starved of CPU would stamp events late. */
  constructor(lab: NetnsLab, ns: string, nice = 0) {
    this.child = spawn(
      'ip',
      ['netns', 'exec', lab.ns(ns), 'nice', '-n', String(nice), 'ip', '-ts', 'monitor', 'route'],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    this.child.stdout!.setEncoding('utf8');
    this.child.stdout!.on('data', (d: string) => {
      const lines = (this.partial + d).split('\n');
      this.partial = lines.pop() ?? '';
      for (const line of lines) this.line(line);
    });
  }

  private line(line: string): void {
    const m = /^\[([^\]]+)\] (Deleted )?(\S+)(.*)$/.exec(line);
    if (m) {
      const via = / via (\S+)/.exec(m[4]!);
      this.current = { at: localStamp(m[1]!), prefix: m[3]!, hops: via ? [via[1]!] : [], deleted: !!m[2] };
      this.events.push(this.current);
      return;
    }
    const hop = /^\s+nexthop via (\S+)/.exec(line);
    if (hop && this.current) this.current.hops.push(hop[1]!);
  }

  /** The first change of `prefix` at or after `since` that satisfies `test`. */
  async waitFor(
    prefix: string,
    since: number,
    test: (e: { hops: string[]; deleted: boolean }) => boolean,
    timeoutMs = 30_000,
  ): Promise<{ at: number; hops: string[] }> {
    const bare = prefix.replace(/\/32$|\/128$/, '');
    return waitFor(
      `a change of ${prefix}`,
      () => this.events.find((e) => e.at >= since && (e.prefix === bare || e.prefix === prefix) && test(e)),
      { timeoutMs, intervalMs: 50 },
    );
  }

  close(): void {
    this.child.kill();
  }
}

/**
 * A shell kept open in a namespace: a command runs without starting `ip netns exec`
 * again, and `stamp` gives the moment it finished in the same clock and format as
 * RouteMonitor's (bash's $EPOCHREALTIME, no process started for it).
 */
export class NsShell {
  private readonly child: ChildProcess;
  private out = '';
  private n = 0;

  /** `nice`: as RouteMonitor's, so that both stamps are taken as promptly. */
  constructor(lab: NetnsLab, ns: string, nice = 0) {
    this.child = spawn('ip', ['netns', 'exec', lab.ns(ns), 'nice', '-n', String(nice), 'bash'], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    this.child.stdout!.setEncoding('utf8');
    this.child.stdout!.on('data', (d: string) => (this.out += d));
  }

  /** Runs `command`; resolves with the time it finished (ms, RouteMonitor's clock). */
  async stamp(command: string): Promise<number> {
    const marker = `__done_${++this.n}__`;
    this.child.stdin!.write(
      `${command}\nt=$EPOCHREALTIME; printf '${marker} %(%Y-%m-%dT%H:%M:%S)T.%s\\n' "\${t%.*}" "\${t#*.}"\n`,
    );
    const line = await waitFor(marker, () => this.out.split('\n').find((l) => l.startsWith(`${marker} `)), {
      timeoutMs: 30_000,
      intervalMs: 20,
    });
    return localStamp(line.slice(marker.length + 1));
  }

  close(): void {
    this.child.stdin!.end();
    this.child.kill();
  }
}

/**
 * Stalls of the machine itself: a process at the highest priority asks to wake every
 * 20 ms and records each time it woke more than `thresholdMs` late. In a UML guest on a
 * busy host the whole guest is descheduled now and then; every timer in it (BFD's
 * 300 ms detection, a 3 s hold time) then fires late at once, which says nothing about
 * the software under test. Stamps in RouteMonitor's clock and format.
 */
export class StallMonitor {
  readonly stalls: { at: number; ms: number }[] = [];
  private readonly child: ChildProcess;
  private partial = '';

  constructor(thresholdMs = 100) {
    const script = `use Time::HiRes qw(time sleep); use POSIX qw(strftime); $|=1; my $p=time;
      while (1) { sleep 0.02; my $t=time; my $late=($t-$p-0.02)*1000;
        printf("%s.%03d %d\\n", strftime("%Y-%m-%dT%H:%M:%S", localtime($p)), ($p-int($p))*1000, $late) if $late > ${thresholdMs};
        $p=$t; }`;
    this.child = spawn('nice', ['-n', '-20', 'perl', '-e', script], { stdio: ['ignore', 'pipe', 'ignore'] });
    this.child.stdout!.setEncoding('utf8');
    this.child.stdout!.on('data', (d: string) => {
      const lines = (this.partial + d).split('\n');
      this.partial = lines.pop() ?? '';
      for (const line of lines) {
        const m = /^(\S+) (\d+)$/.exec(line);
        if (m) this.stalls.push({ at: localStamp(m[1]!), ms: Number(m[2]) });
      }
    });
  }

  /** The stalls of at least `minMs` that ended within `windowMs` before `at` (or overlap it). */
  before(at: number, minMs: number, windowMs: number): { at: number; ms: number }[] {
    return this.stalls.filter((s) => s.ms >= minMs && s.at + s.ms >= at - windowMs && s.at <= at);
  }

  close(): void {
    this.child.kill();
  }
}
