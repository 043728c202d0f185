// Runs a systemd unit's service the way systemd would, for the directives portlb's units
// use, without systemd (the lab kernel has no init system): the user, group and
// supplementary groups, the capability bounding and ambient sets, no_new_privs (setpriv),
// the umask, RuntimeDirectory, Environment, and Restart=always. Directives this harness
// does not emulate (ProtectSystem and the other sandboxing options) are listed, so a
// test says exactly what it covered; systemd-analyze verify checks the files' syntax.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, createWriteStream, mkdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import type { NetnsLab } from './netns.ts';

export interface Unit {
  file: string;
  service: Map<string, string[]>;
}

export const EMULATED = new Set([
  'Type',
  'ExecStart',
  'User',
  'Group',
  'SupplementaryGroups',
  'RuntimeDirectory',
  'RuntimeDirectoryMode',
  'UMask',
  'CapabilityBoundingSet',
  'AmbientCapabilities',
  'NoNewPrivileges',
  'Restart',
  'RestartSec',
  'Environment',
]);

export function parseUnit(file: string): Unit {
  const service = new Map<string, string[]>();
  let section = '';
  for (const raw of readFileSync(file, 'utf8').split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) {
      section = s[1]!;
      continue;
    }
    if (section !== 'Service') continue;
    const i = line.indexOf('=');
    const key = line.slice(0, i);
    service.set(key, [...(service.get(key) ?? []), line.slice(i + 1)]);
  }
  return { file, service };
}

/** The directives of the unit this harness does not emulate (reported by tests). */
export const notEmulated = (u: Unit): string[] => [...u.service.keys()].filter((k) => !EMULATED.has(k));

/** `systemd-analyze verify`: its complaints, minus executables absent on this machine. */
export function verifyUnits(files: string[]): string[] {
  const r = spawnSync('systemd-analyze', ['verify', ...files], { encoding: 'utf8' });
  return `${r.stdout}${r.stderr}`
    .split('\n')
    .filter((l) => l.trim() && !/is not executable: No such file or directory/.test(l));
}

const caps = (list: string) =>
  list
    .split(/\s+/)
    .filter(Boolean)
    .map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`)
    .join(',');

export interface UnitRunnerOptions {
  /** Where the service runs: a network namespace of the lab (a node). */
  ns: string;
  /** Names to numeric ids (the lab does not create users on the host). */
  ids: Record<string, number>;
  /** Path replacements in ExecStart (an install prefix that is this repository here). */
  replace?: [string, string][];
}

export class UnitRunner {
  private readonly unit: Unit;
  private readonly lab: NetnsLab;
  private readonly o: UnitRunnerOptions;
  child: ChildProcess | undefined;
  starts = 0;
  private stopping = false;
  readonly logFile: string;

  constructor(lab: NetnsLab, unit: Unit, o: UnitRunnerOptions) {
    this.lab = lab;
    this.unit = unit;
    this.o = o;
    this.logFile = path.join(lab.dir, `${path.basename(unit.file)}.log`);
  }

  private one(key: string): string | undefined {
    return this.unit.service.get(key)?.at(-1);
  }

  private id(name: string): number {
    if (/^\d+$/.test(name)) return Number(name);
    const id = this.o.ids[name];
    if (id === undefined) throw new Error(`${this.unit.file}: no id given for ${name}`);
    return id;
  }

  /** The command systemd would run, as setpriv arguments. */
  command(): string[] {
    let exec = this.one('ExecStart');
    if (!exec) throw new Error(`${this.unit.file}: no ExecStart`);
    for (const [from, to] of this.o.replace ?? []) exec = exec.replaceAll(from, to);
    const user = this.one('User') ?? 'root';
    const group = this.one('Group') ?? user;
    const groups = (this.unit.service.get('SupplementaryGroups') ?? [])
      .flatMap((g) => g.split(/\s+/))
      .filter(Boolean);
    const setpriv = ['setpriv', `--reuid=${this.id(user)}`, `--regid=${this.id(group)}`];
    setpriv.push(groups.length ? `--groups=${groups.map((g) => this.id(g)).join(',')}` : '--clear-groups');
    const bounding = this.one('CapabilityBoundingSet');
    if (bounding !== undefined) setpriv.push(`--bounding-set=-all${bounding ? `,${caps(bounding)}` : ''}`);
    const ambient = this.one('AmbientCapabilities');
    if (ambient) setpriv.push(`--inh-caps=-all,${caps(ambient)}`, `--ambient-caps=-all,${caps(ambient)}`);
    if (this.one('NoNewPrivileges') === 'yes') setpriv.push('--no-new-privs');
    return [...setpriv, '--', ...exec.split(/\s+/)];
  }

  private runtimeDirectory(): void {
    const name = this.one('RuntimeDirectory');
    if (!name) return;
    const dir = path.join('/run', name);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const user = this.one('User') ?? 'root';
    chownSync(dir, this.id(user), this.id(this.one('Group') ?? user));
    chmodSync(dir, Number.parseInt(this.one('RuntimeDirectoryMode') ?? '0755', 8));
  }

  start(): void {
    this.runtimeDirectory();
    const env: Record<string, string> = { ...process.env } as Record<string, string>;
    for (const e of this.unit.service.get('Environment') ?? []) {
      const [k, ...v] = e.replace(/^"|"$/g, '').split('=');
      env[k!] = v.join('=');
    }
    const umask = this.one('UMask') ?? '0022';
    const child = spawn(
      'ip',
      [
        'netns',
        'exec',
        this.lab.ns(this.o.ns),
        'bash',
        '-c',
        `umask ${umask}; exec "$@"`,
        'unit',
        ...this.command(),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], env },
    );
    const out = createWriteStream(this.logFile, { flags: 'a' });
    child.stdout.pipe(out);
    child.stderr.pipe(out);
    this.child = child;
    this.starts++;
    child.on('exit', () => {
      if (this.stopping || this.one('Restart') !== 'always') return;
      const delay = Number(this.one('RestartSec') ?? '0.1') * 1000;
      setTimeout(() => {
        if (!this.stopping) this.start();
      }, delay);
    });
  }

  /** The service's own process (setpriv execs the command, so the child's pid is it). */
  pid(): number | undefined {
    const pid = this.child?.pid;
    if (!pid) return undefined;
    // ip netns exec -> bash (exec) -> setpriv (exec) -> the service: one process.
    return pid;
  }

  log(): string {
    try {
      return readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
}
