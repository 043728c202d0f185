// The kernel's per-service figures for /metrics: each virtual service's counters and its
// active connections. The counters come with one dump of the services; the active
// connections only exist per real server, one dump per service (10,000 at 10,000 Services,
// seconds of the event loop's time in slices, every 10 s while /metrics is scraped). A
// service whose connection counter has not moved since the last read, and that then had
// no connection at all (active or inactive), has none now: a connection is counted when it
// is scheduled, and turns active only after that (TCP's SYN_RECV is inactive). Only the
// others are read again.
import type { IpvsClient } from '../ipvs/client.ts';
import { type AddressServiceKey, type IpvsStats, serviceId } from '../ipvs/types.ts';
import type { Pause } from '../util/slicer.ts';

/** One virtual service's figures. */
export interface ServiceFigures {
  key: AddressServiceKey;
  stats: IpvsStats | undefined;
  activeConnections: number;
}

export class ServiceStatsReader {
  /** Per service id, what the last read found. */
  private last = new Map<string, { connections: number; connected: boolean }>();

  /**
   * Reads every service `include` keeps and hands its figures to `visit`, in the kernel's
   * order. Returns how many services it had to read the real servers of.
   */
  async read(
    ipvs: IpvsClient,
    include: (key: AddressServiceKey) => boolean,
    visit: (figures: ServiceFigures) => void,
    pause: Pause = async () => {},
  ): Promise<{ services: number; destinationReads: number }> {
    const services = await ipvs.listServices({ stats: true, bulk: true });
    const next = new Map<string, { connections: number; connected: boolean }>();
    let destinationReads = 0;
    for (const { service, stats } of services) {
      await pause();
      const key = service.key;
      if (key.kind !== 'address' || !include(key)) continue;
      const id = serviceId(key);
      const before = this.last.get(id);
      const connections = stats?.connections;
      let active = 0;
      let connected = false;
      if (!before || before.connected || connections === undefined || connections !== before.connections) {
        destinationReads++;
        for (const d of await ipvs.listDestinations(key, { bulk: true })) {
          active += d.activeConnections;
          if (d.activeConnections + d.inactiveConnections > 0) connected = true;
        }
      }
      // An unknown counter (a kernel without statistics) is never taken as unchanged.
      next.set(id, { connections: connections ?? Number.NaN, connected });
      visit({ key, stats, activeConnections: active });
    }
    this.last = next;
    return { services: next.size, destinationReads };
  }
}
