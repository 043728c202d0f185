// An in-memory IPVS with the kernel's semantics (ip_vs_ctl.c, 6.1): the same checks in
// the same order, answered with the same errno, mapped to the same IpvsError codes as
// the netlink client. The conformance suite runs against both to keep them honest.
import { TimeSlicer } from '../util/slicer.ts';
import { IpvsClientBase, type ListOptions, type ServiceListing } from './client.ts';
import { type IpvsError, ipvsErrorFor } from './errors.ts';
import { normalizeOperation, normalizeRealServer, normalizeService } from './normalize.ts';
import { MemorySysctls } from './sysctl.ts';
import {
  destinationId,
  type IpvsInfo,
  type IpvsOperation,
  type IpvsSysctls,
  type IpvsTimeouts,
  noTraffic,
  type RealServer,
  type RealServerState,
  SCHEDULERS,
  type ServiceKey,
  serviceId,
  type VirtualService,
} from './types.ts';

interface Entry {
  service: VirtualService;
  /** In the kernel's list order (head first). */
  destinations: Map<string, RealServerState>;
  /** Deleted destinations that still had connections (the kernel's trash). */
  trash: Map<string, RealServerState>;
}

const clone = <T>(v: T): T => structuredClone(v);

export class FakeIpvsClient extends IpvsClientBase {
  private readonly table = new Map<string, Entry>();
  private readonly sysctls = new MemorySysctls();
  private readonly schedulers: Set<string>;
  /** Successful writes so far, for tests that assert a converged pass writes nothing. */
  writes = 0;
  closed = false;

  constructor(options: { schedulers?: readonly string[] } = {}) {
    super();
    this.schedulers = new Set(options.schedulers ?? SCHEDULERS);
  }

  async info(): Promise<IpvsInfo> {
    return { version: '1.2.1', connectionTableSize: 4096 };
  }

  async listServices(options?: ListOptions): Promise<ServiceListing[]> {
    // Like the real dump, decoded in slices that yield.
    const slicer = new TimeSlicer(options?.sliceMs, undefined, options?.background ? 1 : 0);
    const out: ServiceListing[] = [];
    for (const e of [...this.table.values()]) {
      // A kernel with no traffic: every counter 0, when asked for.
      out.push({ service: clone(e.service), stats: options?.stats ? noTraffic() : undefined });
      await slicer.pause();
    }
    return out;
  }

  async listDestinations(key: ServiceKey, options?: ListOptions): Promise<RealServerState[]> {
    const entry = this.table.get(serviceId(key));
    const out = entry ? [...entry.destinations.values()].map(clone) : [];
    if (options?.stats) for (const d of out) d.stats = noTraffic();
    return out;
  }

  async execute(
    ops: readonly IpvsOperation[],
    onProgress?: (done: number) => void,
  ): Promise<(IpvsError | undefined)[]> {
    const results = ops.map((op) => {
      const errno = this.apply(op);
      if (errno) return ipvsErrorFor(op, errno);
      this.writes++;
      return undefined;
    });
    onProgress?.(ops.length);
    return results;
  }

  /** Test hook: the connection counters the kernel would report for a destination. */
  setConnections(
    key: ServiceKey,
    dest: { address: string; port: number; family: RealServer['family'] },
    active: number,
    inactive = 0,
  ): void {
    const d = this.table.get(serviceId(key))?.destinations.get(destinationId(dest));
    if (!d) throw new Error(`no destination ${destinationId(dest)} in ${serviceId(key)}`);
    d.activeConnections = active;
    d.inactiveConnections = inactive;
  }

  private checkService(s: VirtualService): string | undefined {
    if (s.scheduler !== 'none' && !this.schedulers.has(s.scheduler)) return 'ENOENT';
    if (s.key.family === 'ipv6') {
      const prefix = s.persistence?.prefix ?? 128;
      if (prefix < 1 || prefix > 128) return 'EINVAL';
    }
    return undefined;
  }

  private checkDestination(svc: VirtualService, d: RealServer): string | undefined {
    if (d.family !== svc.key.family && d.forward !== 'tunnel') return 'EINVAL';
    if (d.weight < 0) return 'ERANGE';
    if (d.lowerThreshold > d.upperThreshold) return 'ERANGE';
    if (d.forward === 'tunnel' && d.tunnelType === 'gue' && !d.tunnelPort) return 'EINVAL';
    return undefined;
  }

  /** Returns the errno name the kernel would answer, or undefined on success. */
  private apply(raw: IpvsOperation): string | undefined {
    const op = normalizeOperation(raw);
    if (op.op === 'add-service') {
      if (this.table.has(serviceId(op.service.key))) return 'EEXIST';
      const bad = this.checkService(op.service);
      if (bad) return bad;
      this.table.set(serviceId(op.service.key), {
        service: normalizeService(op.service),
        destinations: new Map(),
        trash: new Map(),
      });
      return undefined;
    }
    const key = op.op === 'update-service' ? op.service.key : op.key;
    const entry = this.table.get(serviceId(key));
    if (!entry) return 'ESRCH';
    switch (op.op) {
      case 'update-service': {
        const bad = this.checkService(op.service);
        if (bad) return bad;
        entry.service = normalizeService(op.service);
        return undefined;
      }
      case 'delete-service':
        this.table.delete(serviceId(key));
        return undefined;
      case 'add-destination': {
        const bad = this.checkDestination(entry.service, op.destination);
        if (bad) return bad;
        const id = destinationId(op.destination);
        if (entry.destinations.has(id)) return 'EEXIST';
        // As the kernel: a new destination goes to the head of the service's list, and one
        // deleted moments ago comes back from the trash with its connections.
        const trashed = entry.trash.get(id);
        entry.trash.delete(id);
        entry.destinations = new Map([
          [
            id,
            {
              ...normalizeRealServer(op.destination),
              activeConnections: trashed?.activeConnections ?? 0,
              inactiveConnections: trashed?.inactiveConnections ?? 0,
              persistentConnections: trashed?.persistentConnections ?? 0,
            },
          ],
          ...entry.destinations,
        ]);
        return undefined;
      }
      case 'update-destination': {
        const bad = this.checkDestination(entry.service, op.destination);
        if (bad) return bad;
        const current = entry.destinations.get(destinationId(op.destination));
        if (!current) return 'ENOENT';
        entry.destinations.set(destinationId(op.destination), {
          ...normalizeRealServer(op.destination),
          activeConnections: current.activeConnections,
          inactiveConnections: current.inactiveConnections,
          persistentConnections: current.persistentConnections,
        });
        return undefined;
      }
      case 'delete-destination': {
        const id = destinationId(op.destination);
        const gone = entry.destinations.get(id);
        if (!gone) return 'ENOENT';
        entry.destinations.delete(id);
        if (gone.activeConnections + gone.inactiveConnections > 0) entry.trash.set(id, gone);
        return undefined;
      }
    }
  }

  getSysctls(): Promise<IpvsSysctls> {
    return this.sysctls.read();
  }

  setSysctls(values: Partial<IpvsSysctls>): Promise<void> {
    return this.sysctls.write(values);
  }

  /** The kernel's defaults until set (ipvsadm -L --timeout on a fresh namespace). */
  timeouts: IpvsTimeouts = { tcp: 900, tcpFin: 120, udp: 300 };

  async getTimeouts(): Promise<IpvsTimeouts> {
    return { ...this.timeouts };
  }

  async setTimeouts(values: Partial<IpvsTimeouts>): Promise<void> {
    for (const k of ['tcp', 'tcpFin', 'udp'] as const) if (values[k]) this.timeouts[k] = values[k];
  }

  close(): void {
    this.closed = true;
  }
}
