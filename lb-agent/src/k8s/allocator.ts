// VIP allocation, pure: from all Services and the configured pools to the status each of
// our Services should carry, and the Events that explain it. Only the leader applies the
// result. Existing assignments are kept whenever they are still valid (a VIP never moves
// under live traffic because another Service changed); older Services win conflicts.
import type { V1Service } from '@kubernetes/client-node';
import type { Pool } from '../config/agent-config.ts';
import { bigIntToIp, canonicalIp, type Family, ipFamily } from '../net/ip.ts';
import { type AddressBlock, blockContains } from '../net/pool.ts';
import { parseAnnotations, type ServiceSettings } from './annotations.ts';
import { isOurs, serviceKey } from './translate.ts';

export interface ServiceRef {
  namespace: string;
  name: string;
  uid: string | undefined;
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
  defaultScheduler: string;
}

const refOf = (s: V1Service): ServiceRef => ({
  namespace: s.metadata?.namespace ?? '',
  name: s.metadata?.name ?? '',
  uid: s.metadata?.uid ?? undefined,
});

const FAMILY: Record<string, Family> = { IPv4: 'ipv4', IPv6: 'ipv6' };

function wantedFamilies(svc: V1Service): Family[] {
  const listed = (svc.spec?.ipFamilies ?? []).map((f) => FAMILY[f]).filter((f): f is Family => !!f);
  const families = listed.length ? [...new Set(listed)] : (['ipv4'] as Family[]);
  const policy = svc.spec?.ipFamilyPolicy ?? 'SingleStack';
  return policy === 'SingleStack' ? families.slice(0, 1) : families;
}

function portClaims(svc: V1Service): string[] {
  return (svc.spec?.ports ?? []).map((p) => `${p?.protocol ?? 'TCP'}/${p?.port}`);
}

function currentIngress(svc: V1Service): { ips: string[]; allProxy: boolean } {
  const ingress = svc.status?.loadBalancer?.ingress ?? [];
  const ips = ingress.map((i) => (i?.ip ? canonicalIp(i.ip) : undefined)).filter((x): x is string => !!x);
  return { ips, allProxy: ingress.every((i) => i?.ipMode === 'Proxy') };
}

function createdAt(svc: V1Service): number {
  const t = svc.metadata?.creationTimestamp as unknown;
  const ms = t instanceof Date ? t.getTime() : typeof t === 'string' ? Date.parse(t) : Number.NaN;
  return Number.isNaN(ms) ? Number.MAX_SAFE_INTEGER : ms;
}

/** IPv4 CIDRs wider than /31 skip their network and broadcast addresses. */
function usableRange(block: AddressBlock): { first: bigint; last: bigint } {
  const size = block.last - block.first + 1n;
  const isCidr = !block.text.includes('-') && block.text.includes('/');
  if (block.family === 'ipv4' && isCidr && size >= 4n)
    return { first: block.first + 1n, last: block.last - 1n };
  return { first: block.first, last: block.last };
}

interface Holder {
  ids: Set<string>;
  sharingKey: string | undefined;
  ports: Set<string>;
}

export function planAllocations(
  services: readonly V1Service[],
  pools: readonly Pool[],
  cfg: AllocatorConfig,
): AllocationPlan {
  const plan: AllocationPlan = { updates: [], events: [], assignments: new Map() };
  const inPools = (ip: string) => pools.some((p) => p.blocks.some((b) => blockContains(b, ip)));
  const poolOf = (ip: string) => pools.find((p) => p.blocks.some((b) => blockContains(b, ip)));
  const used = new Map<string, Holder>();

  const compatible = (
    ip: string,
    id: string,
    key: string | undefined,
    ports: string[],
  ): string | undefined => {
    const h = used.get(ip);
    if (!h || (h.ids.size === 1 && h.ids.has(id))) return undefined;
    const others = [...h.ids].filter((x) => x !== id).join(', ');
    if (!key || h.sharingKey !== key)
      return `${ip} is used by ${others} (share it with portlb.io/allow-shared-ip set to the same key on both)`;
    const clash = ports.find((p) => h.ports.has(p));
    if (clash) return `${ip} is shared with ${others}, which already uses ${clash}`;
    return undefined;
  };
  const take = (ip: string, id: string, key: string | undefined, ports: string[]) => {
    const h = used.get(ip) ?? { ids: new Set<string>(), sharingKey: key, ports: new Set<string>() };
    h.ids.add(id);
    for (const p of ports) h.ports.add(p);
    used.set(ip, h);
  };

  interface Entry {
    svc: V1Service;
    id: string;
    settings: ServiceSettings;
    families: Family[];
    ports: string[];
    kept: string[];
    current: string[];
    allProxy: boolean;
  }
  const entries: Entry[] = [];
  for (const svc of services) {
    const id = serviceKey(svc);
    const { ips: current, allProxy } = currentIngress(svc);
    if (!isOurs(svc, cfg)) {
      // No longer ours (type or class changed, or never was) but carrying an address we gave: release it.
      const ours = current.filter(inPools);
      if (ours.length) {
        plan.updates.push({ service: refOf(svc), ips: current.filter((ip) => !inPools(ip)) });
        plan.events.push({
          service: refOf(svc),
          type: 'Normal',
          reason: 'AddressReleased',
          message: `portlb no longer serves this Service; released ${ours.join(', ')}`,
        });
      }
      continue;
    }
    const parsed = parseAnnotations(svc.metadata?.annotations, cfg.defaultScheduler);
    if (!parsed.ok) {
      plan.events.push({
        service: refOf(svc),
        type: 'Warning',
        reason: 'InvalidAnnotation',
        message: parsed.problem,
      });
      // Keep what it has: a typo must not take an address away from live traffic.
      for (const ip of current.filter(inPools)) take(ip, id, undefined, portClaims(svc));
      plan.assignments.set(id, current);
      continue;
    }
    entries.push({
      svc,
      id,
      settings: parsed.settings,
      families: wantedFamilies(svc),
      ports: portClaims(svc),
      kept: [],
      current,
      allProxy,
    });
  }
  entries.sort((a, b) => createdAt(a.svc) - createdAt(b.svc) || (a.id < b.id ? -1 : 1));

  const requestedOf = (e: Entry): string[] => {
    const r = e.settings.requestedIPs ?? [];
    const legacy = e.svc.spec?.loadBalancerIP ? canonicalIp(e.svc.spec.loadBalancerIP) : undefined;
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
      if (compatible(ip, e.id, e.settings.sharingKey, e.ports)) continue;
      take(ip, e.id, e.settings.sharingKey, e.ports);
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
        const conflict = compatible(want, e.id, e.settings.sharingKey, e.ports);
        if (conflict) {
          plan.events.push({
            service: refOf(e.svc),
            type: 'Warning',
            reason: 'AddressConflict',
            message: `requested ${conflict}`,
          });
          continue;
        }
        take(want, e.id, e.settings.sharingKey, e.ports);
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
            !compatible(ip, e.id, e.settings.sharingKey, e.ports)
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
      take(found, e.id, e.settings.sharingKey, e.ports);
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
      plan.updates.push({ service: refOf(e.svc), ips: ordered });
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
