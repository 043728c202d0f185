// What a new agent configuration changes, and whether the running agent can take it
// (SIGHUP in standalone mode). Pure: the running configuration and the new one in, a plan
// out. Only what the agent re-applies safely is live (the pools, the BGP peers); a
// change of anything else is refused as a whole, naming the options that need a
// restart, and the running configuration stays.
import type { AgentConfig } from './agent-config.ts';

export interface ReloadPlan {
  /** Options that changed and need a restart (empty: the change can be applied). */
  restart: string[];
  pools: boolean;
  peers: boolean;
}

const text = (v: unknown) => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? x.toString() : x)) ?? '';

/** Every leaf path whose value differs (objects compared key by key, lists as a whole). */
function changedPaths(a: unknown, b: unknown, at: string, out: string[]): void {
  const isObj = (x: unknown) => !!x && typeof x === 'object' && !Array.isArray(x);
  if (isObj(a) && isObj(b)) {
    const keys = new Set([...Object.keys(a as object), ...Object.keys(b as object)]);
    for (const k of [...keys].sort())
      changedPaths(
        (a as Record<string, unknown>)[k],
        (b as Record<string, unknown>)[k],
        at ? `${at}.${k}` : k,
        out,
      );
    return;
  }
  if (text(a) !== text(b)) out.push(at || '(top level)');
}

/** BFD runs toward the peers: a peer change that touches a BFD session needs a restart. */
const bfdView = (c: AgentConfig) =>
  c.bfd && c.bgp
    ? c.bgp.peers
        .filter((p) => p.bfd ?? true)
        .map((p) => [p.address, p.localAddress, p.ebgpMultihopTtl, p.port])
    : [];

export function planReload(running: AgentConfig, next: AgentConfig): ReloadPlan {
  const changed: string[] = [];
  changedPaths(running, next, '', changed);
  const pools = changed.some((p) => p === 'pools' || p.startsWith('pools.'));
  const peers = changed.some((p) => p === 'bgp.peers');
  const restart = changed.filter((p) => !(p === 'pools' || p.startsWith('pools.') || p === 'bgp.peers'));
  if (peers && text(bfdView(running)) !== text(bfdView(next))) restart.push('bgp.peers (a peer with BFD)');
  return { restart, pools, peers };
}
