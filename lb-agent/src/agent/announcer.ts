// Health-gated announcement (DESIGN.md decision 7), pure: a VIP is announced only when
// desired state says so, every IPVS service on it is programmed, and at least one has a
// usable real server in the kernel. During a graceful shutdown every path carries the
// GRACEFUL_SHUTDOWN community and a longer AS path, so routers prefer other replicas.
import { type Advertisement, advertisement, GRACEFUL_SHUTDOWN } from '../bgp/types.ts';
import type { DesiredState } from '../core/desired.ts';
import { serviceId } from '../ipvs/types.ts';
import type { DataPlaneReport } from './data-plane.ts';

export interface AnnounceOptions {
  communities: readonly string[];
  shuttingDown: boolean;
  /** Extra copies of our ASN on paths of a replica that is shutting down. */
  shutdownPrepend: number;
}

export type Withheld = { address: string; reason: string };

export function announcements(
  desired: DesiredState,
  report: Pick<DataPlaneReport, 'programmed' | 'usable'>,
  o: AnnounceOptions,
): { ads: Advertisement[]; withheld: Withheld[] } {
  const ads: Advertisement[] = [];
  const withheld: Withheld[] = [];
  const byVip = new Map<string, string[]>();
  for (const v of desired.virtualServices) {
    const list = byVip.get(v.vip) ?? [];
    list.push(serviceId(v.spec.service.key));
    byVip.set(v.vip, list);
  }
  for (const vip of desired.vips) {
    if (!vip.announce) {
      withheld.push({ address: vip.address, reason: vip.withheld ?? 'NotAnnounced' });
      continue;
    }
    const ids = byVip.get(vip.address) ?? [];
    if (!ids.length || ids.some((id) => !report.programmed.has(id))) {
      withheld.push({ address: vip.address, reason: 'NotProgrammed' });
      continue;
    }
    if (!ids.some((id) => (report.usable.get(id) ?? 0) > 0)) {
      withheld.push({ address: vip.address, reason: 'NoUsableBackendInKernel' });
      continue;
    }
    const communities = [
      ...new Set([...o.communities, ...(o.shuttingDown ? [GRACEFUL_SHUTDOWN] : [])]),
    ].sort();
    ads.push(
      advertisement(`${vip.address}/${vip.family === 'ipv4' ? 32 : 128}`, {
        communities,
        asPathPrepend: o.shuttingDown ? o.shutdownPrepend : 0,
      }),
    );
  }
  return { ads, withheld };
}
