// Source NAT for NAT-mode services reaching backends anywhere: the backend must reply
// through this node, so traffic IPVS forwards for a VIP leaves with the node's address.
// The rules live in a chain/table portlb owns and are replaced atomically as a whole;
// nothing else in the ruleset is touched. Two backends: nftables (matching the conntrack
// original destination, which IPVS creates with net.ipv4.vs.conntrack=1) and legacy
// iptables (the ipvs match, as kube-proxy uses; some kernels, UML's among them, have no
// nftables ip family).
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { PortlbError } from '../errors.ts';
import type { Family } from '../net/ip.ts';

const run = promisify(execFile);

export interface SnatRule {
  vip: string;
  family: Family;
  port: number;
  protocol: 'tcp' | 'udp' | 'sctp';
}

export class SnatError extends PortlbError<'SNAT_UNAVAILABLE' | 'SNAT_APPLY_FAILED'> {}

export interface SnatManager {
  readonly kind: string;
  /** Makes portlb's SNAT rules exactly these; returns whether anything changed. */
  apply(rules: readonly SnatRule[]): Promise<boolean>;
  /** Forgets what it believes is applied (the next apply rewrites). */
  invalidate(): void;
  /** Removes portlb's rules and chains entirely (not used at exit: state stays for the next start). */
  remove(): Promise<void>;
}

export const CHAIN = 'PORTLB-SNAT';
export const NFT_TABLE = 'portlb';

const sortRules = (rules: readonly SnatRule[]) =>
  [...rules].sort((a, b) =>
    `${a.vip}|${a.protocol}|${a.port}`.localeCompare(`${b.vip}|${b.protocol}|${b.port}`),
  );

/** iptables-restore input that replaces the PORTLB-SNAT chain of one family. */
export function iptablesRestoreText(rules: readonly SnatRule[], family: Family): string {
  const bits = family === 'ipv4' ? 32 : 128;
  const lines = ['*nat', `:${CHAIN} - [0:0]`];
  for (const r of sortRules(rules).filter((x) => x.family === family)) {
    lines.push(
      `-A ${CHAIN} -m ipvs --vaddr ${r.vip}/${bits} --vport ${r.port} --vproto ${r.protocol} --vmethod masq -m comment --comment "portlb ${r.vip}:${r.port}/${r.protocol}" -j MASQUERADE`,
    );
  }
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** One nft transaction that replaces portlb's tables (ip and ip6) with exactly these rules. */
export function nftScript(rules: readonly SnatRule[]): string {
  const out: string[] = [];
  for (const [family, nf] of [
    ['ipv4', 'ip'],
    ['ipv6', 'ip6'],
  ] as const) {
    out.push(`table ${nf} ${NFT_TABLE} {}`, `delete table ${nf} ${NFT_TABLE}`, `table ${nf} ${NFT_TABLE} {`);
    out.push('  chain postrouting {', '    type nat hook postrouting priority srcnat; policy accept;');
    for (const r of sortRules(rules).filter((x) => x.family === family)) {
      out.push(
        `    meta l4proto ${r.protocol} ct original ${nf} daddr ${r.vip} ct original proto-dst ${r.port} masquerade comment "portlb ${r.vip}:${r.port}/${r.protocol}"`,
      );
    }
    out.push('  }', '}');
  }
  return `${out.join('\n')}\n`;
}

abstract class CachedSnat implements SnatManager {
  abstract readonly kind: string;
  private applied: string | undefined;
  protected abstract write(rules: readonly SnatRule[]): Promise<void>;
  abstract remove(): Promise<void>;

  async apply(rules: readonly SnatRule[]): Promise<boolean> {
    const key = JSON.stringify(sortRules(rules));
    if (key === this.applied) return false;
    try {
      await this.write(rules);
    } catch (err) {
      this.applied = undefined;
      throw new SnatError(
        'SNAT_APPLY_FAILED',
        `${this.kind}: could not apply ${rules.length} SNAT rules: ${(err as { stderr?: string }).stderr || (err as Error).message}`,
        { cause: err },
      );
    }
    this.applied = key;
    return true;
  }

  invalidate(): void {
    this.applied = undefined;
  }
}

export class IptablesLegacySnat extends CachedSnat {
  readonly kind = 'iptables-legacy';

  private async ensureJump(bin: string): Promise<void> {
    await run(bin, ['-w', '-t', 'nat', '-N', CHAIN]).catch(() => {});
    const jump = ['-t', 'nat', 'POSTROUTING', '-m', 'comment', '--comment', 'portlb SNAT', '-j', CHAIN];
    const exists = await run(bin, ['-w', jump[0]!, jump[1]!, '-C', ...jump.slice(2)]).then(
      () => true,
      () => false,
    );
    if (!exists) await run(bin, ['-w', jump[0]!, jump[1]!, '-A', ...jump.slice(2)]);
  }

  protected async write(rules: readonly SnatRule[]): Promise<void> {
    for (const [family, bin, restore] of [
      ['ipv4', 'iptables-legacy', 'iptables-legacy-restore'],
      ['ipv6', 'ip6tables-legacy', 'ip6tables-legacy-restore'],
    ] as const) {
      if (family === 'ipv6' && !rules.some((r) => r.family === 'ipv6')) continue;
      await this.ensureJump(bin);
      const child = execFile(restore, ['-w', '--noflush']);
      const done = new Promise<void>((resolve, reject) => {
        let stderr = '';
        child.stderr?.on('data', (d) => (stderr += d));
        child.on('error', reject);
        child.on('exit', (code) =>
          code === 0 ? resolve() : reject(Object.assign(new Error(`${restore} exited ${code}`), { stderr })),
        );
      });
      child.stdin?.end(iptablesRestoreText(rules, family));
      await done;
    }
  }

  async remove(): Promise<void> {
    for (const bin of ['iptables-legacy', 'ip6tables-legacy']) {
      await run(bin, [
        '-w',
        '-t',
        'nat',
        '-D',
        'POSTROUTING',
        '-m',
        'comment',
        '--comment',
        'portlb SNAT',
        '-j',
        CHAIN,
      ]).catch(() => {});
      await run(bin, ['-w', '-t', 'nat', '-F', CHAIN]).catch(() => {});
      await run(bin, ['-w', '-t', 'nat', '-X', CHAIN]).catch(() => {});
    }
    this.invalidate();
  }
}

export class NftSnat extends CachedSnat {
  readonly kind = 'nftables';

  protected async write(rules: readonly SnatRule[]): Promise<void> {
    const child = execFile('nft', ['-f', '-']);
    const done = new Promise<void>((resolve, reject) => {
      let stderr = '';
      child.stderr?.on('data', (d) => (stderr += d));
      child.on('error', reject);
      child.on('exit', (code) =>
        code === 0 ? resolve() : reject(Object.assign(new Error(`nft exited ${code}`), { stderr })),
      );
    });
    child.stdin?.end(nftScript(rules));
    await done;
  }

  async remove(): Promise<void> {
    await run('nft', ['delete', 'table', 'ip', NFT_TABLE]).catch(() => {});
    await run('nft', ['delete', 'table', 'ip6', NFT_TABLE]).catch(() => {});
    this.invalidate();
  }
}

export class NoSnat implements SnatManager {
  readonly kind = 'none';
  async apply(): Promise<boolean> {
    return false;
  }
  invalidate(): void {}
  async remove(): Promise<void> {}
}

export class FakeSnat implements SnatManager {
  readonly kind = 'fake';
  rules: SnatRule[] = [];
  writes = 0;
  async apply(rules: readonly SnatRule[]): Promise<boolean> {
    if (JSON.stringify(sortRules(rules)) === JSON.stringify(sortRules(this.rules))) return false;
    this.rules = [...rules];
    this.writes++;
    return true;
  }
  invalidate(): void {}
  async remove(): Promise<void> {
    this.rules = [];
  }
}

/** Picks the backend: nftables when the kernel has its ip family, else legacy iptables. */
export async function detectSnat(mode: 'auto' | 'nftables' | 'iptables' | 'none'): Promise<SnatManager> {
  if (mode === 'none') return new NoSnat();
  const nftWorks = async () => {
    try {
      await run('nft', ['add', 'table', 'ip', 'portlb_probe']);
      await run('nft', ['delete', 'table', 'ip', 'portlb_probe']);
      return true;
    } catch {
      return false;
    }
  };
  const legacyWorks = () =>
    run('iptables-legacy', ['-w', '-t', 'nat', '-S', 'POSTROUTING']).then(
      () => true,
      () => false,
    );
  if (mode === 'nftables' || mode === 'auto') {
    if (await nftWorks()) return new NftSnat();
    if (mode === 'nftables') {
      throw new SnatError(
        'SNAT_UNAVAILABLE',
        'ipvs.snat: nftables: this kernel cannot create an nftables ip table (use iptables or auto)',
      );
    }
  }
  if (await legacyWorks()) return new IptablesLegacySnat();
  throw new SnatError(
    'SNAT_UNAVAILABLE',
    `ipvs.snat: ${mode}: neither nftables (ip family) nor legacy iptables (ip_tables, iptable_nat, xt_ipvs) works here; install nftables or iptables, or set ipvs.snat: none`,
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
  const nftTable = (family: string): NetfilterCleaner => ({
    what: `nftables table ${family} ${NFT_TABLE}`,
    present: () => succeeds('nft', ['list', 'table', family, NFT_TABLE]),
    remove: async () => {
      await run('nft', ['delete', 'table', family, NFT_TABLE]);
    },
  });
  return [
    nftTable('ip'),
    nftTable('ip6'),
    nftTable('inet'),
    ...['iptables-legacy', 'ip6tables-legacy'].flatMap((bin) =>
      ['nat', 'filter'].map((table) => legacyChains(bin, table)),
    ),
  ];
}
