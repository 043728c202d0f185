// portlb's netfilter rules, in tables and chains of its own; nothing else in the ruleset is
// touched. A change is written as what it adds and removes (set members, SNAT rules); the
// first write, a large change and a repair replace them as a whole. Three kinds:
// - SNAT for NAT-mode services reaching backends anywhere: the backend must reply through
//   this node, so traffic IPVS forwards for a VIP leaves with the node's address. As
//   kube-proxy does it: a connection's first packet to a NAT service's VIP:port (a set)
//   gets a mark bit before routing (nat prerouting), and one rule masquerades what IPVS
//   forwards with that bit (nat postrouting), clearing it. A rule per service made every
//   new connection walk them all, and legacy iptables rewrites its whole nat table for
//   each change (a Service created at 50,000 NAT Services: 34 s in UML).
// - The VIP filter (DESIGN.md decision 17): a VIP is a local address, so every host
//   listener (sshd, the kubelet, gobgpd's 179) would answer on it. New traffic to a VIP is
//   accepted only for the protocols and ports programmed on it (ICMP too), and dropped
//   otherwise, before IPVS or any socket sees it (kube-proxy's KUBE-IPVS-FILTER lesson).
// - No conntrack for tunnel/dr service ports (core/desired.ts says why): a raw-table rule
//   ahead of conntrack.
// Two backends: nftables (sets, one atomic transaction per family) and, where the kernel
// has no nftables ip family (UML's), legacy iptables with ipset (hash sets for SNAT and
// the filter, so a packet costs the same with 10,000 VIPs as with one).
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { GUARD_TABLE } from '../bfd/dead-man.ts';
import { DEFAULT_SNAT_MARK } from '../config/agent-config.ts';
import { PortlbError } from '../errors.ts';
import type { Family } from '../net/ip.ts';
import { ensureJumpFirst, feed } from '../util/feed.ts';

const run = promisify(execFile);

export interface PortRule {
  vip: string;
  family: Family;
  port: number;
  protocol: 'tcp' | 'udp' | 'sctp';
}

export interface NetfilterRules {
  /** NAT-mode services whose traffic to backends leaves with the node's address. */
  snat: PortRule[];
  /** Every programmed VIP port: the only new traffic a VIP accepts. Empty when the filter is off. */
  filter: PortRule[];
  /** Tunnel/dr service ports: kept out of conntrack. */
  notrack: PortRule[];
}

export class NetfilterError extends PortlbError<'NETFILTER_UNAVAILABLE' | 'NETFILTER_APPLY_FAILED'> {}

/**
 * What an apply wrote: nothing; the change alone (members and rules added and removed);
 * or everything (the first write, a large change, or a change the kernel refused because
 * its rules were not what was applied).
 */
export type NetfilterWrite = 'unchanged' | 'updated' | 'replaced';

export interface NetfilterManager {
  readonly kind: string;
  /**
   * Makes portlb's rules exactly these; returns what it wrote. Rules equal to the applied
   * ones return at once, even while a repair is writing.
   */
  apply(rules: NetfilterRules): Promise<NetfilterWrite>;
  /**
   * Reads the rules last applied back and rewrites them as a whole when something of them
   * was lost (undoing an external flush): returns what was lost, undefined when nothing
   * (or nothing was applied yet). Serialised with apply: a change waits for a repair in
   * progress.
   */
  repair(): Promise<string | undefined>;
}

export const SNAT_CHAIN = 'PORTLB-SNAT';
/** nat PREROUTING: the mark bit on a first packet to a NAT service's VIP:port. */
export const SNAT_MARK_CHAIN = 'PORTLB-SNAT-MARK';
const hex = (n: number) => `0x${n.toString(16)}`;
export const FILTER_CHAIN = 'PORTLB-FILTER';
export const NOTRACK_CHAIN = 'PORTLB-NOTRACK';
export const NFT_TABLE = 'portlb';
/** ipset names (legacy backend). */
export const SETS = {
  ipv4: {
    vips: 'portlb-vips4',
    services: 'portlb-services4',
    notrack: 'portlb-notrack4',
    snat: 'portlb-snat4',
  },
  ipv6: {
    vips: 'portlb-vips6',
    services: 'portlb-services6',
    notrack: 'portlb-notrack6',
    snat: 'portlb-snat6',
  },
} as const;

const ruleText = (r: PortRule) => `${r.vip}|${r.protocol}|${r.port}`;
/**
 * A rule as a member of an ipset (hash:ip,port) and of an nft set (address . proto . port).
 * ipset gets the protocol's number: a name costs it a read of /etc/protocols per member,
 * six system calls (at 10,000 Services, 70,000 members, tens of seconds in UML).
 */
const IPSET_PROTOCOL = { tcp: 6, udp: 17, sctp: 132 } as const;
const ipsetMember = (r: PortRule) => `${r.vip},${IPSET_PROTOCOL[r.protocol]}:${r.port}`;
const nftMember = (r: PortRule) => `${r.vip} . ${r.protocol} . ${r.port}`;

const ofFamily = <T extends { family: Family }>(xs: readonly T[], family: Family) =>
  xs.filter((x) => x.family === family);

/**
 * Equal (sameRules) for equal rule sets, whatever their order. Every pass computes it, so
 * no sort: at 10,000 ports a sorted, joined key took 30 ms a pass on a fast machine and
 * ten times that in UML; sets compared by size and membership take a few.
 */
export type RulesKey = readonly ReadonlySet<string>[];
export const rulesKey = (r: NetfilterRules): RulesKey =>
  [r.snat, r.filter, r.notrack].map((list) => new Set(list.map(ruleText)));

const sameRule = (a: PortRule, b: PortRule) =>
  a === b || (a.vip === b.vip && a.port === b.port && a.protocol === b.protocol && a.family === b.family);

/** The same rules in the same order (a pass that changed no port): no strings made, no sort. */
const sameInOrder = (a: NetfilterRules, b: NetfilterRules) =>
  (['snat', 'filter', 'notrack'] as const).every(
    (k) => a[k].length === b[k].length && a[k].every((r, i) => sameRule(r, b[k][i]!)),
  );

function sameRules(a: RulesKey | undefined, b: RulesKey): boolean {
  if (!a) return false;
  return a.every((set, i) => {
    const other = b[i]!;
    if (set.size !== other.size) return false;
    for (const text of other) if (!set.has(text)) return false;
    return true;
  });
}

/** A stable order for the scripts (each rule's text made once, compared by code unit). */
const sortRules = (rules: readonly PortRule[]) =>
  rules
    .map((r) => ({ r, text: ruleText(r) }))
    .sort((a, b) => (a.text < b.text ? -1 : a.text > b.text ? 1 : 0))
    .map((x) => x.r);

const uniqueVips = (rules: readonly PortRule[], family: Family) => [
  ...new Set(ofFamily(rules, family).map((r) => r.vip)),
];

const usesFamily = (rules: NetfilterRules, family: Family) =>
  rules.snat.some((r) => r.family === family) ||
  rules.filter.some((r) => r.family === family) ||
  rules.notrack.some((r) => r.family === family);

/** What the kernel holds of one family's rules, counted: set members. */
interface Counts {
  vips: number;
  services: number;
  notrack: number;
  snat: number;
}

const counted = new WeakMap<NetfilterRules, Partial<Record<Family, Counts>>>();

/** Counted once per applied rules (the repair reads every minute; 10,000 rules took ~100 ms to count in UML). */
function countsOf(rules: NetfilterRules, family: Family): Counts {
  let byFamily = counted.get(rules);
  if (!byFamily) {
    byFamily = {};
    counted.set(rules, byFamily);
  }
  const known = byFamily[family];
  if (known) return known;
  const tuples = (list: readonly PortRule[]) => {
    const seen = new Set<string>();
    for (const r of list) if (r.family === family) seen.add(ipsetMember(r));
    return seen.size;
  };
  const vips = new Set<string>();
  for (const r of rules.filter) if (r.family === family) vips.add(r.vip);
  const counts = {
    vips: vips.size,
    services: tuples(rules.filter),
    notrack: tuples(rules.notrack),
    snat: tuples(rules.snat),
  };
  byFamily[family] = counts;
  return counts;
}

/** Listings of a command, however long (at 10,000 VIPs a table lists megabytes). */
const listing = async (cmd: string, args: string[]) =>
  (await run(cmd, args, { maxBuffer: 1 << 30, encoding: 'utf8' })).stdout;

/**
 * What `nft list table <family> portlb` lacks of `rules` (a chain, a rule, sets' members,
 * counted); undefined when nothing. For the repair: counts, not contents, tell a flushed or
 * reloaded ruleset from ours.
 */
export function nftMissing(rules: NetfilterRules, family: Family, listed: string): string | undefined {
  const nf = family === 'ipv4' ? 'ip' : 'ip6';
  for (const chain of ['prerouting', 'snat_mark', 'input', 'postrouting'])
    if (!listed.includes(`chain ${chain} {`)) return `chain ${chain} of table ${nf} ${NFT_TABLE} is gone`;
  for (const [what, text] of [
    ['the notrack rule', '@untracked notrack'],
    ["the VIP filter's pass for other addresses", `${nf} daddr != @vips accept`],
    ["the VIP filter's pass for service ports", '@services accept'],
    ["the VIP filter's drop rule", 'nothing but service ports on a VIP'],
    ["the SNAT mark's rule", '@nat_services meta mark set'],
    ['the SNAT rule', 'portlb: SNAT for NAT-mode services'],
  ] as const)
    if (!listed.includes(text)) return `${what} of table ${nf} ${NFT_TABLE} is gone`;
  const want = countsOf(rules, family);
  for (const [set, members] of [
    ['vips', want.vips],
    ['services', want.services],
    ['untracked', want.notrack],
    ['nat_services', want.snat],
  ] as const) {
    const at = listed.indexOf(`set ${set} {`);
    if (at < 0) return `set ${set} of table ${nf} ${NFT_TABLE} is gone`;
    const block = listed.slice(at, listed.indexOf('\n\t}', at));
    const elements = /elements = \{([^}]*)\}/.exec(block)?.[1];
    const have = elements === undefined ? 0 : elements.split(',').length;
    if (have !== members) return `set ${set} of table ${nf} ${NFT_TABLE} has ${have} of ${members} members`;
  }
  return undefined;
}

/**
 * What the legacy listings of one family lack of `rules` (`ipset list -t`;
 * `iptables-save` of all tables, or `iptables -S` of nat, filter and raw one after the
 * other): a set's members or a chain's rules, counted, or a jump from a built-in chain;
 * undefined when nothing.
 */
export function legacyMissing(
  rules: NetfilterRules,
  family: Family,
  listed: { sets: string; tables: string },
): string | undefined {
  const sets = SETS[family];
  const want = countsOf(rules, family);
  // Each table's rules ("*nat" opens a table in iptables-save's output).
  const tables = new Map<string, string[]>();
  let current: string[] = [];
  for (const line of listed.tables.split('\n')) {
    if (line.startsWith('*')) {
      current = [];
      tables.set(line.slice(1).trim(), current);
    } else if (line.startsWith('-A ')) current.push(line);
  }
  const entries = new Map<string, number>();
  for (const block of listed.sets.split(/\n(?=Name: )/)) {
    const name = /^Name: (\S+)/m.exec(block)?.[1];
    const count = /^Number of entries: (\d+)/m.exec(block)?.[1];
    if (name && count !== undefined) entries.set(name, Number(count));
  }
  for (const [set, members] of [
    [sets.vips, want.vips],
    [sets.services, want.services],
    [sets.notrack, want.notrack],
    [sets.snat, want.snat],
  ] as const) {
    const have = entries.get(set);
    if (have === undefined) return `ipset ${set} is gone`;
    if (have !== members) return `ipset ${set} has ${have} of ${members} members`;
  }
  for (const [table, builtin, chain, count] of [
    ['nat', 'POSTROUTING', SNAT_CHAIN, 3],
    ['nat', 'PREROUTING', SNAT_MARK_CHAIN, 1],
    ['filter', 'INPUT', FILTER_CHAIN, 4],
    ['raw', 'PREROUTING', NOTRACK_CHAIN, 1],
  ] as const) {
    const lines = tables.get(table) ?? [];
    if (!lines.some((l) => l.startsWith(`-A ${builtin} `) && l.endsWith(`-j ${chain}`)))
      return `the jump from ${builtin} to ${chain} (${table} table) is gone`;
    let have = 0;
    for (const l of lines) if (l.startsWith(`-A ${chain} `)) have++;
    if (have !== count) return `${chain} (${table} table) has ${have} of ${count} rules`;
  }
  return undefined;
}

const SNAT_COMMENT = 'portlb: SNAT for NAT-mode services';

/** One nft transaction that replaces portlb's tables (ip and ip6) with exactly these rules. */
export function nftScript(rules: NetfilterRules, mark = DEFAULT_SNAT_MARK): string {
  const out: string[] = [];
  for (const [family, nf, addrType, icmp] of [
    ['ipv4', 'ip', 'ipv4_addr', 'icmp'],
    ['ipv6', 'ip6', 'ipv6_addr', 'ipv6-icmp'],
  ] as const) {
    const filter = sortRules(ofFamily(rules.filter, family));
    const notrack = sortRules(ofFamily(rules.notrack, family));
    const snat = sortRules(ofFamily(rules.snat, family));
    const vips = uniqueVips(filter, family);
    const tuples = (list: PortRule[]) =>
      list.length ? `elements = { ${list.map(nftMember).join(', ')} }` : '';
    out.push(`table ${nf} ${NFT_TABLE} {}`, `delete table ${nf} ${NFT_TABLE}`, `table ${nf} ${NFT_TABLE} {`);
    out.push(
      `  set vips { type ${addrType}; ${vips.length ? `elements = { ${vips.join(', ')} }` : ''} }`,
      `  set services { type ${addrType} . inet_proto . inet_service; ${tuples(filter)} }`,
      `  set untracked { type ${addrType} . inet_proto . inet_service; ${tuples(notrack)} }`,
      `  set nat_services { type ${addrType} . inet_proto . inet_service; ${tuples(snat)} }`,
      '  chain prerouting {',
      '    type filter hook prerouting priority raw; policy accept;',
      `    ${nf} daddr . meta l4proto . th dport @untracked notrack`,
      '  }',
      '  chain snat_mark {',
      '    type nat hook prerouting priority dstnat; policy accept;',
      `    ${nf} daddr . meta l4proto . th dport @nat_services meta mark set meta mark | ${hex(mark)}`,
      '  }',
      '  chain input {',
      '    type filter hook input priority filter - 10; policy accept;',
      `    ${nf} daddr != @vips accept`,
      `    ${nf} daddr . meta l4proto . th dport @services accept`,
      `    meta l4proto ${icmp} accept`,
      '    counter drop comment "portlb: nothing but service ports on a VIP"',
      '  }',
      '  chain postrouting {',
      '    type nat hook postrouting priority srcnat; policy accept;',
      `    meta mark & ${hex(mark)} == ${hex(mark)} meta mark set meta mark & ${hex(~mark >>> 0)} masquerade comment "${SNAT_COMMENT}"`,
      '  }',
      '}',
    );
  }
  return `${out.join('\n')}\n`;
}

/**
 * iptables-restore input that replaces portlb's chains (nat: SNAT and its mark, filter: the
 * VIP filter, raw: notrack) of one family. The rules are the same for any number of
 * Services: the sets hold them.
 */
export function iptablesRestoreText(
  _rules: NetfilterRules,
  family: Family,
  mark = DEFAULT_SNAT_MARK,
): string {
  const sets = SETS[family];
  const m = hex(mark);
  const lines = [
    '*nat',
    `:${SNAT_CHAIN} - [0:0]`,
    `:${SNAT_MARK_CHAIN} - [0:0]`,
    `-A ${SNAT_MARK_CHAIN} -m set --match-set ${sets.snat} dst,dst -j MARK --or-mark ${m}`,
    `-A ${SNAT_CHAIN} -m mark ! --mark ${m}/${m} -j RETURN`,
    `-A ${SNAT_CHAIN} -j MARK --xor-mark ${m}`,
    `-A ${SNAT_CHAIN} -m ipvs --ipvs --vmethod masq -m comment --comment "${SNAT_COMMENT}" -j MASQUERADE`,
    'COMMIT',
    '*filter',
    `:${FILTER_CHAIN} - [0:0]`,
  ];
  lines.push(
    `-A ${FILTER_CHAIN} -m set ! --match-set ${sets.vips} dst -j RETURN`,
    `-A ${FILTER_CHAIN} -p ${family === 'ipv4' ? 'icmp' : 'ipv6-icmp'} -j RETURN`,
    `-A ${FILTER_CHAIN} -m set --match-set ${sets.services} dst,dst -j RETURN`,
    `-A ${FILTER_CHAIN} -m comment --comment "portlb: nothing but service ports on a VIP" -j DROP`,
    'COMMIT',
    '*raw',
    `:${NOTRACK_CHAIN} - [0:0]`,
    `-A ${NOTRACK_CHAIN} -m set --match-set ${sets.notrack} dst,dst -m comment --comment "portlb: tunnel/dr flows untracked" -j CT --notrack`,
    'COMMIT',
    '',
  );
  return lines.join('\n');
}

/**
 * The most members a portlb ipset takes. ipset's default (65,536) is a cap, not a size (a
 * hash set grows with its members), and a write beyond it fails whole: 10,000 Services
 * with seven ports each are past it.
 */
export const SET_MAXELEM = 1 << 20;

/**
 * ipset restore input: each set of a family refilled under another name and swapped in
 * atomically. `existing`: the sets there are (`ipset list -n`): a set is created only when
 * missing (creating one that exists with other settings, as an older version's smaller
 * maxelem, fails the restore), and a leftover of a write that failed halfway is destroyed
 * first.
 */
export function ipsetRestoreText(
  rules: NetfilterRules,
  family: Family,
  existing: ReadonlySet<string> = new Set(),
): string {
  const sets = SETS[family];
  const inet = family === 'ipv4' ? 'inet' : 'inet6';
  const filter = sortRules(ofFamily(rules.filter, family));
  const lines: string[] = [];
  const notrack = sortRules(ofFamily(rules.notrack, family));
  const snat = sortRules(ofFamily(rules.snat, family));
  for (const [name, type, members] of [
    [sets.vips, 'hash:ip', uniqueVips(filter, family)],
    [sets.services, 'hash:ip,port', filter.map(ipsetMember)],
    [sets.notrack, 'hash:ip,port', notrack.map(ipsetMember)],
    [sets.snat, 'hash:ip,port', snat.map(ipsetMember)],
  ] as const) {
    const create = (set: string) => `create ${set} ${type} family ${inet} maxelem ${SET_MAXELEM}`;
    lines.push(
      ...(existing.has(name) ? [] : [create(name)]),
      ...(existing.has(`${name}-next`) ? [`destroy ${name}-next`] : []),
      create(`${name}-next`),
      ...members.map((m) => `add ${name}-next ${m}`),
      `swap ${name}-next ${name}`,
      `destroy ${name}-next`,
    );
  }
  return `${lines.join('\n')}\n`;
}

/** What a change adds and removes: rules per list, and the VIPs of the filter's `vips` set. */
export interface RulesDelta {
  snat: { added: PortRule[]; removed: PortRule[] };
  filter: { added: PortRule[]; removed: PortRule[] };
  notrack: { added: PortRule[]; removed: PortRule[] };
  vips: { added: { vip: string; family: Family }[]; removed: { vip: string; family: Family }[] };
}

const LISTS = ['snat', 'filter', 'notrack'] as const;

const filterVips = (rules: NetfilterRules) => {
  const vips = new Map<string, Family>();
  for (const r of rules.filter) vips.set(r.vip, r.family);
  return vips;
};

/**
 * The change from the applied rules to `next` as additions and removals; undefined when
 * writing it is no cheaper than writing everything, or when `next` uses a family the
 * applied rules did not (the legacy backend creates a family's sets and chains only then).
 */
export function rulesDelta(
  base: { rules: NetfilterRules; key: RulesKey },
  next: { rules: NetfilterRules; key: RulesKey },
): RulesDelta | undefined {
  for (const family of ['ipv4', 'ipv6'] as const)
    if (usesFamily(next.rules, family) && !usesFamily(base.rules, family)) return undefined;
  let size = 0;
  const [snat, filter, notrack] = LISTS.map((list, i) => {
    const added = next.rules[list].filter((r) => !base.key[i]!.has(ruleText(r)));
    const removed = base.rules[list].filter((r) => !next.key[i]!.has(ruleText(r)));
    size += added.length + removed.length;
    return { added, removed };
  }) as [RulesDelta['snat'], RulesDelta['filter'], RulesDelta['notrack']];
  if (size >= next.rules.snat.length + next.rules.filter.length + next.rules.notrack.length) return undefined;
  const before = filterVips(base.rules);
  const after = filterVips(next.rules);
  const vips: RulesDelta['vips'] = { added: [], removed: [] };
  for (const [vip, family] of after) if (!before.has(vip)) vips.added.push({ vip, family });
  for (const [vip, family] of before) if (!after.has(vip)) vips.removed.push({ vip, family });
  return { snat, filter, notrack, vips };
}

/**
 * ipset restore input for one family's part of a change: a new port is in its set before
 * its VIP joins `vips` (the VIP filter drops ports of a VIP it does not know), a VIP leaves
 * `vips` before its ports go. `-exist`: an add or del already done is no error. Empty when
 * the family has no change.
 */
export function ipsetDeltaText(delta: RulesDelta, family: Family): string {
  const sets = SETS[family];
  const lines = [
    ...ofFamily(delta.filter.added, family).map((r) => `add ${sets.services} ${ipsetMember(r)} -exist`),
    ...ofFamily(delta.notrack.added, family).map((r) => `add ${sets.notrack} ${ipsetMember(r)} -exist`),
    ...ofFamily(delta.snat.added, family).map((r) => `add ${sets.snat} ${ipsetMember(r)} -exist`),
    ...ofFamily(delta.vips.added, family).map((v) => `add ${sets.vips} ${v.vip} -exist`),
    ...ofFamily(delta.vips.removed, family).map((v) => `del ${sets.vips} ${v.vip} -exist`),
    ...ofFamily(delta.filter.removed, family).map((r) => `del ${sets.services} ${ipsetMember(r)} -exist`),
    ...ofFamily(delta.notrack.removed, family).map((r) => `del ${sets.notrack} ${ipsetMember(r)} -exist`),
    ...ofFamily(delta.snat.removed, family).map((r) => `del ${sets.snat} ${ipsetMember(r)} -exist`),
  ];
  return lines.length ? `${lines.join('\n')}\n` : '';
}

/**
 * One nft transaction for a change: elements added and deleted. Deleting an element that
 * is not there fails the transaction, which then changes nothing. Empty when there is no
 * change.
 */
export function nftDeltaScript(delta: RulesDelta): string {
  const out: string[] = [];
  for (const [family, nf] of [
    ['ipv4', 'ip'],
    ['ipv6', 'ip6'],
  ] as const) {
    const elements = (verb: 'add' | 'delete', set: string, members: string[]) => {
      if (members.length) out.push(`${verb} element ${nf} ${NFT_TABLE} ${set} { ${members.join(', ')} }`);
    };
    elements('add', 'services', ofFamily(delta.filter.added, family).map(nftMember));
    elements('add', 'untracked', ofFamily(delta.notrack.added, family).map(nftMember));
    elements('add', 'nat_services', ofFamily(delta.snat.added, family).map(nftMember));
    elements(
      'add',
      'vips',
      ofFamily(delta.vips.added, family).map((v) => v.vip),
    );
    elements(
      'delete',
      'vips',
      ofFamily(delta.vips.removed, family).map((v) => v.vip),
    );
    elements('delete', 'services', ofFamily(delta.filter.removed, family).map(nftMember));
    elements('delete', 'untracked', ofFamily(delta.notrack.removed, family).map(nftMember));
    elements('delete', 'nat_services', ofFamily(delta.snat.removed, family).map(nftMember));
  }
  return out.length ? `${out.join('\n')}\n` : '';
}

/**
 * A backend's scripts for one set of rules, by name, built on first use and kept with the
 * applied rules: the periodic repair writes them again without building them again
 * (sorting and formatting the rules of 10,000 VIPs held the event loop for about a second
 * in UML, every 60 s).
 */
export type ScriptOf = (name: string, build: () => string) => string;

export abstract class CachedNetfilter implements NetfilterManager {
  abstract readonly kind: string;
  private applied: { key: RulesKey; rules: NetfilterRules; scripts: Map<string, string> } | undefined;
  /** The write in progress (apply or repair): one at a time. */
  private writing: Promise<unknown> = Promise.resolve();
  protected abstract write(rules: NetfilterRules, script: ScriptOf): Promise<void>;
  /** Writes a change as such; throws when the kernel refuses it (its rules are not the applied ones). */
  protected abstract writeDelta(delta: RulesDelta): Promise<void>;
  /**
   * What of `rules` the kernel has lost (a flushed chain or set, a missing jump), read
   * cheaply; undefined when it has them all. Throws when it cannot tell.
   */
  protected abstract missing(rules: NetfilterRules): Promise<string | undefined>;

  async apply(rules: NetfilterRules): Promise<NetfilterWrite> {
    if (this.applied && sameInOrder(this.applied.rules, rules)) return 'unchanged';
    const key = rulesKey(rules);
    if (this.applied && sameRules(this.applied.key, key)) {
      // The same set in other objects: remembered, so the next pass's objects match at once
      // (the scripts are of the set, sorted: the same).
      this.applied = { key, rules, scripts: this.applied.scripts };
      return 'unchanged';
    }
    return this.serially(() => this.change(rules, key));
  }

  /**
   * A change written as what it adds and removes: a Service created at 10,000 VIPs wrote
   * all of them again (legacy: 25 s of CPU in UML; 3.9-5.2 s a Service at 1,000), and every
   * pass waited behind it. A change the kernel refuses means its rules are not the applied
   * ones (a set or rule removed by someone else): everything is written instead.
   */
  private async change(rules: NetfilterRules, key: RulesKey): Promise<'updated' | 'replaced'> {
    const base = this.applied;
    const delta = base && rulesDelta(base, { rules, key });
    if (delta) {
      try {
        await this.writeDelta(delta);
        // The repair's scripts are built when it needs them (it rarely does).
        this.applied = { key, rules, scripts: new Map() };
        return 'updated';
      } catch {
        // Unknown now what the kernel holds of the change: the whole write makes it sure.
      }
    }
    await this.writeAll(rules, key, new Map());
    return 'replaced';
  }

  /**
   * Reads first and rewrites only when something was lost: a rewrite of 10,000 VIPs'
   * rules took 25 s of CPU in UML (legacy: ipset 9 s, iptables-restore 16 s holding the
   * xtables lock other tools wait for), every minute. A read that fails is doubt: the
   * rules are rewritten. Runs after any write in progress, with the rules applied then.
   */
  repair(): Promise<string | undefined> {
    if (!this.applied) return Promise.resolve(undefined);
    return this.serially(async () => {
      const last = this.applied;
      if (!last) return undefined;
      const lost = await this.missing(last.rules).catch(
        (err: Error) => `the rules could not be read (${err.message.split('\n')[0]})`,
      );
      if (lost !== undefined) await this.writeAll(last.rules, last.key, last.scripts);
      return lost;
    });
  }

  private serially<T>(work: () => Promise<T>): Promise<T> {
    const run = this.writing.catch(() => {}).then(work);
    this.writing = run;
    return run;
  }

  private async writeAll(rules: NetfilterRules, key: RulesKey, scripts: Map<string, string>): Promise<void> {
    try {
      await this.write(rules, (name, build) => {
        let text = scripts.get(name);
        if (text === undefined) {
          text = build();
          scripts.set(name, text);
        }
        return text;
      });
    } catch (err) {
      this.applied = undefined;
      throw new NetfilterError(
        'NETFILTER_APPLY_FAILED',
        `${this.kind}: could not apply ${rules.snat.length} SNAT, ${rules.filter.length} filter and ${rules.notrack.length} notrack rules: ${(err as { stderr?: string }).stderr || (err as Error).message}`,
        { cause: err },
      );
    }
    this.applied = { key, rules, scripts };
  }
}

export class NftNetfilter extends CachedNetfilter {
  readonly kind = 'nftables';
  private readonly snatMark: number;
  constructor(snatMark = DEFAULT_SNAT_MARK) {
    super();
    this.snatMark = snatMark;
  }

  protected write(rules: NetfilterRules, script: ScriptOf): Promise<void> {
    return feed(
      'nft',
      ['-f', '-'],
      script('nft', () => nftScript(rules, this.snatMark)),
    );
  }

  protected async writeDelta(delta: RulesDelta): Promise<void> {
    const script = nftDeltaScript(delta);
    if (script) await feed('nft', ['-f', '-'], script);
  }

  protected async missing(rules: NetfilterRules): Promise<string | undefined> {
    for (const [family, nf] of [
      ['ipv4', 'ip'],
      ['ipv6', 'ip6'],
    ] as const) {
      // No IPv6 VIP: nothing of the ip6 table matters (each read is a process to start).
      if (family === 'ipv6' && !usesFamily(rules, family)) continue;
      const lost = nftMissing(rules, family, await listing('nft', ['list', 'table', nf, NFT_TABLE]));
      if (lost) return lost;
    }
    return undefined;
  }
}

export class LegacyNetfilter extends CachedNetfilter {
  readonly kind = 'iptables-legacy';
  private readonly snatMark: number;
  constructor(snatMark = DEFAULT_SNAT_MARK) {
    super();
    this.snatMark = snatMark;
  }

  protected async write(rules: NetfilterRules, script: ScriptOf): Promise<void> {
    const existing = new Set((await listing('ipset', ['list', '-n'])).split('\n').filter(Boolean));
    for (const [family, bin, restore] of [
      ['ipv4', 'iptables-legacy', 'iptables-legacy-restore'],
      ['ipv6', 'ip6tables-legacy', 'ip6tables-legacy-restore'],
    ] as const) {
      if (family === 'ipv6' && !usesFamily(rules, family)) continue;
      // Sets first: the filter's rules name them.
      await feed(
        'ipset',
        ['restore'],
        // The script depends on which sets exist: named by that.
        script(
          `ipset ${family} ${Object.values(SETS[family])
            .flatMap((s) => [s, `${s}-next`])
            .filter((s) => existing.has(s))
            .join(',')}`,
          () => ipsetRestoreText(rules, family, existing),
        ),
      );
      // The mark's chain and its jump first, empty: the restore then fills both SNAT chains
      // in one commit (an upgrade from a rule per Service loses no new connection between).
      await feed(bin, ['-w', '-t', 'nat', '-N', SNAT_MARK_CHAIN], '').catch(() => {});
      await ensureJumpFirst(bin, 'nat', 'PREROUTING', SNAT_MARK_CHAIN, 'portlb SNAT mark');
      await feed(
        restore,
        ['-w', '--noflush'],
        script(`iptables ${family}`, () => iptablesRestoreText(rules, family, this.snatMark)),
      );
      await ensureJumpFirst(bin, 'nat', 'POSTROUTING', SNAT_CHAIN, 'portlb SNAT');
      await ensureJumpFirst(bin, 'filter', 'INPUT', FILTER_CHAIN, 'portlb VIP filter');
      await ensureJumpFirst(bin, 'raw', 'PREROUTING', NOTRACK_CHAIN, 'portlb notrack');
    }
  }

  /** A change is set members only: the rules stay (the nat table is not rewritten). */
  protected async writeDelta(delta: RulesDelta): Promise<void> {
    const text = ipsetDeltaText(delta, 'ipv4') + ipsetDeltaText(delta, 'ipv6');
    if (text) await feed('ipset', ['restore'], text);
  }

  protected async missing(rules: NetfilterRules): Promise<string | undefined> {
    // Two reads a family: each is a process to start, a fork of the agent (the turns
    // holding them were 0.4-0.7 s each at 10,000 VIPs in UML).
    const sets = await listing('ipset', ['list', '-t']);
    for (const [family, save] of [
      ['ipv4', 'iptables-legacy-save'],
      ['ipv6', 'ip6tables-legacy-save'],
    ] as const) {
      if (family === 'ipv6' && !usesFamily(rules, family)) continue;
      const lost = legacyMissing(rules, family, { sets, tables: await listing(save, []) });
      if (lost) return lost;
    }
    return undefined;
  }
}

export class FakeNetfilter implements NetfilterManager {
  readonly kind = 'fake';
  rules: NetfilterRules = { snat: [], filter: [], notrack: [] };
  writes = 0;
  private written = false;
  async apply(rules: NetfilterRules): Promise<NetfilterWrite> {
    const base = { rules: this.rules, key: rulesKey(this.rules) };
    const next = { rules, key: rulesKey(rules) };
    if (this.written && sameRules(base.key, next.key)) return 'unchanged';
    const outcome = this.written && rulesDelta(base, next) ? 'updated' : 'replaced';
    this.rules = { snat: [...rules.snat], filter: [...rules.filter], notrack: [...rules.notrack] };
    this.written = true;
    this.writes++;
    return outcome;
  }
  /** What the next repair finds lost (undefined: intact, nothing written). */
  lost: string | undefined = 'rules flushed';
  async repair(): Promise<string | undefined> {
    if (!this.written || this.lost === undefined) return undefined;
    this.writes++;
    return this.lost;
  }
}

/** Picks the backend: nftables when the kernel has its ip family, else legacy iptables with ipset. */
export async function detectNetfilter(
  mode: 'auto' | 'nftables' | 'iptables',
  o: { snatMark?: number } = {},
): Promise<NetfilterManager> {
  const nftWorks = async () => {
    try {
      await run('nft', ['add', 'table', 'ip', 'portlb_probe']);
      await run('nft', ['delete', 'table', 'ip', 'portlb_probe']);
      return true;
    } catch {
      return false;
    }
  };
  /** undefined when legacy iptables with ipset works; else what the tools said. */
  const legacyProblem = async (): Promise<string | undefined> => {
    try {
      await run('iptables-legacy', ['-w', '-t', 'nat', '-S', 'POSTROUTING']);
      await run('iptables-legacy', ['-w', '-t', 'filter', '-S', 'INPUT']);
      await run('ipset', ['list', '-n']);
      return undefined;
    } catch (err) {
      return ((err as { stderr?: string }).stderr || (err as Error).message).trim().split('\n')[0];
    }
  };
  if (mode !== 'iptables' && (await nftWorks())) return new NftNetfilter(o.snatMark);
  if (mode === 'nftables') {
    throw new NetfilterError(
      'NETFILTER_UNAVAILABLE',
      'ipvs.netfilter: nftables: this kernel cannot create an nftables ip table (use iptables or auto)',
    );
  }
  const problem = await legacyProblem();
  if (problem === undefined) return new LegacyNetfilter(o.snatMark);
  // A missing capability looks like a missing kernel feature to the tools: say which.
  const denied = /permission denied|not permitted|must be root/i.test(problem)
    ? ' Permission denied: the agent needs CAP_NET_ADMIN and CAP_NET_RAW (legacy iptables opens a raw socket).'
    : '';
  throw new NetfilterError(
    'NETFILTER_UNAVAILABLE',
    `ipvs.netfilter: ${mode}: neither nftables (ip family) nor legacy iptables with ipset (ip_tables, iptable_nat, iptable_filter, xt_ipvs, xt_set) works here (legacy iptables said: ${problem}).${denied} Install nftables, or iptables and ipset, or grant the capabilities.`,
  );
}

/** Something portlb created in netfilter, found and removed as a whole (`portlb cleanup`). */
export interface NetfilterCleaner {
  what: string;
  present(): Promise<boolean>;
  remove(): Promise<void>;
}

const succeeds = (cmd: string, args: string[]) =>
  run(cmd, args).then(
    () => true,
    () => false,
  );

/** portlb's chains in a legacy iptables table: its own (PORTLB-*) and the jumps to them. */
function legacyChains(bin: string, table: string): NetfilterCleaner {
  const rules = async () => (await run(bin, ['-w', '-t', table, '-S'])).stdout.split('\n');
  return {
    what: `${bin} chains PORTLB-* in table ${table}`,
    present: async () => (await rules().catch(() => [])).some((l) => l.startsWith('-N PORTLB-')),
    remove: async () => {
      const lines = await rules();
      // Jumps from other chains first (a chain in use cannot be deleted).
      for (const l of lines) {
        if (!l.startsWith('-A ') || !/ -j PORTLB-\S+/.test(l) || l.startsWith('-A PORTLB-')) continue;
        await run(bin, ['-w', '-t', table, '-D', ...splitRule(l.slice(3))]);
      }
      const chains = lines.filter((l) => l.startsWith('-N PORTLB-')).map((l) => l.slice(3).trim());
      for (const c of chains) await run(bin, ['-w', '-t', table, '-F', c]);
      for (const c of chains) await run(bin, ['-w', '-t', table, '-X', c]);
    },
  };
}

/** Splits an iptables -S rule into arguments (quoted comments stay one argument). */
function splitRule(rule: string): string[] {
  return [...rule.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)].map((m) => m[1] ?? m[2]!);
}

export function netfilterCleaners(): NetfilterCleaner[] {
  const nftTable = (family: string, table = NFT_TABLE): NetfilterCleaner => ({
    what: `nftables table ${family} ${table}`,
    present: () => succeeds('nft', ['list', 'table', family, table]),
    remove: async () => {
      await run('nft', ['delete', 'table', family, table]);
    },
  });
  const ipsets: NetfilterCleaner = {
    what: 'ipsets portlb-*',
    present: async () =>
      (await run('ipset', ['list', '-n']).catch(() => ({ stdout: '' }))).stdout
        .split('\n')
        .some((n) => n.startsWith('portlb-')),
    remove: async () => {
      const names = (await run('ipset', ['list', '-n'])).stdout
        .split('\n')
        .filter((n) => n.startsWith('portlb-'));
      for (const n of names) await run('ipset', ['destroy', n]);
    },
  };
  return [
    nftTable('ip'),
    nftTable('ip6'),
    nftTable('inet'),
    // The dead-man switch's guard (bfd/dead-man.ts).
    nftTable('ip', GUARD_TABLE),
    nftTable('ip6', GUARD_TABLE),
    ...['iptables-legacy', 'ip6tables-legacy'].flatMap((bin) =>
      ['nat', 'filter', 'raw'].map((table) => legacyChains(bin, table)),
    ),
    // After the chains: a set in use by a rule cannot be destroyed.
    ipsets,
  ];
}
