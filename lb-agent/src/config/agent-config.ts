// The agent's configuration file (YAML), documented option by option in
// docs/configuration.md. Parsed once at start, validated completely (every problem names
// the option and the value), then frozen. Nothing touches the kernel before this passes.
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { FORWARDING } from '../ipvs/services-file.ts';
import { SCHEDULERS } from '../ipvs/types.ts';
import { type AddressBlock, blocksOverlap, parseAddressBlock } from '../net/pool.ts';
import { ConfigError, formatPath, intField, ipField, parseWith } from './validate.ts';

const int = intField;

/**
 * The packet mark bit that asks for SNAT (ipvs.snatMark; agent/netfilter.ts), set and
 * cleared within one packet's way through the node. Not kube-proxy's (0x4000, 0x8000),
 * Calico's (0xffff0000 by default), Cilium's (0x0f00) or Istio's (0x539).
 */
export const DEFAULT_SNAT_MARK = 0x1000;
const ip = ipField;
const duration = (min: number, max: number) => int(min, max, 'a number of seconds');

const poolSchema = z
  .object({
    name: z
      .string({ error: 'must be a name' })
      .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, { error: 'must be a DNS label (a-z, 0-9, -)' }),
    addresses: z
      .array(z.string(), { error: 'must be a list of CIDRs, ranges or addresses' })
      .min(1, { error: 'must not be empty' }),
    /** Whether Services that ask for no pool or address get addresses from this one. */
    autoAssign: z.boolean().default(true),
  })
  .strict();

const peerSchema = z
  .object({
    address: ip,
    asn: int(1, 4294967295, 'an AS number'),
    port: int(1, 65535, 'a port').default(179),
    /** File holding the TCP MD5 password (a mounted Secret); never inline. */
    passwordFile: z.string().optional(),
    holdTime: z
      .number({ error: 'must be 0 or from 3 to 65535 seconds' })
      .refine((v) => Number.isInteger(v) && (v === 0 || (v >= 3 && v <= 65535)), {
        error: 'must be 0 or from 3 to 65535 seconds',
      })
      .default(9),
    keepaliveInterval: int(0, 21845, 'a number of seconds').optional(),
    ebgpMultihopTtl: int(1, 255).optional(),
    gracefulRestartTime: int(1, 4095, 'a number of seconds').optional(),
    families: z.array(z.enum(['ipv4', 'ipv6'], { error: 'must be ipv4 or ipv6' })).optional(),
    localAddress: ip.optional(),
    passive: z.boolean().default(false),
    description: z.string().optional(),
    /** A BFD session toward this peer (needs the bfd section); every peer has one by default when bfd is set. */
    bfd: z.boolean({ error: 'must be true or false' }).optional(),
  })
  .strict();

const bfdSchema = z
  .object({
    /** The BFD-only BIRD's control socket (the bfd container's, in a volume both share). */
    socket: z.string().min(1).default('/run/portlb/bird-bfd.ctl'),
    /** Where the agent writes that BIRD's configuration (same volume). */
    configFile: z.string().min(1).default('/run/portlb/bird-bfd.conf'),
    /** Desired transmit and receive interval, every peer (BIRD sets timers per interface, not per neighbour). */
    intervalMs: int(10, 10_000, 'a number of milliseconds').default(300),
    /** Missed packets before a session is declared down. */
    multiplier: int(2, 255).default(3),
    /**
     * The dead-man switch: BFD is let out only while the agent keeps proving it is live; a
     * frozen, wedged or dead agent takes its node out of ECMP within this plus the router's
     * detection time. 0 turns it off.
     */
    deadManSeconds: int(0, 600, 'a number of seconds').default(2),
    /** A sync pass running longer than this counts as wedged (the switch holds BFD down). */
    maxPassSeconds: duration(1, 3600).default(30),
  })
  .strict();

const communityList = z.array(
  z
    .string()
    .regex(/^\d{1,5}:\d{1,5}$/, { error: 'must be "asn:value"' })
    .refine((c) => c.split(':').every((p) => Number(p) <= 65535), { error: 'both parts must be 0..65535' }),
);

const schema = z
  .object({
    mode: z
      .enum(['kubernetes', 'standalone'], { error: 'must be kubernetes or standalone' })
      .default('kubernetes'),
    nodeName: z.string().optional(),
    kubernetes: z
      .object({
        loadBalancerClass: z.string().min(1).default('portlb.io/portlb'),
        /** Also serve LoadBalancer Services that name no class (portlb as the cluster's default). */
        serveServicesWithoutClass: z.boolean().default(false),
        leaderElection: z
          .object({
            enabled: z.boolean().default(true),
            /** The Lease's namespace; the pod's own (POD_NAMESPACE) when unset. */
            namespace: z.string().min(1).optional(),
            leaseName: z.string().default('portlb-controller'),
            leaseDurationSeconds: duration(2, 3600).default(15),
            renewDeadlineSeconds: duration(1, 3600).default(10),
            retryPeriodSeconds: duration(1, 600).default(2),
          })
          .strict()
          .prefault({}),
        kubeconfig: z.string().optional(),
        /** Pools from PortlbAddressPool objects too, applied live (k8s/pool-objects.ts). */
        poolObjects: z.boolean().default(true),
        /** BGP peers from PortlbBgpPeer objects too, applied live (k8s/peer-objects.ts). */
        peerObjects: z.boolean().default(true),
        /** This node's PortlbNodeStatus object (k8s/node-status.ts). */
        nodeStatus: z
          .object({
            enabled: z.boolean().default(true),
            /** At most one write per interval, and only when something changed. */
            intervalSeconds: duration(1, 3600).default(10),
            /** Rewritten unchanged this often, so a reader can tell a stale object. */
            refreshSeconds: duration(10, 86400).default(300),
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    standalone: z.object({ servicesFile: z.string() }).strict().optional(),
    pools: z.array(poolSchema).default([]),
    defaults: z
      .object({
        scheduler: z
          .enum(SCHEDULERS, { error: `must be a scheduler: ${SCHEDULERS.join(', ')}` })
          .default('mh'),
        forwarding: z.enum(FORWARDING, { error: `must be one of ${FORWARDING.join(', ')}` }).default('nat'),
        drainTimeoutSeconds: duration(0, 86400).default(60),
      })
      .strict()
      .prefault({}),
    bgp: z
      .object({
        asn: int(1, 4294967295, 'an AS number'),
        routerId: ip.optional(),
        listenPort: z
          .number({ error: 'must be -1 (no listener) or a port from 1 to 65535' })
          .refine((v) => v === -1 || (Number.isInteger(v) && v >= 1 && v <= 65535), {
            error: 'must be -1 (no listener) or a port from 1 to 65535',
          })
          .default(-1),
        listenAddresses: z.array(ip).default([]),
        speakerSocket: z.string().default('unix:///run/portlb/gobgp.sock'),
        peers: z.array(peerSchema).default([]),
        communities: communityList.default([]),
        gracefulShutdownSeconds: duration(0, 600).default(10),
      })
      .strict()
      .optional(),
    bfd: bfdSchema.optional(),
    ipvs: z
      .object({
        sysctlPath: z.string().default('/proc/sys/net/ipv4/vs'),
        vipInterface: z
          .string()
          .regex(/^[a-zA-Z0-9_.-]{1,15}$/, { error: 'must be an interface name (1-15 characters)' })
          .default('portlb0'),
        /** Which netfilter portlb writes its rules (SNAT, the VIP filter) with. */
        netfilter: z
          .enum(['auto', 'nftables', 'iptables'], { error: 'must be auto, nftables or iptables' })
          .default('auto'),
        /** `none`: no SNAT for NAT-mode services; nftables/iptables: the backend (as ipvs.netfilter). */
        snat: z
          .enum(['auto', 'nftables', 'iptables', 'none'], {
            error: 'must be auto, nftables, iptables or none',
          })
          .default('auto'),
        /** The packet mark bit that asks for SNAT (DEFAULT_SNAT_MARK): one bit no other component on the node uses. */
        snatMark: z
          .number({ error: 'must be one bit of a packet mark, e.g. 0x1000' })
          .int({ error: 'must be one bit of a packet mark, e.g. 0x1000' })
          .refine((n) => n > 0 && n <= 0x80000000 && (n & (n - 1)) === 0, {
            error: 'must be one bit of a packet mark (a power of two up to 0x80000000), e.g. 0x1000',
          })
          .default(DEFAULT_SNAT_MARK),
        /** New traffic to a VIP only for its service ports (host listeners never answer on a VIP). */
        vipFilter: z.boolean({ error: 'must be true or false' }).default(true),
        /**
         * How long IPVS keeps a TCP connection after the client's FIN (ipvsadm --set's
         * tcpfin; the kernel's default is 120 s); 0 leaves the kernel's value. See
         * docs/configuration.md: a long one lets a closed connection's entry send a reused
         * client port to an old backend.
         */
        tcpFinTimeoutSeconds: int(0, 86400, 'a number of seconds').default(15),
      })
      .strict()
      .prefault({}),
    http: z
      .object({
        /** `node` as the host: this node's address (never every address: nothing of the agent on a VIP). */
        listen: z.string().default('node:9180'),
      })
      .strict()
      .prefault({}),
    sync: z
      .object({
        /** The longest wait between two passes: a pass waits as long as the last one took, at most this. */
        minIntervalMs: int(0, 60_000).default(200),
        resyncSeconds: duration(1, 86_400).default(60),
        retryMaxSeconds: duration(1, 3600).default(30),
        /** How often portlb's netfilter objects are rewritten as a whole (repairing an external flush). */
        netfilterResyncSeconds: duration(5, 86_400).default(60),
        /** /healthz fails when no pass completed (or the kernel was unknown) for this many resync intervals. */
        livenessResyncs: int(2, 100).default(3),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type RawAgentConfig = z.output<typeof schema>;

export interface Pool {
  name: string;
  blocks: AddressBlock[];
  autoAssign: boolean;
}

export interface AgentConfig extends Omit<RawAgentConfig, 'pools'> {
  pools: Pool[];
}

/**
 * One pool's addresses checked, and checked against the pools before it (a name taken, an
 * overlap): the configuration file's pools and PortlbAddressPool objects alike.
 */
export function checkPool(
  p: z.output<typeof poolSchema>,
  before: readonly Pool[],
  at: readonly PropertyKey[],
): { pool: Pool; problems: string[]; conflicts: string[] } {
  const problems: string[] = [];
  const conflicts: string[] = [];
  const taken = before.find((o) => o.name === p.name);
  if (taken) conflicts.push(`${formatPath([...at, 'name'])}: duplicate pool name "${p.name}"`);
  const blocks: AddressBlock[] = [];
  p.addresses.forEach((text, j) => {
    const block = parseAddressBlock(text);
    if (typeof block === 'string') {
      problems.push(`${formatPath([...at, 'addresses', j])}: ${block}`);
      return;
    }
    for (const other of before) {
      const clash = other.blocks.find((b) => blocksOverlap(b, block));
      if (clash)
        conflicts.push(
          `${formatPath([...at, 'addresses', j])}: "${text}" overlaps "${clash.text}" of pool ${other.name}`,
        );
    }
    blocks.push(block);
  });
  return { pool: { name: p.name, blocks, autoAssign: p.autoAssign }, problems, conflicts };
}

export type PeerFields = z.output<typeof peerSchema>;

/** One BGP peer's checks beyond its schema: the configuration file's peers and PortlbBgpPeer objects alike. */
export function checkPeer(p: PeerFields, at: readonly PropertyKey[], bfdSection: boolean): string[] {
  const problems: string[] = [];
  if (p.keepaliveInterval !== undefined && p.holdTime > 0 && p.keepaliveInterval >= p.holdTime)
    problems.push(
      `${formatPath([...at, 'keepaliveInterval'])}: must be below holdTime ${p.holdTime} (got ${p.keepaliveInterval})`,
    );
  if (p.bfd && !bfdSection)
    problems.push(
      `${formatPath([...at, 'bfd'])}: true needs the bfd section (bfd: {} for the defaults) and the bfd container`,
    );
  if (p.passwordFile !== undefined) {
    try {
      readFileSync(p.passwordFile);
    } catch (err) {
      problems.push(
        `${formatPath([...at, 'passwordFile'])}: cannot read ${JSON.stringify(p.passwordFile)}: ${(err as NodeJS.ErrnoException).code}`,
      );
    }
  }
  return problems;
}

/** A peer's fields (a PortlbBgpPeer's spec) through the file's schema. */
export function parsePeerFields(data: unknown, source: string): PeerFields {
  return parseWith(peerSchema, data, source);
}

/** A pool's fields (a PortlbAddressPool's spec plus its name) through the file's schema. */
export function parsePoolFields(data: unknown, source: string): z.output<typeof poolSchema> {
  return parseWith(poolSchema, data, source);
}

/** Checks that need several options at once; every problem is collected. */
function crossCheck(raw: RawAgentConfig, source: string): AgentConfig {
  const problems: string[] = [];
  const pools: Pool[] = [];
  raw.pools.forEach((p, i) => {
    const checked = checkPool(p, pools, ['pools', i]);
    problems.push(...checked.conflicts, ...checked.problems);
    pools.push(checked.pool);
  });
  if (raw.mode === 'standalone' && !raw.standalone)
    problems.push('standalone: required with mode: standalone (standalone.servicesFile)');
  if (!pools.length && (raw.mode === 'standalone' || !raw.kubernetes.poolObjects))
    problems.push(
      raw.mode === 'kubernetes'
        ? 'pools: at least one pool is needed to give Services addresses (or kubernetes.poolObjects: true, for PortlbAddressPool objects)'
        : "pools: at least one pool is needed: the agent programs, and deletes, only addresses inside its pools (the services file's must lie within them)",
    );
  const le = raw.kubernetes.leaderElection;
  if (le.renewDeadlineSeconds >= le.leaseDurationSeconds) {
    problems.push(
      `kubernetes.leaderElection.renewDeadlineSeconds: must be below leaseDurationSeconds (${le.leaseDurationSeconds}) (got ${le.renewDeadlineSeconds})`,
    );
  }
  if (le.retryPeriodSeconds >= le.renewDeadlineSeconds) {
    problems.push(
      `kubernetes.leaderElection.retryPeriodSeconds: must be below renewDeadlineSeconds (${le.renewDeadlineSeconds}) (got ${le.retryPeriodSeconds})`,
    );
  }
  raw.bgp?.peers.forEach((p, i) => {
    problems.push(...checkPeer(p, ['bgp', 'peers', i], !!raw.bfd));
  });
  if (raw.bfd && !raw.bgp) problems.push('bfd: needs the bgp section (BFD runs toward the BGP peers)');
  if (raw.bgp && !raw.bgp.speakerSocket.startsWith('unix://')) {
    problems.push(
      `bgp.speakerSocket: must be a unix socket (unix:///path): gobgpd's API is never put on a network port (got ${JSON.stringify(raw.bgp.speakerSocket)})`,
    );
  }
  if (!/^(\[[0-9a-fA-F:]+\]|[0-9.]+|[a-zA-Z0-9.-]+)?:\d{1,5}$/.test(raw.http.listen)) {
    problems.push(
      `http.listen: must be host:port, e.g. node:9180 or 127.0.0.1:9180 (got ${JSON.stringify(raw.http.listen)})`,
    );
  }
  if (problems.length) throw new ConfigError('CONFIG_INVALID', source, problems);
  return deepFreeze({ ...raw, pools });
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

export function parseAgentConfig(data: unknown, source: string): AgentConfig {
  return crossCheck(parseWith(schema, data ?? {}, source), source);
}

/** Reads a peer's MD5 password from its file (trailing newline trimmed). */
export function readPassword(file: string | undefined): string | undefined {
  if (file === undefined) return undefined;
  return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
}
