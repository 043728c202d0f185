// Checks of everything the speaker is asked to do, before a single request leaves: a bad
// ASN, address, community or timer is reported with its field and value, and gobgpd is
// never half-configured.
import { canonicalIp, ipFamily, parseCidr } from '../net/ip.ts';
import { BgpError } from './errors.ts';
import type { Advertisement, BgpGlobal, BgpPeerConfig } from './types.ts';

const isInt = (v: unknown, min: number, max: number): v is number =>
  typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
const show = (v: unknown) => JSON.stringify(v) ?? String(v);

export function communityProblem(c: unknown): string | undefined {
  if (typeof c !== 'string') return 'must be a string "asn:value"';
  const m = /^(\d{1,5}):(\d{1,5})$/.exec(c);
  if (!m || Number(m[1]) > 65535 || Number(m[2]) > 65535)
    return 'must be "asn:value" with both parts 0..65535';
  return undefined;
}

export function communityToNumber(c: string): number {
  const [hi, lo] = c.split(':').map(Number) as [number, number];
  return ((hi << 16) | lo) >>> 0;
}

export function communityFromNumber(n: number): string {
  return `${(n >>> 16) & 0xffff}:${n & 0xffff}`;
}

function fail(what: string, problems: string[]): void {
  if (problems.length) {
    throw new BgpError('BGP_INVALID_CONFIG', `invalid ${what}: ${problems.join('; ')}`, { problems });
  }
}

export function validateGlobal(g: BgpGlobal, where = 'bgp'): void {
  const p: string[] = [];
  if (!isInt(g.asn, 1, 4294967295))
    p.push(`${where}.asn: must be an AS number from 1 to 4294967295 (got ${show(g.asn)})`);
  if (ipFamily(g.routerId) !== 'ipv4')
    p.push(`${where}.routerId: must be an IPv4 address (got ${show(g.routerId)})`);
  if (g.listenPort !== -1 && !isInt(g.listenPort, 1, 65535)) {
    p.push(
      `${where}.listenPort: must be -1 (no listener) or a port from 1 to 65535 (got ${show(g.listenPort)})`,
    );
  }
  g.listenAddresses.forEach((a, i) => {
    if (!ipFamily(a)) p.push(`${where}.listenAddresses[${i}]: must be an IP address (got ${show(a)})`);
  });
  fail('BGP global configuration', p);
}

export function validatePeers(peers: readonly BgpPeerConfig[], where = 'bgp.peers'): void {
  const p: string[] = [];
  const seen = new Set<string>();
  peers.forEach((peer, i) => {
    const at = `${where}[${i}]`;
    const family = ipFamily(peer.address);
    if (!family) p.push(`${at}.address: must be an IP address (got ${show(peer.address)})`);
    else {
      const key = canonicalIp(peer.address)!;
      if (seen.has(key)) p.push(`${at}.address: duplicate peer ${key}`);
      seen.add(key);
    }
    if (!isInt(peer.asn, 1, 4294967295))
      p.push(`${at}.asn: must be an AS number from 1 to 4294967295 (got ${show(peer.asn)})`);
    if (!isInt(peer.port, 1, 65535))
      p.push(`${at}.port: must be a port from 1 to 65535 (got ${show(peer.port)})`);
    if (!(peer.holdTime === 0 || isInt(peer.holdTime, 3, 65535))) {
      p.push(`${at}.holdTime: must be 0 or from 3 to 65535 seconds (RFC 4271) (got ${show(peer.holdTime)})`);
    }
    if (
      !isInt(peer.keepaliveInterval, 0, 21845) ||
      (peer.holdTime > 0 && peer.keepaliveInterval >= peer.holdTime)
    ) {
      p.push(
        `${at}.keepaliveInterval: must be below holdTime (usually a third of it) (got ${show(peer.keepaliveInterval)})`,
      );
    }
    if (peer.ebgpMultihopTtl !== undefined && !isInt(peer.ebgpMultihopTtl, 1, 255)) {
      p.push(`${at}.ebgpMultihopTtl: must be a TTL from 1 to 255 (got ${show(peer.ebgpMultihopTtl)})`);
    }
    if (peer.gracefulRestart && !isInt(peer.gracefulRestart.restartTime, 1, 4095)) {
      p.push(
        `${at}.gracefulRestart.restartTime: must be from 1 to 4095 seconds (got ${show(peer.gracefulRestart.restartTime)})`,
      );
    }
    if (
      peer.password !== undefined &&
      (typeof peer.password !== 'string' || peer.password.length === 0 || peer.password.length > 80)
    ) {
      // The value is a secret: say what is wrong with it, never what it is.
      p.push(`${at}.password: must be 1 to 80 characters (TCP MD5 key)`);
    }
    if (!peer.families.length || peer.families.some((f) => f !== 'ipv4' && f !== 'ipv6')) {
      p.push(`${at}.families: must list ipv4 and/or ipv6 (got ${show(peer.families)})`);
    }
    if (peer.localAddress !== undefined && !ipFamily(peer.localAddress)) {
      p.push(`${at}.localAddress: must be an IP address (got ${show(peer.localAddress)})`);
    }
  });
  fail('BGP peers', p);
}

/** Frozen advertisements found valid (the same objects come back every pass). */
const validAds = new WeakSet<Advertisement>();

export function validateAdvertisements(ads: readonly Advertisement[], where = 'advertisements'): void {
  const p: string[] = [];
  const seen = new Set<string>();
  ads.forEach((ad, i) => {
    const at = `${where}[${i}]`;
    if (validAds.has(ad)) {
      if (seen.has(ad.prefix)) p.push(`${at}.prefix: duplicate ${ad.prefix}`);
      seen.add(ad.prefix);
      return;
    }
    const before = p.length;
    const cidr = typeof ad.prefix === 'string' ? parseCidr(ad.prefix) : undefined;
    if (!cidr || !ad.prefix.includes('/'))
      p.push(`${at}.prefix: must be a CIDR such as 203.0.113.10/32 (got ${show(ad.prefix)})`);
    else if (seen.has(ad.prefix)) p.push(`${at}.prefix: duplicate ${ad.prefix}`);
    else seen.add(ad.prefix);
    if (ad.nextHop !== undefined && ipFamily(ad.nextHop) !== cidr?.family) {
      p.push(`${at}.nextHop: must be an address of the prefix's family (got ${show(ad.nextHop)})`);
    }
    ad.communities.forEach((c, j) => {
      const problem = communityProblem(c);
      if (problem) p.push(`${at}.communities[${j}]: ${problem} (got ${show(c)})`);
    });
    if (ad.localPref !== undefined && !isInt(ad.localPref, 0, 4294967295))
      p.push(`${at}.localPref: must be 0..4294967295 (got ${show(ad.localPref)})`);
    if (ad.med !== undefined && !isInt(ad.med, 0, 4294967295))
      p.push(`${at}.med: must be 0..4294967295 (got ${show(ad.med)})`);
    if (!isInt(ad.asPathPrepend, 0, 10))
      p.push(`${at}.asPathPrepend: must be 0..10 (got ${show(ad.asPathPrepend)})`);
    if (!['igp', 'egp', 'incomplete'].includes(ad.origin))
      p.push(`${at}.origin: must be igp, egp or incomplete (got ${show(ad.origin)})`);
    if (p.length === before && Object.isFrozen(ad)) validAds.add(ad);
  });
  fail('advertisements', p);
}
