// VIP allocation, pure: from all Services, the settings in force for ours (translate.ts)
// and the configured pools to the status each of our Services should carry, and the
// Events that explain it. Only the leader applies the result. Existing assignments are
// kept whenever they are still valid (a VIP never moves under live traffic because
// another Service changed); older Services win conflicts.
import type { Pool } from '../config/agent-config.ts';
import { poolOf as poolOfAddress, poolOwnership } from '../config/ownership.ts';
import { bigIntToIp, canonicalIp, type Family, ipFamily } from '../net/ip.ts';
import { type AddressBlock, blockContains } from '../net/pool.ts';
import type { ServiceSettings } from './annotations.ts';
import type { LeanService } from './objects.ts';
import { isOurs } from './translate.ts';

export interface ServiceRef {
  namespace: string;
  name: string;
  uid: string | undefined;
  /** What the Event is about: a Service (default), this Node, or a configuration object. */
  kind?: 'Service' | 'Node' | 'PortlbAddressPool' | 'PortlbBgpPeer';
}

export interface KubeEvent {
  service: ServiceRef;
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
}

export interface StatusUpdate {
  service: ServiceRef;
  /** The IPs the status must list (ipMode: Proxy); empty clears it. */
  ips: string[];
  /** Only ipMode differs from what the Service carries (an API server may drop it). */
  ipModeOnly: boolean;
}

export interface AllocationPlan {
  updates: StatusUpdate[];
  events: KubeEvent[];
  /** Every Service of ours and the IPs it holds after this plan. */
  assignments: Map<string, string[]>;
}

export interface AllocatorConfig {
  loadBalancerClass: string;
  serveServicesWithoutClass: boolean;
}

const refOf = (s: LeanService): ServiceRef => ({ namespace: s.namespace, name: s.name, uid: s.uid });

const FAMILY: Record<string, Family> = { IPv4: 'ipv4', IPv6: 'ipv6' };

function wantedFamilies(svc: LeanService): Family[] {
  const listed = svc.ipFamilies.map((f) => FAMILY[f]).filter((f): f is Family => !!f);
  const families = listed.length ? [...new Set(listed)] : (['ipv4'] as Family[]);
  const policy = svc.ipFamilyPolicy ?? 'SingleStack';
  return policy === 'SingleStack' ? families.slice(0, 1) : families;
}

function portClaims(svc: LeanService): string[] {
  // Any JSON may sit where a port belongs (translation skips such a Service): print it safely.
  return (svc.ports ?? []).map(
    (p) => `${typeof p.protocol === 'string' ? p.protocol : 'TCP'}/${JSON.stringify(p.port) ?? ''}`,
  );
}

function currentIngress(svc: LeanService): { ips: string[]; allProxy: boolean } {
  const ips = svc.ingress.map((i) => (i.ip ? canonicalIp(i.ip) : undefined)).filter((x): x is string => !!x);
  return { ips, allProxy: svc.ingress.every((i) => i.ipMode === 'Proxy') };
}

const createdAt = (svc: LeanService): number => svc.createdAt ?? Number.MAX_SAFE_INTEGER;

/**
 * The addresses a block may hand out: IPv4 CIDRs wider than /31 skip their network and
 * broadcast addresses; IPv6 CIDRs wider than /127 skip the subnet-router anycast address
 * (the all-zero host part, which routers answer themselves, RFC 4291).
 */
function usableRange(block: AddressBlock): { first: bigint; last: bigint } {
  const size = block.last - block.first + 1n;
  const isCidr = !block.text.includes('-') && block.text.includes('/');
  if (block.family === 'ipv4' && isCidr && size >= 4n)
    return { first: block.first + 1n, last: block.last - 1n };
  if (block.family === 'ipv6' && isCidr && size >= 4n) return { first: block.first + 1n, last: block.last };
  return { first: block.first, last: block.last };
}

interface Holder {
  ids: Set<string>;
  sharingKey: string | undefined;
  ports: Set<string>;
  /** externalTrafficPolicy: one VIP is announced per node for all its Services, so they must agree. */
  policy: string;
}

const policyOf = (svc: LeanService) => (svc.externalTrafficPolicy === 'Local' ? 'Local' : 'Cluster');

export function planAllocations(
  services: readonly LeanService[],
  /** The settings in force for each of our Services (translate.ts); absent: invalid, keep what it has. */
  settings: ReadonlyMap<string, ServiceSettings>,
  pools: readonly Pool[],
  cfg: AllocatorConfig,
): AllocationPlan {
  const plan: AllocationPlan = { updates: [], events: [], assignments: new Map() };
  const inPools = poolOwnership(pools);
  const poolOf = (ip: string) => poolOfAddress(pools, ip);
  const used = new Map<string, Holder>();

  const compatible = (
    ip: string,
    id: string,
    key: string | undefined,
    ports: string[],
    policy: string,
  ): string | undefined => {
    const h = used.get(ip);
    if (!h || (h.ids.size === 1 && h.ids.has(id))) return undefined;
    const others = [...h.ids].filter((x) => x !== id).join(', ');
    if (!key || h.sharingKey !== key)
      return `${ip} is used by ${others} (share it with portlb.io/allow-shared-ip set to the same key on both)`;
    const clash = ports.find((p) => h.ports.has(p));
    if (clash) return `${ip} is shared with ${others}, which already uses ${clash}`;
    if (h.policy !== policy)
      return `${ip} is shared with ${others}, whose externalTrafficPolicy is ${h.policy}, not ${policy} (a node announces a VIP for all its Services or none)`;
    return undefined;
  };
  const take = (ip: string, id: string, key: string | undefined, ports: string[], policy: string) => {
    const h = used.get(ip) ?? { ids: new Set<string>(), sharingKey: key, ports: new Set<string>(), policy };
    h.ids.add(id);
    for (const p of ports) h.ports.add(p);
    used.set(ip, h);
  };

  interface Entry {
    svc: LeanService;
    id: string;
    settings: ServiceSettings;
    families: Family[];
    ports: string[];
    policy: string;
    kept: string[];
    current: string[];
    allProxy: boolean;
  }
  const entries: Entry[] = [];
  for (const svc of services) {
    const id = svc.id;
    const { ips: current, allProxy } = currentIngress(svc);
    if (!isOurs(svc, cfg)) {
      // No longer a LoadBalancer but still carrying an address portlb gave (ipMode Proxy):
      // release it. A LoadBalancer of another class, or of none, is another
      // implementation's business even when its address lies in our range.
      const ours =
        svc.type !== 'LoadBalancer'
          ? svc.ingress.filter((i) => i.ip && i.ipMode === 'Proxy' && inPools(i.ip))
          : [];
      // Held by another implementation: never handed out to one of ours.
      if (svc.type === 'LoadBalancer')
        for (const ip of current.filter(inPools)) take(ip, id, undefined, [], policyOf(svc));
      if (ours.length) {
        const released = ours.map((i) => canonicalIp(i.ip!) ?? i.ip!);
        plan.updates.push({
          service: refOf(svc),
          ips: current.filter((ip) => !released.includes(ip)),
          ipModeOnly: false,
        });
        plan.events.push({
          service: refOf(svc),
          type: 'Normal',
          reason: 'AddressReleased',
          message: `portlb no longer serves this Service; released ${released.join(', ')}`,
        });
      }
      continue;
    }
    const s = settings.get(id);
    if (!s) {
      // Its settings are invalid (translation said why, with an Event): it keeps what it
      // has, a typo never takes an address away from live traffic.
      for (const ip of current.filter(inPools)) take(ip, id, undefined, portClaims(svc), policyOf(svc));
      plan.assignments.set(id, current);
      continue;
    }
    entries.push({
      svc,
      id,
      settings: s,
      families: wantedFamilies(svc),
      ports: portClaims(svc),
      policy: policyOf(svc),
      kept: [],
      current,
      allProxy,
    });
  }
  entries.sort((a, b) => createdAt(a.svc) - createdAt(b.svc) || (a.id < b.id ? -1 : 1));

  const requestedOf = (e: Entry): string[] => {
    const r = e.settings.requestedIPs ?? [];
    const legacy = e.svc.loadBalancerIP ? canonicalIp(e.svc.loadBalancerIP) : undefined;
    return legacy && !r.length ? [legacy] : r;
  };
  const poolAllows = (e: Entry, ip: string) =>
    !e.settings.addressPool || poolOf(ip)?.name === e.settings.addressPool;

  // Pass 1: keep every current address that is still valid.
  for (const e of entries) {
    const requested = requestedOf(e);
    for (const ip of e.current) {
      const family = ipFamily(ip)!;
      if (!inPools(ip) || !e.families.includes(family) || e.kept.some((k) => ipFamily(k) === family))
        continue;
      if (requested.length && !requested.includes(ip)) continue;
      if (!poolAllows(e, ip)) continue;
      if (compatible(ip, e.id, e.settings.sharingKey, e.ports, e.policy)) continue;
      take(ip, e.id, e.settings.sharingKey, e.ports, e.policy);
      e.kept.push(ip);
    }
  }

  // Pass 2: give each Service an address for every family it still lacks.
  const cursors = new Map<AddressBlock, bigint>();
  for (const e of entries) {
    const requested = requestedOf(e);
    const assigned = [...e.kept];
    for (const family of e.families) {
      if (assigned.some((ip) => ipFamily(ip) === family)) continue;
      const want = requested.find((ip) => ipFamily(ip) === family);
      if (want) {
        if (!inPools(want) || !poolAllows(e, want)) {
          plan.events.push({
            service: refOf(e.svc),
            type: 'Warning',
            reason: 'AddressNotInPool',
            message: `requested ${want} is outside ${e.settings.addressPool ? `pool ${e.settings.addressPool}` : "portlb's pools"} (${pools.map((p) => p.name).join(', ')})`,
          });
          continue;
        }
        const conflict = compatible(want, e.id, e.settings.sharingKey, e.ports, e.policy);
        if (conflict) {
          plan.events.push({
            service: refOf(e.svc),
            type: 'Warning',
            reason: 'AddressConflict',
            message: `requested ${conflict}`,
          });
          continue;
        }
        take(want, e.id, e.settings.sharingKey, e.ports, e.policy);
        assigned.push(want);
        continue;
      }
      if (requested.length) continue; // asked for specific addresses, none of this family
      let candidates = pools.filter((p) =>
        e.settings.addressPool ? p.name === e.settings.addressPool : p.autoAssign,
      );
      if (e.settings.addressPool && !candidates.length) {
        plan.events.push({
          service: refOf(e.svc),
          type: 'Warning',
          reason: 'UnknownPool',
          message: `pool ${e.settings.addressPool} does not exist (pools: ${pools.map((p) => p.name).join(', ')})`,
        });
        continue;
      }
      candidates = candidates.filter((p) => p.blocks.some((b) => b.family === family));
      // A sharing key prefers an address its group already uses, when the ports fit.
      let found: string | undefined;
      if (e.settings.sharingKey) {
        for (const [ip, h] of used) {
          if (
            h.sharingKey === e.settings.sharingKey &&
            ipFamily(ip) === family &&
            candidates.some((p) => p.blocks.some((b) => blockContains(b, ip))) &&
            !compatible(ip, e.id, e.settings.sharingKey, e.ports, e.policy)
          ) {
            found = ip;
            break;
          }
        }
      }
      for (const pool of candidates) {
        if (found) break;
        for (const block of pool.blocks) {
          if (block.family !== family || found) continue;
          const range = usableRange(block);
          let cursor = cursors.get(block) ?? range.first;
          while (cursor <= range.last) {
            const ip = bigIntToIp(cursor, family);
            cursor++;
            if (!used.has(ip)) {
              found = ip;
              break;
            }
          }
          cursors.set(block, cursor);
        }
      }
      if (!found) {
        plan.events.push({
          service: refOf(e.svc),
          type: 'Warning',
          reason: 'PoolExhausted',
          message: `no free ${family} address in ${candidates.length ? candidates.map((p) => `pool ${p.name}`).join(', ') : 'any pool with that family'}`,
        });
        continue;
      }
      take(found, e.id, e.settings.sharingKey, e.ports, e.policy);
      assigned.push(found);
      plan.events.push({
        service: refOf(e.svc),
        type: 'Normal',
        reason: 'AddressAssigned',
        message: `assigned ${found} from pool ${poolOf(found)?.name}`,
      });
    }
    const ordered = e.families
      .map((f) => assigned.find((ip) => ipFamily(ip) === f))
      .filter((x): x is string => !!x);
    plan.assignments.set(e.id, ordered);
    const same = ordered.length === e.current.length && ordered.every((ip, i) => ip === e.current[i]);
    if (!same || !e.allProxy) {
      plan.updates.push({ service: refOf(e.svc), ips: ordered, ipModeOnly: same });
      const dropped = e.current.filter((ip) => !ordered.includes(ip));
      if (dropped.length) {
        plan.events.push({
          service: refOf(e.svc),
          type: 'Warning',
          reason: 'AddressReleased',
          message: `released ${dropped.join(', ')}: no longer valid for this Service (pool, family, requested address or conflict)`,
        });
      }
    }
  }
  return plan;
}

export interface PoolUsage {
  pool: string;
  family: Family;
  /** Addresses the pool can hand out. */
  size: number;
  /** Of those, the ones some Service's status holds (a shared address counts once). */
  inUse: number;
}

/** Each pool's capacity and use, per family, from the Services' status as the API has it. */
export function poolUsage(pools: readonly Pool[], services: readonly LeanService[]): PoolUsage[] {
  const held = new Set(services.flatMap((s) => currentIngress(s).ips));
  return pools.flatMap((pool) =>
    (['ipv4', 'ipv6'] as const).flatMap((family) => {
      const blocks = pool.blocks.filter((b) => b.family === family);
      if (!blocks.length) return [];
      const size = blocks.reduce((n, b) => {
        const r = usableRange(b);
        return n + Number(r.last - r.first + 1n);
      }, 0);
      const inUse = [...held].filter(
        (ip) => ipFamily(ip) === family && blocks.some((b) => blockContains(b, ip)),
      ).length;
      return [{ pool: pool.name, family, size, inUse }];
    }),
  );
}
