// What the kernel holds, as last read back and then patched with every operation that
// reached it. Incremental passes plan against this instead of dumping 10,000 services;
// a periodic full read-back (and any failure) replaces it with the kernel's own answer.

import { compact } from '../util/compact.ts';
import type { ApplyReport } from './apply.ts';
import { normalizeRealServer } from './normalize.ts';
import {
  type IpvsOperation,
  type KnownRealServer,
  type KnownService,
  sameDestination,
  serviceId,
} from './types.ts';

export class IpvsStateCache {
  private services = new Map<string, KnownService>();
  /** When the cache last matched a full read-back (ms, from the caller's clock). */
  verifiedAt = Number.NEGATIVE_INFINITY;

  /**
   * Replaces everything with a fresh read-back, except the services in `keep`: those were
   * written (or read) while the read-back ran, so what this cache has for them is newer.
   */
  reset(
    table: readonly KnownService[] | Map<string, KnownService>,
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

  table(): KnownService[] {
    return [...this.services.values()];
  }

  /** The services by serviceId, without a copy: read it before the cache changes again. */
  byId(): ReadonlyMap<string, KnownService> {
    return this.services;
  }

  get size(): number {
    return this.services.size;
  }

  get(id: string): KnownService | undefined {
    return this.services.get(id);
  }

  /** Replaces one service's destinations with a fresh read (connection counts for drains). */
  setDestinations(id: string, destinations: readonly KnownRealServer[]): void {
    const s = this.services.get(id);
    if (s) this.services.set(id, { service: s.service, destinations });
  }

  /**
   * Records the operations the kernel accepted (failed ones changed nothing). An entry is
   * never changed in place once recorded (a read-back may hold it): each operation makes a
   * new one, except for entries this call made itself (a first pass records 110,000
   * operations at 10,000 services; a copy of the list for each was most of it).
   */
  record(report: ApplyReport): void {
    const mine = new Set<KnownService>();
    for (const op of report.applied) this.apply(op, mine);
    // What this call grew by unshift stays until the next read-back: at its own length.
    for (const s of mine) if (s.destinations.length) s.destinations = compact(s.destinations);
  }

  private apply(op: IpvsOperation, mine: Set<KnownService>): void {
    switch (op.op) {
      case 'add-service': {
        const s = { service: op.service, destinations: [] };
        mine.add(s);
        this.services.set(serviceId(op.service.key), s);
        return;
      }
      case 'update-service': {
        const s = this.services.get(serviceId(op.service.key));
        if (s)
          this.services.set(serviceId(op.service.key), { service: op.service, destinations: s.destinations });
        return;
      }
      case 'delete-service':
        this.services.delete(serviceId(op.key));
        return;
    }
    const id = serviceId(op.key);
    const s = this.services.get(id);
    if (!s) return;
    const writable = mine.has(s) ? (s.destinations as KnownRealServer[]) : undefined;
    const at = s.destinations.findIndex((d) => sameDestination(d, op.destination));
    if (op.op === 'delete-destination') {
      if (at < 0) return;
      if (writable) writable.splice(at, 1);
      else this.put(id, s, s.destinations.toSpliced(at, 1), mine);
      return;
    }
    // The kernel keeps no counts of its own for what a pass wrote: they are unknown until read.
    const next = normalizeRealServer(op.destination);
    // The kernel's list order (mh depends on it): an update keeps the place, an add goes first.
    if (writable) {
      if (at >= 0) writable[at] = next;
      else writable.unshift(next);
    } else {
      this.put(id, s, at >= 0 ? s.destinations.with(at, next) : [next, ...s.destinations], mine);
    }
  }

  private put(id: string, s: KnownService, destinations: KnownRealServer[], mine: Set<KnownService>): void {
    const fresh = { service: s.service, destinations };
    mine.add(fresh);
    this.services.set(id, fresh);
  }
}
