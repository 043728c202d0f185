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
import type { Pause } from '../util/slicer.ts';
import { runSteps, runStepsSliced } from '../util/steps.ts';
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

/** What a pass decided about one VIP: announced (with its advertisement), withheld, or kept while unknown. */
type Decision = { ad: Advertisement; kept: boolean } | { withheld: string };

interface DecideContext {
  report: Pick<DataPlaneReport, 'services'>;
  previous: ReadonlyMap<string, Advertisement>;
  o: AnnounceOptions;
  communities: readonly string[];
  key: string;
  localPref: number | undefined;
}

function decideContext(
  report: Pick<DataPlaneReport, 'services'>,
  previous: ReadonlyMap<string, Advertisement>,
  o: AnnounceOptions,
): DecideContext {
  const communities = Object.freeze(
    [...new Set([...o.communities, ...(o.shuttingDown ? [GRACEFUL_SHUTDOWN] : [])])].sort(),
  );
  return {
    report,
    previous,
    o,
    communities,
    key: communities.join(' '),
    localPref: o.shuttingDown ? 0 : undefined,
  };
}

/** The rule for one VIP, given the ids of its IPVS services. */
function decide(vip: DesiredState['vips'][number], ids: readonly string[], c: DecideContext): Decision {
  const prefix = vipPrefix(vip.address, vip.family);
  if (!vip.announce) return { withheld: vip.withheld ?? 'NotAnnounced' };
  if (!c.o.peerFamilies.has(vip.family)) return { withheld: 'NoPeerForFamily' };
  const states = ids.map((id) => c.report.services.get(id));
  const serving = states.some((s) => s?.outcome === 'programmed' && s.usable > 0);
  const unknown = states.some((s) => !s || s.outcome === 'unknown');
  let kept = false;
  if (!serving && unknown) {
    if (!c.previous.has(prefix)) return { withheld: 'StateUnknown' };
    kept = true;
  } else if (!serving) {
    return {
      withheld: states.some((s) => s?.outcome === 'programmed') ? 'NoUsableBackendInKernel' : 'NotProgrammed',
    };
  }
  // RFC 8326: the community for routers that honour it, LOCAL_PREF 0 for iBGP peers; the
  // speaker prepends our AS toward eBGP peers (never toward iBGP: there it is a loop).
  const before = c.previous.get(prefix);
  const ad =
    before &&
    Object.isFrozen(before) &&
    before.localPref === c.localPref &&
    before.communities.join(' ') === c.key
      ? before
      : Object.freeze(
          advertisement(prefix, { communities: c.communities as string[], localPref: c.localPref }),
        );
  return { ad, kept };
}

/** The ids of each VIP's IPVS services. */
export function servicesByVip(desired: Pick<DesiredState, 'virtualServices'>): Map<string, string[]> {
  const byVip = new Map<string, string[]>();
  for (const v of desired.virtualServices) {
    const list = byVip.get(v.vip);
    if (list) list.push(specId(v.spec));
    else byVip.set(v.vip, [specId(v.spec)]);
  }
  return byVip;
}

export interface Announcements {
  ads: Advertisement[];
  withheld: Withheld[];
  kept: string[];
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
  byVip: ReadonlyMap<string, readonly string[]> = servicesByVip(desired),
): Announcements {
  return runSteps(announceSteps(desired, report, previous, o, byVip));
}

/** The same decisions in slices (`pause` after each VIP): 10,000 VIPs at once hold the event loop too long. */
export function announcementsSliced(
  desired: DesiredState,
  report: Pick<DataPlaneReport, 'services'>,
  previous: ReadonlyMap<string, Advertisement>,
  o: AnnounceOptions,
  byVip: ReadonlyMap<string, readonly string[]>,
  pause: Pause,
): Promise<Announcements> {
  return runStepsSliced(announceSteps(desired, report, previous, o, byVip), pause);
}

function* announceSteps(
  desired: DesiredState,
  report: Pick<DataPlaneReport, 'services'>,
  previous: ReadonlyMap<string, Advertisement>,
  o: AnnounceOptions,
  byVip: ReadonlyMap<string, readonly string[]>,
): Generator<void, Announcements> {
  const out: Announcements = { ads: [], withheld: [], kept: [] };
  const c = decideContext(report, previous, o);
  for (const vip of desired.vips) {
    record(out, vip.address, decide(vip, byVip.get(vip.address) ?? [], c));
    yield;
  }
  return out;
}

function record(out: Announcements, address: string, d: Decision): void {
  if ('withheld' in d) out.withheld.push({ address, reason: d.withheld });
  else {
    out.ads.push(d.ad);
    if (d.kept) out.kept.push(address);
  }
}

/**
 * The same decisions after an incremental pass, made again only for the VIPs in `touched`
 * (the others' desired state and IPVS outcomes are those of `before`). `changed` is false
 * when every advertisement is the one `previous` holds.
 */
export function announcementsPatch(
  report: Pick<DataPlaneReport, 'services'>,
  previous: ReadonlyMap<string, Advertisement>,
  o: AnnounceOptions,
  byVip: ReadonlyMap<string, readonly string[]>,
  before: Announcements,
  touched: ReadonlyMap<string, DesiredState['vips'][number]>,
): Announcements & { changed: boolean } {
  const c = decideContext(report, previous, o);
  const fresh: Announcements = { ads: [], withheld: [], kept: [] };
  let changed = false;
  let same = true;
  for (const [address, vip] of touched) {
    const d = decide(vip, byVip.get(address) ?? [], c);
    const ad = 'ad' in d ? d.ad : undefined;
    if (ad !== previous.get(vipPrefix(vip.address, vip.family))) changed = true;
    // (touched holds a few VIPs: a scan of the lists beats a map of them)
    same &&=
      !changed &&
      ('withheld' in d
        ? before.withheld.some((w) => w.address === address && w.reason === d.withheld)
        : d.kept === before.kept.includes(address));
    record(fresh, address, d);
  }
  // Nothing decided otherwise: the lists as they were (no copy of 10,000 entries).
  if (same) return { ...before, changed: false };
  const untouched = (address: string) => !touched.has(address);
  return {
    ads: [...before.ads.filter((a) => untouched(adAddress(a))), ...fresh.ads],
    withheld: [...before.withheld.filter((w) => untouched(w.address)), ...fresh.withheld],
    kept: [...before.kept.filter(untouched), ...fresh.kept],
    changed,
  };
}
