// The declarative services file of `portlb ipvs apply` (a declarative ipvsadm), documented
// in docs/services-file.md. Parsed once, validated completely, frozen; every error names
// the field and the value.
import { z } from 'zod';
import { ConfigError, formatPath, intField, ipField, parseWith } from '../config/validate.ts';
import { type HealthCheckSpec, healthCheckSchema, toSpec } from '../health/spec.ts';
import { canonicalIp, type Family, ipFamily } from '../net/ip.ts';
import { type AddressBlock, blockContains, blocksOverlap, parseAddressBlock } from '../net/pool.ts';
import type { Ownership } from './planner.ts';
import {
  destinationId,
  type ForwardMethod,
  type RealServer,
  SCHEDULER_FLAG_NAMES,
  SCHEDULERS,
  type SchedulerFlag,
  type SchedulerFlagName,
  type ServiceKey,
  type ServiceSpec,
  serviceId,
} from './types.ts';

const int = intField;
const ip = ipField;

export const FORWARDING = ['nat', 'tunnel', 'dr'] as const;
const forwarding = z.enum(FORWARDING, { error: `must be one of ${FORWARDING.join(', ')}` });
const scheduler = z.enum(SCHEDULERS, { error: `must be a scheduler: ${SCHEDULERS.join(', ')}` });
const FLAG_NAMES = Object.keys(SCHEDULER_FLAG_NAMES) as [SchedulerFlagName, ...SchedulerFlagName[]];

const backendSchema = z
  .object({
    address: ip,
    port: int(0, 65535, 'a port').optional(),
    weight: int(0, 65535).default(1),
    upperThreshold: int(0, 2147483647).default(0),
    lowerThreshold: int(0, 2147483647).default(0),
    forwarding: forwarding.optional(),
    tunnelType: z.enum(['ipip', 'gue', 'gre'], { error: 'must be one of ipip, gue, gre' }).optional(),
    tunnelPort: int(1, 65535, 'a port').optional(),
    /** false: the backend is kept out (drained), as an unready endpoint is in Kubernetes. */
    ready: z.boolean({ error: 'must be true or false' }).default(true),
  })
  .strict();

const serviceSchema = z
  .object({
    name: z.string().optional(),
    vip: ip.optional(),
    port: int(1, 65535, 'a port').optional(),
    protocol: z.enum(['tcp', 'udp', 'sctp'], { error: 'must be one of tcp, udp, sctp' }).default('tcp'),
    fwmark: int(1, 0xffffffff).optional(),
    family: z.enum(['ipv4', 'ipv6'], { error: 'must be ipv4 or ipv6' }).optional(),
    scheduler: scheduler.optional(),
    schedulerFlags: z
      .array(z.enum(FLAG_NAMES, { error: `must be one of ${FLAG_NAMES.join(', ')}` }))
      .default([]),
    onePacket: z.boolean().default(false),
    persistence: z
      .object({
        timeout: int(1, 2147483647, 'a number of seconds'),
        netmask: z.union([z.number(), z.string()]).optional(),
      })
      .strict()
      .optional(),
    forwarding: forwarding.optional(),
    /** Agent (standalone mode): whether this VIP may be announced over BGP. */
    announce: z.boolean({ error: 'must be true or false' }).default(true),
    backends: z.array(backendSchema).default([]),
    /** Agent: probed from the LB node; a failing backend gets weight 0 (docs/health-checks.md). */
    healthCheck: healthCheckSchema.optional(),
  })
  .strict();

const fileSchema = z
  .object({
    pools: z.array(z.string(), { error: 'must be a list of CIDRs or ranges' }).min(1, {
      error: 'must name at least one CIDR or range: portlb only manages (and deletes) services in its pools',
    }),
    fwmarks: z.string().optional(),
    defaults: z
      .object({ scheduler: scheduler.default('mh'), forwarding: forwarding.default('nat') })
      .strict()
      .prefault({}),
    services: z.array(serviceSchema).default([]),
  })
  .strict();

export type RawServicesFile = z.output<typeof fileSchema>;

export interface ServiceDefinition extends ServiceSpec {
  name: string | undefined;
  /** Position in the file, for messages. */
  index: number;
  announce: boolean;
  /** Backends marked ready: false, left out of `destinations` (so they drain). */
  notReady: RealServer[];
  healthCheck: HealthCheckSpec | undefined;
}

export interface ServicesFile {
  pools: readonly AddressBlock[];
  fwmarks: { first: number; last: number } | undefined;
  services: readonly ServiceDefinition[];
}

function parseNetmask(value: number | string | undefined, family: Family): number | string {
  const full = family === 'ipv4' ? 32 : 128;
  if (value === undefined) return full;
  if (typeof value === 'number') {
    return Number.isInteger(value) && value >= 1 && value <= full
      ? value
      : `must be a prefix length from 1 to ${full}`;
  }
  if (family === 'ipv4' && ipFamily(value) === 'ipv4') {
    const bits = value.split('.').map(Number);
    const mask = ((bits[0]! << 24) | (bits[1]! << 16) | (bits[2]! << 8) | bits[3]!) >>> 0;
    const inverted = ~mask >>> 0;
    if ((inverted & (inverted + 1)) === 0 && mask !== 0) return 32 - Math.log2(inverted + 1);
  }
  return `must be a prefix length${family === 'ipv4' ? ' or a contiguous IPv4 netmask' : ''}`;
}

function parseFwmarkRange(text: string): { first: number; last: number } | undefined {
  const m = /^\s*(\d+)\s*(?:-\s*(\d+))?\s*$/.exec(text);
  if (!m) return undefined;
  const first = Number(m[1]);
  const last = m[2] === undefined ? first : Number(m[2]);
  if (first < 1 || last > 0xffffffff || first > last) return undefined;
  return { first, last };
}

/** Cross-field checks and conversion to ServiceSpecs; collects every problem it finds. */
export function buildServicesFile(raw: RawServicesFile, source: string): ServicesFile {
  const problems: string[] = [];
  const at = (...path: PropertyKey[]) => formatPath(path);

  const pools: AddressBlock[] = [];
  raw.pools.forEach((text, i) => {
    const block = parseAddressBlock(text);
    if (typeof block === 'string') problems.push(`${at('pools', i)}: ${block}`);
    else {
      const clash = pools.find((p) => blocksOverlap(p, block));
      if (clash) problems.push(`${at('pools', i)}: "${text}" overlaps "${clash.text}"`);
      pools.push(block);
    }
  });
  let fwmarks: ServicesFile['fwmarks'];
  if (raw.fwmarks !== undefined) {
    fwmarks = parseFwmarkRange(raw.fwmarks);
    if (!fwmarks)
      problems.push(
        `fwmarks: must be a number or a range like 1000-1999 (got ${JSON.stringify(raw.fwmarks)})`,
      );
  }

  const seen = new Map<string, number>();
  const services: ServiceDefinition[] = [];
  raw.services.forEach((s, i) => {
    const before = problems.length;
    let key: ServiceKey | undefined;
    if (s.fwmark !== undefined) {
      if (s.vip !== undefined || s.port !== undefined) {
        problems.push(`${at('services', i)}: give either fwmark (with family) or vip and port, not both`);
      } else if (!fwmarks || s.fwmark < fwmarks.first || s.fwmark > fwmarks.last) {
        problems.push(
          `${at('services', i, 'fwmark')}: ${s.fwmark} is outside the owned range (fwmarks: ${raw.fwmarks ?? 'not set'})`,
        );
      } else key = { kind: 'fwmark', family: s.family ?? 'ipv4', fwmark: s.fwmark };
    } else if (s.vip === undefined || s.port === undefined) {
      problems.push(`${at('services', i)}: needs vip and port (or fwmark)`);
    } else {
      const family = ipFamily(s.vip)!;
      if (s.family && s.family !== family)
        problems.push(`${at('services', i, 'family')}: ${s.family} does not match vip ${s.vip}`);
      if (!pools.some((p) => blockContains(p, s.vip!))) {
        problems.push(
          `${at('services', i, 'vip')}: ${s.vip} is outside every pool (${raw.pools.join(', ')})`,
        );
      }
      key = { kind: 'address', family, protocol: s.protocol, address: canonicalIp(s.vip)!, port: s.port };
    }
    const sched = s.scheduler ?? raw.defaults.scheduler;
    const flags = new Set<SchedulerFlag>();
    s.schedulerFlags.forEach((name, j) => {
      const meaning: { flag: SchedulerFlag; scheduler?: string } = SCHEDULER_FLAG_NAMES[name];
      if (meaning.scheduler && meaning.scheduler !== sched) {
        problems.push(
          `${at('services', i, 'schedulerFlags', j)}: ${name} needs scheduler ${meaning.scheduler} (got ${sched})`,
        );
      }
      flags.add(meaning.flag);
    });
    const family = key?.family ?? 'ipv4';
    let persistence: ServiceSpec['service']['persistence'];
    if (s.persistence) {
      const prefix = parseNetmask(s.persistence.netmask, family);
      if (typeof prefix === 'string') {
        problems.push(
          `${at('services', i, 'persistence', 'netmask')}: ${prefix} (got ${JSON.stringify(s.persistence.netmask)})`,
        );
      } else persistence = { timeout: s.persistence.timeout, prefix };
    }
    const destinations: RealServer[] = [];
    const notReady: RealServer[] = [];
    const destSeen = new Set<string>();
    s.backends.forEach((b, j) => {
      const bfamily = ipFamily(b.address)!;
      const forward: ForwardMethod = b.forwarding ?? s.forwarding ?? raw.defaults.forwarding;
      if (bfamily !== family && forward !== 'tunnel') {
        problems.push(
          `${at('services', i, 'backends', j, 'address')}: ${b.address} is ${bfamily} but the service is ${family}; mixing families needs forwarding: tunnel`,
        );
      }
      if (b.lowerThreshold > b.upperThreshold) {
        problems.push(
          `${at('services', i, 'backends', j, 'lowerThreshold')}: ${b.lowerThreshold} is above upperThreshold ${b.upperThreshold}`,
        );
      }
      if ((b.tunnelType || b.tunnelPort) && forward !== 'tunnel') {
        problems.push(
          `${at('services', i, 'backends', j)}: tunnelType/tunnelPort need forwarding: tunnel (got ${forward})`,
        );
      }
      if (b.tunnelType === 'gue' && !b.tunnelPort) {
        problems.push(`${at('services', i, 'backends', j, 'tunnelPort')}: tunnelType gue needs a tunnelPort`);
      }
      const port = b.port ?? s.port ?? 0;
      const dest: RealServer = {
        family: bfamily,
        address: canonicalIp(b.address)!,
        port,
        forward,
        weight: b.weight,
        upperThreshold: b.upperThreshold,
        lowerThreshold: b.lowerThreshold,
      };
      if (forward === 'tunnel') {
        dest.tunnelType = b.tunnelType ?? 'ipip';
        if (b.tunnelPort) dest.tunnelPort = b.tunnelPort;
      }
      const did = destinationId(dest);
      if (destSeen.has(did)) problems.push(`${at('services', i, 'backends', j)}: duplicate backend ${did}`);
      destSeen.add(did);
      (b.ready ? destinations : notReady).push(dest);
    });
    if (key) {
      const id = serviceId(key);
      const first = seen.get(id);
      if (first !== undefined)
        problems.push(`${at('services', i)}: duplicate service ${id} (also services[${first}])`);
      else seen.set(id, i);
    }
    if (problems.length === before && key) {
      services.push({
        name: s.name,
        index: i,
        announce: s.announce,
        notReady,
        healthCheck: s.healthCheck && toSpec(s.healthCheck),
        service: {
          key,
          scheduler: sched,
          schedulerFlags: [...flags].sort(),
          onePacket: s.onePacket,
          persistence,
          persistenceEngine: undefined,
        },
        destinations,
      });
    }
  });
  if (problems.length) throw new ConfigError('CONFIG_INVALID', source, problems);
  return Object.freeze({ pools: Object.freeze(pools), fwmarks, services: Object.freeze(services) });
}

export function parseServicesFile(data: unknown, source: string): ServicesFile {
  return buildServicesFile(parseWith(fileSchema, data, source), source);
}

/** The ownership predicate of a file: its pools and its fwmark range. */
export function fileOwnership(file: Pick<ServicesFile, 'pools' | 'fwmarks'>): Ownership {
  return (key) => {
    if (key.kind === 'fwmark')
      return !!file.fwmarks && key.fwmark >= file.fwmarks.first && key.fwmark <= file.fwmarks.last;
    return file.pools.some((p) => blockContains(p, key.address));
  };
}
