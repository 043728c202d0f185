// Health-gated announcement (DESIGN.md decisions 7 and 14), pure. A VIP is announced when
// desired state allows it and at least one of its IPVS services is programmed with a
// usable real server in the kernel. It is withdrawn only when that is known to be false
// for all of them: a service whose state is unknown (the kernel could not be read, the
// write path failed) leaves the VIP as it was. One failed port never takes the others
// down. During a graceful shutdown every path carries the GRACEFUL_SHUTDOWN community (and,
// toward eBGP routers, a longer AS path; toward iBGP ones LOCAL_PREF 0), so routers prefer
// other replicas.
import { type Advertisement, advertisement, GRACEFUL_SHUTDOWN } from '../bgp/types.ts';
import type { DesiredState } from '../core/desired.ts';
import { specId } from '../ipvs/types.ts';
import type { DataPlaneReport } from './data-plane.ts';

export interface AnnounceOptions {
  communities: readonly string[];
  shuttingDown: boolean;
  /** The address families some configured peer carries: a VIP of another reaches no router. */
  peerFamilies: ReadonlySet<'ipv4' | 'ipv6'>;
}

export type Withheld = { address: string; reason: string };

export const vipPrefix = (address: string, family: 'ipv4' | 'ipv6'): string =>
  `${address}/${family === 'ipv4' ? 32 : 128}`;

const addresses = new WeakMap<Advertisement, string>();

/** The VIP an advertisement is for (its prefix without the length), made once per frozen object. */
export function adAddress(ad: Advertisement): string {
  let address = addresses.get(ad);
  if (address === undefined) {
    address = ad.prefix.slice(0, ad.prefix.lastIndexOf('/'));
    if (Object.isFrozen(ad)) addresses.set(ad, address);
  }
  return address;
}

export function announcements(
  desired: DesiredState,
  report: Pick<DataPlaneReport, 'services'>,
  /**
   * What was announced before this pass, by prefix: kept while its state is unknown, and
   * handed on as the same (frozen) object when unchanged, so the speaker compares it by
   * identity instead of parsing 10,000 prefixes a pass.
   */
  previous: ReadonlyMap<string, Advertisement>,
  o: AnnounceOptions,
): { ads: Advertisement[]; withheld: Withheld[]; kept: string[] } {
  const ads: Advertisement[] = [];
  const withheld: Withheld[] = [];
  const kept: string[] = [];
  const byVip = new Map<string, string[]>();
  for (const v of desired.virtualServices) {
    const list = byVip.get(v.vip) ?? [];
    list.push(specId(v.spec));
    byVip.set(v.vip, list);
  }
  const communities = Object.freeze(
    [...new Set([...o.communities, ...(o.shuttingDown ? [GRACEFUL_SHUTDOWN] : [])])].sort(),
  );
  const localPref = o.shuttingDown ? 0 : undefined;
  const key = communities.join(' ');
  for (const vip of desired.vips) {
    const prefix = vipPrefix(vip.address, vip.family);
    if (!vip.announce) {
      withheld.push({ address: vip.address, reason: vip.withheld ?? 'NotAnnounced' });
      continue;
    }
    if (!o.peerFamilies.has(vip.family)) {
      withheld.push({ address: vip.address, reason: 'NoPeerForFamily' });
      continue;
    }
    const states = (byVip.get(vip.address) ?? []).map((id) => report.services.get(id));
    const serving = states.some((s) => s?.outcome === 'programmed' && s.usable > 0);
    const unknown = states.some((s) => !s || s.outcome === 'unknown');
    if (!serving && unknown) {
      if (previous.has(prefix)) kept.push(vip.address);
      else {
        withheld.push({ address: vip.address, reason: 'StateUnknown' });
        continue;
      }
    } else if (!serving) {
      withheld.push({
        address: vip.address,
        reason: states.some((s) => s?.outcome === 'programmed') ? 'NoUsableBackendInKernel' : 'NotProgrammed',
      });
      continue;
    }
    // RFC 8326: the community for routers that honour it, LOCAL_PREF 0 for iBGP peers; the
    // speaker prepends our AS toward eBGP peers (never toward iBGP: there it is a loop).
    const before = previous.get(prefix);
    ads.push(
      before &&
        Object.isFrozen(before) &&
        before.localPref === localPref &&
        before.communities.join(' ') === key
        ? before
        : Object.freeze(advertisement(prefix, { communities: communities as string[], localPref })),
    );
  }
  return { ads, withheld, kept };
}
