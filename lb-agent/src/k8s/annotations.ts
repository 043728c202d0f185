// Per-Service settings through annotations, with validated values. A bad value is
// reported with the annotation and the value, never guessed at: a new Service is skipped,
// one that was valid keeps its last valid settings (translate.ts). An unknown portlb.io/
// key is a warning (a typo in a key must not take a Service down).
import type { Forwarding } from '../core/types.ts';
import { type HealthCheckSpec, parseHealthCheckText } from '../health/spec.ts';
import { SCHEDULER_FLAG_NAMES, SCHEDULERS, type SchedulerFlag } from '../ipvs/types.ts';
import { canonicalIp, ipFamily } from '../net/ip.ts';

export const ANNOTATION_PREFIX = 'portlb.io/';
export const ANNOTATIONS = {
  scheduler: 'portlb.io/scheduler',
  schedulerFlags: 'portlb.io/scheduler-flags',
  forwarding: 'portlb.io/forwarding',
  persistenceTimeout: 'portlb.io/persistence-timeout',
  persistenceNetmask: 'portlb.io/persistence-netmask',
  addressPool: 'portlb.io/address-pool',
  loadBalancerIPs: 'portlb.io/load-balancer-ips',
  allowSharedIP: 'portlb.io/allow-shared-ip',
  healthCheck: 'portlb.io/health-check',
} as const;

const KNOWN = new Set<string>(Object.values(ANNOTATIONS));
const FORWARDINGS: Forwarding[] = ['nat', 'tunnel', 'dr'];
const FLAG_ALIASES: Record<string, { flag: SchedulerFlag; scheduler?: string }> = SCHEDULER_FLAG_NAMES;

export interface ServiceSettings {
  scheduler: string | undefined;
  schedulerFlags: SchedulerFlag[] | undefined;
  forwarding: Forwarding | undefined;
  /** Seconds; 0 turns persistence off even when sessionAffinity asks for it. */
  persistenceTimeout: number | undefined;
  persistenceNetmask: number | undefined;
  addressPool: string | undefined;
  requestedIPs: string[] | undefined;
  sharingKey: string | undefined;
  /** Probed from each LB node; a failing backend gets weight 0 there. */
  healthCheck: HealthCheckSpec | undefined;
}

export type SettingsResult =
  | { ok: true; settings: ServiceSettings; warnings: string[] }
  | { ok: false; problem: string };

const bad = (name: string, value: string, why: string): SettingsResult => ({
  ok: false,
  problem: `${name}: ${why} (got ${JSON.stringify(value)})`,
});

/** Parses every portlb.io/ annotation; the first bad one makes the whole result a problem. */
export function parseAnnotations(
  annotations: Record<string, string> | undefined,
  defaultScheduler: string,
): SettingsResult {
  const a = annotations ?? {};
  const warnings: string[] = [];
  for (const key of Object.keys(a)) {
    if (key.startsWith(ANNOTATION_PREFIX) && !KNOWN.has(key)) {
      warnings.push(`unknown annotation ${key} ignored (known: ${[...KNOWN].join(', ')})`);
    }
  }
  const s: ServiceSettings = {
    scheduler: undefined,
    schedulerFlags: undefined,
    forwarding: undefined,
    persistenceTimeout: undefined,
    persistenceNetmask: undefined,
    addressPool: undefined,
    requestedIPs: undefined,
    sharingKey: undefined,
    healthCheck: undefined,
  };
  const get = (k: string) => {
    const v = a[k];
    return typeof v === 'string' ? v.trim() : undefined;
  };

  const sched = get(ANNOTATIONS.scheduler);
  if (sched !== undefined) {
    if (!(SCHEDULERS as readonly string[]).includes(sched)) {
      return bad(ANNOTATIONS.scheduler, sched, `must be one of ${SCHEDULERS.join(', ')}`);
    }
    s.scheduler = sched;
  }
  const flags = get(ANNOTATIONS.schedulerFlags);
  if (flags !== undefined) {
    const effective = s.scheduler ?? defaultScheduler;
    const out = new Set<SchedulerFlag>();
    for (const name of flags
      .split(',')
      .map((f) => f.trim())
      .filter(Boolean)) {
      const alias = FLAG_ALIASES[name];
      if (!alias)
        return bad(
          ANNOTATIONS.schedulerFlags,
          flags,
          `unknown flag ${name} (known: ${Object.keys(FLAG_ALIASES).join(', ')})`,
        );
      if (alias.scheduler && alias.scheduler !== effective) {
        return bad(
          ANNOTATIONS.schedulerFlags,
          flags,
          `${name} needs scheduler ${alias.scheduler}, the service uses ${effective}`,
        );
      }
      out.add(alias.flag);
    }
    s.schedulerFlags = [...out].sort();
  }
  const fwd = get(ANNOTATIONS.forwarding);
  if (fwd !== undefined) {
    if (!(FORWARDINGS as string[]).includes(fwd))
      return bad(ANNOTATIONS.forwarding, fwd, 'must be nat, tunnel or dr');
    s.forwarding = fwd as Forwarding;
  }
  const timeout = get(ANNOTATIONS.persistenceTimeout);
  if (timeout !== undefined) {
    if (!/^\d{1,10}$/.test(timeout) || Number(timeout) > 2147483647) {
      return bad(ANNOTATIONS.persistenceTimeout, timeout, 'must be a number of seconds (0 = off)');
    }
    s.persistenceTimeout = Number(timeout);
  }
  const netmask = get(ANNOTATIONS.persistenceNetmask);
  if (netmask !== undefined) {
    if (!/^\d{1,3}$/.test(netmask) || Number(netmask) < 1 || Number(netmask) > 128) {
      return bad(ANNOTATIONS.persistenceNetmask, netmask, 'must be a prefix length from 1 to 128');
    }
    s.persistenceNetmask = Number(netmask);
  }
  const pool = get(ANNOTATIONS.addressPool);
  if (pool !== undefined) {
    if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(pool))
      return bad(ANNOTATIONS.addressPool, pool, 'must be a pool name');
    s.addressPool = pool;
  }
  const ips = get(ANNOTATIONS.loadBalancerIPs);
  if (ips !== undefined) {
    const list = ips
      .split(',')
      .map((x) => x.trim())
      .filter(Boolean);
    const wrong = list.find((x) => !ipFamily(x));
    if (wrong !== undefined || !list.length)
      return bad(ANNOTATIONS.loadBalancerIPs, ips, 'must be a comma-separated list of IP addresses');
    const families = list.map((x) => ipFamily(x));
    if (new Set(families).size !== families.length) {
      return bad(ANNOTATIONS.loadBalancerIPs, ips, 'at most one address per family');
    }
    s.requestedIPs = list.map((x) => canonicalIp(x)!);
  }
  const key = get(ANNOTATIONS.allowSharedIP);
  if (key !== undefined) {
    if (!key || key.length > 253)
      return bad(ANNOTATIONS.allowSharedIP, key, 'must be a non-empty sharing key');
    s.sharingKey = key;
  }
  const check = get(ANNOTATIONS.healthCheck);
  if (check !== undefined) {
    const parsed = parseHealthCheckText(check);
    if (!parsed.ok) return bad(ANNOTATIONS.healthCheck, check, parsed.problem);
    s.healthCheck = parsed.spec;
  }
  return { ok: true, settings: s, warnings };
}
