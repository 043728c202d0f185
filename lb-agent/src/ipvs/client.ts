// The kernel boundary for the data plane, in portlb's own types. The netlink client and
// the fake both implement it and throw the same IpvsError codes; a future nftables data
// plane would implement it too.
import { TimeSlicer } from '../util/slicer.ts';
import { IpvsError } from './errors.ts';
import type {
  DestinationKey,
  IpvsInfo,
  IpvsOperation,
  IpvsStats,
  IpvsSysctls,
  IpvsTimeouts,
  RealServer,
  RealServerState,
  ServiceKey,
  ServiceState,
  VirtualService,
} from './types.ts';

export interface ListOptions {
  /** Decode traffic counters too (costs time on large tables). */
  stats?: boolean;
  /**
   * Longest stretch of synchronous work before the listing yields to the event loop, ms
   * (default 8; Infinity: never, as before, for comparison in bench/).
   */
  sliceMs?: number;
  /**
   * A read of the whole table (the periodic read-back, the stats for /metrics): the netlink
   * client reads it on a socket of its own, so that a pass's small reads never wait for
   * one of its dumps (a kernel socket runs one dump at a time).
   */
  bulk?: boolean;
  /**
   * Nobody waits for this read (the resync's read-back beside the passes): between slices
   * it rests as long as it worked, leaving at least half of the event loop to the rest.
   */
  background?: boolean;
}

export interface ServiceListing {
  service: VirtualService;
  stats: IpvsStats | undefined;
}

export interface IpvsClient {
  info(): Promise<IpvsInfo>;
  listServices(options?: ListOptions): Promise<ServiceListing[]>;
  /** Empty (not an error) for a service that does not exist, as the kernel answers. */
  listDestinations(key: ServiceKey, options?: ListOptions): Promise<RealServerState[]>;
  /**
   * Every service with its destinations. Not an atomic snapshot (neither is the kernel's
   * dump). `each` is handed every service as it is read, and says what to keep of it (the
   * service itself, an object the caller already holds that equals it, or nothing): the
   * result is what it kept. Whole-table reads that keep little allocate little that lives.
   */
  getTable(options?: ListOptions): Promise<ServiceState[]>;
  getTable<T>(options: ListOptions | undefined, each: (s: ServiceState) => T | undefined): Promise<T[]>;
  /**
   * Applies operations in order, batched. Each one succeeds or fails on its own; the
   * result has one entry per operation: undefined, or the IpvsError it got.
   */
  execute(
    ops: readonly IpvsOperation[],
    onProgress?: (done: number) => void,
  ): Promise<(IpvsError | undefined)[]>;
  addService(service: VirtualService): Promise<void>;
  updateService(service: VirtualService): Promise<void>;
  deleteService(key: ServiceKey): Promise<void>;
  addDestination(key: ServiceKey, destination: RealServer): Promise<void>;
  updateDestination(key: ServiceKey, destination: RealServer): Promise<void>;
  deleteDestination(key: ServiceKey, destination: DestinationKey): Promise<void>;
  getSysctls(): Promise<IpvsSysctls>;
  setSysctls(values: Partial<IpvsSysctls>): Promise<void>;
  getTimeouts(): Promise<IpvsTimeouts>;
  /** Only the timeouts given (and non-zero) change. */
  setTimeouts(values: Partial<IpvsTimeouts>): Promise<void>;
  close(): void;
}

/** The single-operation methods, for every implementation: one operation through execute. */
export abstract class IpvsClientBase implements IpvsClient {
  abstract info(): Promise<IpvsInfo>;
  abstract listServices(options?: ListOptions): Promise<ServiceListing[]>;
  abstract listDestinations(key: ServiceKey, options?: ListOptions): Promise<RealServerState[]>;
  abstract execute(
    ops: readonly IpvsOperation[],
    onProgress?: (done: number) => void,
  ): Promise<(IpvsError | undefined)[]>;
  abstract getSysctls(): Promise<IpvsSysctls>;
  abstract setSysctls(values: Partial<IpvsSysctls>): Promise<void>;
  abstract getTimeouts(): Promise<IpvsTimeouts>;
  abstract setTimeouts(values: Partial<IpvsTimeouts>): Promise<void>;
  abstract close(): void;

  /**
   * Every service with its real servers: one dump for the services, one per service for
   * its destinations (the kernel has no other way). At 10,000 services that is seconds of
   * work, so it yields to the event loop between dumps (and within the services dump).
   */
  getTable(options?: ListOptions): Promise<ServiceState[]>;
  getTable<T>(options: ListOptions | undefined, each: (s: ServiceState) => T | undefined): Promise<T[]>;
  async getTable<T>(options?: ListOptions, each?: (s: ServiceState) => T | undefined): Promise<T[]> {
    const slicer = new TimeSlicer(options?.sliceMs, undefined, options?.background ? 1 : 0);
    options = { ...options, bulk: true };
    const services = await this.listServices(options);
    const table: T[] = [];
    for (const { service, stats } of services) {
      await slicer.pause();
      const destinations = await this.listDestinations(service.key, options);
      const state: ServiceState = stats ? { service, stats, destinations } : { service, destinations };
      const kept = each ? each(state) : (state as T);
      if (kept !== undefined) table.push(kept);
    }
    return table;
  }

  private async one(op: IpvsOperation): Promise<void> {
    const [error] = await this.execute([op]);
    if (error) throw error;
  }

  addService(service: VirtualService): Promise<void> {
    return this.one({ op: 'add-service', service });
  }
  updateService(service: VirtualService): Promise<void> {
    return this.one({ op: 'update-service', service });
  }
  deleteService(key: ServiceKey): Promise<void> {
    return this.one({ op: 'delete-service', key });
  }
  addDestination(key: ServiceKey, destination: RealServer): Promise<void> {
    return this.one({ op: 'add-destination', key, destination });
  }
  updateDestination(key: ServiceKey, destination: RealServer): Promise<void> {
    return this.one({ op: 'update-destination', key, destination });
  }
  deleteDestination(key: ServiceKey, destination: DestinationKey): Promise<void> {
    return this.one({ op: 'delete-destination', key, destination });
  }
}

export { IpvsError };
