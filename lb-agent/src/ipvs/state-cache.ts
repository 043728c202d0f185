// What the kernel holds, as last read back and then patched with every operation that
// reached it. Incremental passes plan against this instead of dumping 10,000 services;
// a periodic full read-back (and any failure) replaces it with the kernel's own answer.
import type { ApplyReport } from './apply.ts';
import { normalizeRealServer } from './normalize.ts';
import { destinationId, type IpvsOperation, type ServiceState, serviceId } from './types.ts';

export class IpvsStateCache {
  private services = new Map<string, ServiceState>();
  /** When the cache last matched a full read-back (ms, from the caller's clock). */
  verifiedAt = Number.NEGATIVE_INFINITY;

  /**
   * Replaces everything with a fresh read-back, except the services in `keep`: those were
   * written (or read) while the read-back ran, so what this cache has for them is newer.
   */
  reset(
    table: readonly ServiceState[] | Map<string, ServiceState>,
    now: number,
    keep: ReadonlySet<string> = new Set(),
  ): void {
    // A map (by serviceId) is taken over as it is: the caller hands it on.
    const fresh = table instanceof Map ? table : new Map(table.map((s) => [serviceId(s.service.key), s]));
    for (const id of keep) {
      const mine = this.services.get(id);
      if (mine) fresh.set(id, mine);
      else fresh.delete(id);
    }
    this.services = fresh;
    this.verifiedAt = now;
  }

  table(): ServiceState[] {
    return [...this.services.values()];
  }

  /** The services by serviceId, without a copy: read it before the cache changes again. */
  byId(): ReadonlyMap<string, ServiceState> {
    return this.services;
  }

  get size(): number {
    return this.services.size;
  }

  get(id: string): ServiceState | undefined {
    return this.services.get(id);
  }

  /** Replaces one service's destinations with a fresh read (connection counts for drains). */
  setDestinations(id: string, destinations: ServiceState['destinations']): void {
    const s = this.services.get(id);
    if (s) this.services.set(id, { ...s, destinations });
  }

  /** Records the operations the kernel accepted (failed ones changed nothing). */
  record(report: ApplyReport): void {
    for (const op of report.applied) this.apply(op);
  }

  private apply(op: IpvsOperation): void {
    switch (op.op) {
      case 'add-service':
        this.services.set(serviceId(op.service.key), { service: op.service, destinations: [] });
        return;
      case 'update-service': {
        const s = this.services.get(serviceId(op.service.key));
        if (s) this.services.set(serviceId(op.service.key), { ...s, service: op.service });
        return;
      }
      case 'delete-service':
        this.services.delete(serviceId(op.key));
        return;
    }
    const id = serviceId(op.key);
    const s = this.services.get(id);
    if (!s) return;
    const did = destinationId(op.destination);
    if (op.op === 'delete-destination') {
      this.services.set(id, { ...s, destinations: s.destinations.filter((d) => destinationId(d) !== did) });
      return;
    }
    const at = s.destinations.findIndex((d) => destinationId(d) === did);
    const old = s.destinations[at];
    const next = {
      ...normalizeRealServer(op.destination),
      activeConnections: old?.activeConnections ?? 0,
      inactiveConnections: old?.inactiveConnections ?? 0,
      persistentConnections: old?.persistentConnections ?? 0,
    };
    // The kernel's list order (mh depends on it): an update keeps the place, an add goes first.
    const destinations = [...s.destinations];
    if (at >= 0) destinations[at] = next;
    else destinations.unshift(next);
    this.services.set(id, { ...s, destinations });
  }
}
