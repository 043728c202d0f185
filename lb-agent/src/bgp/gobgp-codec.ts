// portlb's BGP types <-> GoBGP's wire messages (protos/gobgp, json form of Any).
import { bigIntToIp, canonicalIp, parseCidr } from '../net/ip.ts';
import { anyOf, anyType, type Wire } from './gobgp-api.ts';
import {
  type Advertisement,
  advertisement,
  type BgpGlobal,
  type BgpPeerConfig,
  type Family,
  type Origin,
  type PeerStatus,
  type SessionState,
} from './types.ts';
import { communityFromNumber, communityToNumber } from './validate.ts';

export const FAMILY_WIRE: Record<Family, Wire> = {
  ipv4: { afi: 'AFI_IP', safi: 'SAFI_UNICAST' },
  ipv6: { afi: 'AFI_IP6', safi: 'SAFI_UNICAST' },
};
const ORIGINS: Origin[] = ['igp', 'egp', 'incomplete'];
/** gobgpd's "my address on this session" next hops. */
const SELF_NEXT_HOP: Record<Family, string> = { ipv4: '0.0.0.0', ipv6: '::' };

export function globalToWire(g: BgpGlobal): Wire {
  return {
    asn: g.asn,
    router_id: g.routerId,
    listen_port: g.listenPort,
    listen_addresses: g.listenAddresses,
  };
}

export function pathToWire(ad: Advertisement, ownAsn: number): Wire {
  const cidr = parseCidr(ad.prefix)!;
  const family = cidr.family;
  const nlri = anyOf('IPAddressPrefix', {
    prefix: bigIntToIp(cidr.network, family),
    prefix_len: cidr.prefix,
  });
  const nextHop = ad.nextHop ?? SELF_NEXT_HOP[family];
  const pattrs: Wire[] = [anyOf('OriginAttribute', { origin: ORIGINS.indexOf(ad.origin) })];
  if (family === 'ipv4') pattrs.push(anyOf('NextHopAttribute', { next_hop: nextHop }));
  else
    pattrs.push(
      anyOf('MpReachNLRIAttribute', { family: FAMILY_WIRE.ipv6, next_hops: [nextHop], nlris: [nlri] }),
    );
  if (ad.asPathPrepend > 0) {
    pattrs.push(
      anyOf('AsPathAttribute', {
        segments: [{ type: 'AS_SEQUENCE', numbers: new Array(ad.asPathPrepend).fill(ownAsn) }],
      }),
    );
  }
  if (ad.communities.length) {
    pattrs.push(anyOf('CommunitiesAttribute', { communities: ad.communities.map(communityToNumber) }));
  }
  if (ad.localPref !== undefined) pattrs.push(anyOf('LocalPrefAttribute', { local_pref: ad.localPref }));
  if (ad.med !== undefined) pattrs.push(anyOf('MultiExitDiscAttribute', { med: ad.med }));
  return { family: FAMILY_WIRE[family], nlri, pattrs };
}

/** A path of our own from ListPath back into an Advertisement. */
export function pathFromWire(path: Wire, prefix: string): Advertisement {
  const ad = advertisement(prefix);
  for (const attr of (path.pattrs ?? []) as Wire[]) {
    switch (anyType(attr)) {
      case 'OriginAttribute':
        ad.origin = ORIGINS[attr.origin as number] ?? 'igp';
        break;
      case 'NextHopAttribute':
        ad.nextHop = attr.next_hop === '0.0.0.0' ? undefined : attr.next_hop;
        break;
      case 'MpReachNLRIAttribute': {
        const nh = (attr.next_hops as string[] | undefined)?.[0];
        ad.nextHop = !nh || nh === '::' || nh === '0.0.0.0' ? undefined : canonicalIp(nh);
        break;
      }
      case 'AsPathAttribute':
        ad.asPathPrepend = ((attr.segments ?? []) as Wire[]).reduce(
          (n, s) => n + ((s.numbers as number[]) ?? []).length,
          0,
        );
        break;
      case 'CommunitiesAttribute':
        ad.communities = ((attr.communities ?? []) as number[]).map(communityFromNumber).sort();
        break;
      case 'LocalPrefAttribute':
        ad.localPref = attr.local_pref;
        break;
      case 'MultiExitDiscAttribute':
        ad.med = attr.med;
        break;
    }
  }
  return ad;
}

/** Paths we originated (as opposed to learned from a peer) carry no neighbour. */
export function isLocalPath(path: Wire): boolean {
  return !path.neighbor_ip || path.neighbor_ip === '<nil>';
}

/**
 * Normal forms of frozen advertisements, with their comparison keys. Every pass hands the
 * speaker all of its advertisements, mostly the very objects of the pass before (the
 * announcer reuses them): 10,000 prefixes parsed four times a pass were most of its time.
 * Only frozen objects are remembered: one changed after the fact would be misread.
 */
const normalForms = new WeakMap<Advertisement, { ad: Advertisement; key: string }>();

function normalForm(ad: Advertisement): { ad: Advertisement; key: string } {
  const known = normalForms.get(ad);
  if (known) return known;
  const normal = Object.freeze(normalize(ad));
  const form = { ad: normal, key: JSON.stringify(normal) };
  if (Object.isFrozen(ad)) normalForms.set(ad, form);
  normalForms.set(normal, form);
  return form;
}

export function normalizeAdvertisement(ad: Advertisement): Advertisement {
  return normalForm(ad).ad;
}

function normalize(ad: Advertisement): Advertisement {
  const cidr = parseCidr(ad.prefix);
  return {
    prefix: cidr ? `${bigIntToIp(cidr.network, cidr.family)}/${cidr.prefix}` : ad.prefix,
    nextHop: ad.nextHop === undefined ? undefined : canonicalIp(ad.nextHop),
    origin: ad.origin,
    communities: [...new Set(ad.communities)].sort(),
    localPref: ad.localPref,
    med: ad.med,
    asPathPrepend: ad.asPathPrepend,
  };
}

export function sameAdvertisement(a: Advertisement, b: Advertisement): boolean {
  return a === b || normalForm(a).key === normalForm(b).key;
}

export function peerToWire(p: BgpPeerConfig): Wire {
  return {
    conf: {
      neighbor_address: p.address,
      peer_asn: p.asn,
      auth_password: p.password ?? '',
      description: p.description ?? '',
    },
    timers: {
      // gobgpd waits connect_retry (default 120 s) between its own attempts; rejoin faster.
      config: {
        hold_time: String(p.holdTime),
        keepalive_interval: String(p.keepaliveInterval),
        connect_retry: '5',
      },
    },
    transport: {
      local_address: p.localAddress ?? '',
      passive_mode: p.passive,
      remote_port: p.port === 179 ? 0 : p.port,
    },
    ebgp_multihop:
      p.ebgpMultihopTtl === undefined
        ? { enabled: false, multihop_ttl: 0 }
        : { enabled: true, multihop_ttl: p.ebgpMultihopTtl },
    graceful_restart: p.gracefulRestart
      ? { enabled: true, restart_time: p.gracefulRestart.restartTime, helper_only: false }
      : { enabled: false, restart_time: 0, helper_only: false },
    afi_safis: p.families.map((f) => ({
      config: { family: FAMILY_WIRE[f], enabled: true },
      mp_graceful_restart: { config: { enabled: !!p.gracefulRestart } },
    })),
  };
}

const familyOf = (w: Wire | undefined): Family | undefined =>
  w?.afi === 'AFI_IP' ? 'ipv4' : w?.afi === 'AFI_IP6' ? 'ipv6' : undefined;

/** The configuration a listed peer has, in our terms (to compare with what we want). */
export function peerConfigFromWire(w: Wire): BgpPeerConfig {
  const conf = w.conf ?? {};
  const timers = w.timers?.config ?? {};
  const gr = w.graceful_restart ?? {};
  const local = w.transport?.local_address;
  return {
    address: canonicalIp(conf.neighbor_address) ?? conf.neighbor_address,
    asn: conf.peer_asn,
    port: w.transport?.remote_port || 179,
    password: conf.auth_password || undefined,
    holdTime: Number(timers.hold_time ?? 0),
    keepaliveInterval: Number(timers.keepalive_interval ?? 0),
    ebgpMultihopTtl: w.ebgp_multihop?.enabled ? w.ebgp_multihop.multihop_ttl : undefined,
    gracefulRestart: gr.enabled ? { restartTime: gr.restart_time } : undefined,
    families: ((w.afi_safis ?? []) as Wire[])
      .filter((a) => a.config?.enabled)
      .map((a) => familyOf(a.config?.family))
      .filter((f): f is Family => !!f)
      .sort(),
    localAddress: !local || local === '0.0.0.0' || local === '::' ? undefined : local,
    passive: !!w.transport?.passive_mode,
    description: conf.description || undefined,
  };
}

/**
 * Whether a listed peer (`have`) already has the configuration we want. Once a session is
 * up, ListPeer reports the session's actual local address in the transport config, so an
 * unset local address in `want` matches any.
 */
export function samePeerConfig(have: BgpPeerConfig, want: BgpPeerConfig): boolean {
  const norm = (p: BgpPeerConfig, localAddress: string | undefined) =>
    JSON.stringify({
      ...p,
      address: canonicalIp(p.address) ?? p.address,
      families: [...p.families].sort(),
      password: p.password || undefined,
      description: p.description || undefined,
      localAddress,
    });
  const local = want.localAddress === undefined ? undefined : canonicalIp(want.localAddress);
  return (
    norm(have, want.localAddress === undefined ? undefined : canonicalIp(have.localAddress ?? '')) ===
    norm(want, local)
  );
}

const SESSION_STATES: Record<string, SessionState> = {
  UNKNOWN: 'unknown',
  IDLE: 'idle',
  CONNECT: 'connect',
  ACTIVE: 'active',
  OPENSENT: 'opensent',
  OPENCONFIRM: 'openconfirm',
  ESTABLISHED: 'established',
};

export const sessionStateFromWire = (s: unknown): SessionState => SESSION_STATES[String(s)] ?? 'unknown';

/** Status of a listed peer. Deliberately has no password. */
export function peerStatusFromWire(w: Wire): PeerStatus {
  const state = sessionStateFromWire(w.state?.session_state);
  const uptime = w.timers?.state?.uptime;
  const sum = (k: string) =>
    ((w.afi_safis ?? []) as Wire[]).reduce((n, a) => n + Number(a.state?.[k] ?? 0), 0);
  return {
    address: canonicalIp(w.conf?.neighbor_address) ?? w.conf?.neighbor_address,
    asn: w.conf?.peer_asn,
    state,
    adminDown: w.state?.admin_state === 'DOWN' || !!w.conf?.admin_down,
    establishedSince: state === 'established' && uptime?.seconds ? Number(uptime.seconds) * 1000 : undefined,
    advertised: sum('advertised'),
    received: sum('received'),
    flops: w.state?.flops ?? 0,
  };
}

// ---- routing policy -------------------------------------------------------------------
// gobgpd accepts every route and re-advertises everything by default: an LB node would be
// a transit between its routers. portlb's policy: import nothing; export only the paths
// this node originates (its VIPs); toward eBGP peers, a path carrying GRACEFUL_SHUTDOWN
// also gets our AS prepended twice (an iBGP peer would see its own AS: a loop, a hard
// withdraw; it gets LOCAL_PREF 0 on the path instead).

export const POLICY = {
  export: 'portlb-export',
  import: 'portlb-import',
  ebgpPeers: 'portlb-ebgp-peers',
  gracefulShutdown: 'portlb-graceful-shutdown',
} as const;

export interface PolicyWant {
  ownAsn: number;
  /** Addresses of the peers in another AS. */
  ebgpPeers: string[];
}

const hostPrefix = (address: string) => `${address}/${address.includes(':') ? 128 : 32}`;

/** Defined sets and policies (SetPolicies), then the two global assignments (SetPolicyAssignment). */
export function policyToWire(want: PolicyWant): { definitions: Wire; assignments: Wire[] } {
  const statements: Wire[] = [];
  const definedSets: Wire[] = [
    { defined_type: 'COMMUNITY', name: POLICY.gracefulShutdown, list: ['^65535:0$'] },
  ];
  if (want.ebgpPeers.length) {
    definedSets.push({
      defined_type: 'NEIGHBOR',
      name: POLICY.ebgpPeers,
      list: [...want.ebgpPeers].sort().map(hostPrefix),
    });
    statements.push({
      name: 'portlb-graceful-shutdown-ebgp',
      conditions: {
        route_type: 'ROUTE_TYPE_LOCAL',
        neighbor_set: { type: 'ANY', name: POLICY.ebgpPeers },
        community_set: { type: 'ANY', name: POLICY.gracefulShutdown },
      },
      actions: { route_action: 'ACCEPT', as_prepend: { asn: want.ownAsn, repeat: 2, use_left_most: false } },
    });
  }
  const own = (name: string) => ({
    name,
    conditions: { route_type: 'ROUTE_TYPE_LOCAL' },
    actions: { route_action: 'ACCEPT' },
  });
  statements.push(own('portlb-own-paths'));
  // The global import policy also sees the paths the agent adds: those pass, nothing else.
  const imports = { name: POLICY.import, statements: [own('portlb-own-paths-in')] };
  return {
    definitions: { defined_sets: definedSets, policies: [{ name: POLICY.export, statements }, imports] },
    assignments: [
      { name: 'global', direction: 'EXPORT', policies: [{ name: POLICY.export }], default_action: 'REJECT' },
      { name: 'global', direction: 'IMPORT', policies: [{ name: POLICY.import }], default_action: 'REJECT' },
    ],
  };
}

/** What gobgpd's global assignments and sets amount to, in a form to compare with what we want. */
export function policySummary(
  exportA: Wire | undefined,
  importA: Wire | undefined,
  ebgpSet: Wire | undefined,
): string {
  const statement = (s: Wire) => ({
    name: s?.name,
    routeType: s?.conditions?.route_type ?? 'ROUTE_TYPE_NONE',
    neighbors: s?.conditions?.neighbor_set?.name ?? '',
    communities: s?.conditions?.community_set?.name ?? '',
    action: s?.actions?.route_action ?? 'NONE',
    prepend: s?.actions?.as_prepend ? [s.actions.as_prepend.asn, s.actions.as_prepend.repeat] : null,
  });
  const assignment = (a: Wire | undefined) => ({
    default: a?.default_action ?? 'NONE',
    policies: ((a?.policies ?? []) as Wire[]).map((p) => ({
      name: p?.name,
      statements: ((p?.statements ?? []) as Wire[]).map(statement),
    })),
  });
  return JSON.stringify({
    export: assignment(exportA),
    import: assignment(importA),
    ebgpPeers: ((ebgpSet?.list ?? []) as string[]).slice().sort(),
  });
}

/** The summary of what we want (same form as policySummary of gobgpd's answer). */
export function wantedPolicySummary(want: PolicyWant): string {
  const { definitions, assignments } = policyToWire(want);
  const byName = new Map((definitions.policies as Wire[]).map((p) => [p.name, p]));
  const inline = (a: Wire) => ({
    ...a,
    policies: (a.policies as Wire[]).map((p) => byName.get(p.name) ?? p),
  });
  const ebgp = (definitions.defined_sets as Wire[]).find((d) => d.name === POLICY.ebgpPeers);
  return policySummary(inline(assignments[0]!), inline(assignments[1]!), ebgp);
}
