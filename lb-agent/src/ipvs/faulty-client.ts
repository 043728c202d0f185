// Fault injection at the kernel boundary, for tests of what the agent does when the
// kernel misbehaves: an IpvsClient that wraps another and fails (or stalls) the next N
// reads or writes on request. In the real agent it is enabled only by the environment
// variable PORTLB_TEST_FAULTS naming a file of requested faults (test labs only; the
// agent says so loudly at start): e.g. {"read": 1} fails the next read, {"execute": 1}
// makes the next write batch fail in transport. The file is consumed as faults fire.
import { readFileSync, writeFileSync } from 'node:fs';
import type { IpvsClient, ListOptions, ServiceListing } from './client.ts';
import { IpvsError } from './errors.ts';
import type {
  DestinationKey,
  IpvsInfo,
  IpvsOperation,
  IpvsSysctls,
  IpvsTimeouts,
  RealServer,
  RealServerState,
  ServiceKey,
  ServiceState,
  VirtualService,
} from './types.ts';

export interface Faults {
  /** Fail this many of the next state reads (the sync pass's dumps) with a transport error. */
  read?: number;
  /** Fail this many of the next statistics dumps (/metrics, /status) with a transport error. */
  statsRead?: number;
  /** Fail this many of the next write batches in transport (nothing known about what applied). */
  execute?: number;
  /** Delay every read by this many milliseconds (a slow or stuck kernel). */
  readDelayMs?: number;
}

export type FaultKind = 'read' | 'statsRead' | 'execute';

export interface FaultSource {
  /** Takes one fault of this kind if one is pending. */
  take(kind: FaultKind): boolean;
  readDelayMs(): number;
}

/** Faults set by a test in memory. */
export class MemoryFaults implements FaultSource {
  faults: Faults = {};
  fired = { read: 0, statsRead: 0, execute: 0 };
  take(kind: FaultKind): boolean {
    const n = this.faults[kind] ?? 0;
    if (n <= 0) return false;
    this.faults[kind] = n - 1;
    this.fired[kind]++;
    return true;
  }
  readDelayMs(): number {
    return this.faults.readDelayMs ?? 0;
  }
}

/** Faults requested through a JSON file (the real agent under test). */
export class FileFaults implements FaultSource {
  private readonly file: string;
  constructor(file: string) {
    this.file = file;
  }
  private read(): Faults {
    try {
      return JSON.parse(readFileSync(this.file, 'utf8')) as Faults;
    } catch {
      return {};
    }
  }
  take(kind: FaultKind): boolean {
    const f = this.read();
    const n = f[kind] ?? 0;
    if (n <= 0) return false;
    writeFileSync(this.file, JSON.stringify({ ...f, [kind]: n - 1 }));
    return true;
  }
  readDelayMs(): number {
    return this.read().readDelayMs ?? 0;
  }
}

const transportError = (what: string) =>
  new IpvsError('KERNEL_ERROR', `${what}: injected fault (netlink transport error)`, { errno: 'EIO' });

export class FaultyIpvsClient implements IpvsClient {
  private readonly inner: IpvsClient;
  private readonly faults: FaultSource;

  constructor(inner: IpvsClient, faults: FaultSource) {
    this.inner = inner;
    this.faults = faults;
  }

  private async reading<T>(what: string, options: ListOptions | undefined, fn: () => Promise<T>): Promise<T> {
    const delay = this.faults.readDelayMs();
    if (delay > 0) await new Promise((r) => setTimeout(r, delay));
    if (this.faults.take(options?.stats ? 'statsRead' : 'read')) throw transportError(what);
    return fn();
  }

  info(): Promise<IpvsInfo> {
    return this.inner.info();
  }
  listServices(options?: ListOptions): Promise<ServiceListing[]> {
    return this.reading('IPVS list services', options, () => this.inner.listServices(options));
  }
  listDestinations(key: ServiceKey, options?: ListOptions): Promise<RealServerState[]> {
    return this.reading('IPVS list destinations', options, () => this.inner.listDestinations(key, options));
  }
  getTable(options?: ListOptions): Promise<ServiceState[]>;
  getTable<T>(options: ListOptions | undefined, each: (s: ServiceState) => T | undefined): Promise<T[]>;
  getTable<T>(options?: ListOptions, each?: (s: ServiceState) => T | undefined): Promise<T[]> {
    return this.reading('IPVS dump', options, () =>
      each ? this.inner.getTable(options, each) : (this.inner.getTable(options) as Promise<T[]>),
    );
  }
  async execute(
    ops: readonly IpvsOperation[],
    onProgress?: (done: number) => void,
  ): Promise<(IpvsError | undefined)[]> {
    if (ops.length && this.faults.take('execute')) {
      // Half the batch reached the kernel before the transport failed: the caller cannot know.
      await this.inner.execute(ops.slice(0, Math.floor(ops.length / 2)));
      throw transportError('IPVS write batch');
    }
    return this.inner.execute(ops, onProgress);
  }
  addService(service: VirtualService): Promise<void> {
    return this.inner.addService(service);
  }
  updateService(service: VirtualService): Promise<void> {
    return this.inner.updateService(service);
  }
  deleteService(key: ServiceKey): Promise<void> {
    return this.inner.deleteService(key);
  }
  addDestination(key: ServiceKey, destination: RealServer): Promise<void> {
    return this.inner.addDestination(key, destination);
  }
  updateDestination(key: ServiceKey, destination: RealServer): Promise<void> {
    return this.inner.updateDestination(key, destination);
  }
  deleteDestination(key: ServiceKey, destination: DestinationKey): Promise<void> {
    return this.inner.deleteDestination(key, destination);
  }
  getSysctls(): Promise<IpvsSysctls> {
    return this.inner.getSysctls();
  }
  setSysctls(values: Partial<IpvsSysctls>): Promise<void> {
    return this.inner.setSysctls(values);
  }
  getTimeouts(): Promise<IpvsTimeouts> {
    return this.inner.getTimeouts();
  }
  setTimeouts(values: Partial<IpvsTimeouts>): Promise<void> {
    return this.inner.setTimeouts(values);
  }
  close(): void {
    this.inner.close();
  }
}
