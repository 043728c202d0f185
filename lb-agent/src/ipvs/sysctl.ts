import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { IpvsError } from './errors.ts';
import { type IpvsSysctls, SYSCTL_NAMES } from './types.ts';

/** Where net.ipv4.vs.* lives; both IpvsClient implementations keep theirs behind this. */
export interface SysctlStore {
  read(): Promise<IpvsSysctls>;
  write(values: Partial<IpvsSysctls>): Promise<void>;
}

/** The kernel defaults on 6.1 (FIELD-NOTES), which the fake starts from. */
export const KERNEL_DEFAULT_SYSCTLS: Readonly<IpvsSysctls> = Object.freeze({
  conntrack: 0,
  expire_nodest_conn: 0,
  expire_quiescent_template: 0,
  sloppy_tcp: 0,
  sloppy_sctp: 0,
  conn_reuse_mode: 1,
  schedule_icmp: 0,
});

function checkValues(values: Partial<IpvsSysctls>): void {
  for (const [name, value] of Object.entries(values)) {
    if (!(SYSCTL_NAMES as readonly string[]).includes(name)) {
      throw new IpvsError('INVALID_ARGUMENT', `unknown IPVS sysctl ${name}`);
    }
    if (!Number.isInteger(value)) {
      throw new IpvsError('INVALID_ARGUMENT', `IPVS sysctl ${name} must be an integer, got ${String(value)}`);
    }
  }
}

/**
 * The sysctls as files under /proc/sys/net/ipv4/vs (of the process's network namespace).
 * In a container, /proc/sys is read-only: the agent is given the host's directory
 * through a volume and this path is configurable.
 */
export class ProcSysctls implements SysctlStore {
  private readonly dir: string;
  constructor(dir = '/proc/sys/net/ipv4/vs') {
    this.dir = dir;
  }

  async read(): Promise<IpvsSysctls> {
    const entries = await Promise.all(
      SYSCTL_NAMES.map(async (name) => {
        try {
          return [name, Number((await readFile(path.join(this.dir, name), 'utf8')).trim())] as const;
        } catch (err) {
          throw new IpvsError(
            'IPVS_UNAVAILABLE',
            `cannot read ${path.join(this.dir, name)}: is ip_vs loaded?`,
            {
              cause: err,
            },
          );
        }
      }),
    );
    return Object.fromEntries(entries) as unknown as IpvsSysctls;
  }

  async write(values: Partial<IpvsSysctls>): Promise<void> {
    checkValues(values);
    for (const [name, value] of Object.entries(values)) {
      const file = path.join(this.dir, name);
      try {
        await writeFile(file, `${value}\n`);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        throw new IpvsError(
          code === 'EACCES' || code === 'EROFS' || code === 'EPERM' ? 'PERMISSION_DENIED' : 'KERNEL_ERROR',
          `cannot write ${file} (${code}): the agent needs CAP_NET_ADMIN and a writable view of this directory`,
          { cause: err, errno: code },
        );
      }
    }
  }
}

/** In-memory sysctls with the kernel's defaults and its validation. */
export class MemorySysctls implements SysctlStore {
  private values: IpvsSysctls = { ...KERNEL_DEFAULT_SYSCTLS };
  async read(): Promise<IpvsSysctls> {
    return { ...this.values };
  }
  async write(values: Partial<IpvsSysctls>): Promise<void> {
    checkValues(values);
    this.values = { ...this.values, ...values };
  }
}
