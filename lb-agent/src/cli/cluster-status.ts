// `portlb status --cluster`: every node's PortlbNodeStatus (k8s/node-status.ts) turned
// around, per VIP: the nodes that announce it, those that withhold it and why, the
// routers, the backends. Pure: objects in, text out; the command reads the objects from
// the API server or from `kubectl get portlbnodestatuses -o json`.
import type { Json } from '../k8s/client.ts';

export interface ClusterView {
  nodes: {
    node: string;
    version: string;
    leader: boolean;
    ready: boolean;
    reasons: string[];
    announced: number;
    withheld: number;
    peers: string;
    observedAt: string | null;
    /** Older than the stale bound: its agent may be gone or unable to write. */
    stale: boolean;
  }[];
  vips: {
    address: string;
    owners: string[];
    announcedBy: string[];
    withheldBy: { node: string; reason: string }[];
    routers: {
      router: string;
      asn: number;
      sessions: { node: string; state: string; bfd: string | null }[];
    }[];
    services: { id: string; backends: { nodes: string[]; list: string }[] }[];
  }[];
  truncated: string[];
}

const arr = (v: unknown): Json[] => (Array.isArray(v) ? v : []);

/** The view of a set of objects (a List's items), `now` and `staleMs` deciding what is stale. */
export function clusterView(items: Json[], now: number, staleMs: number): ClusterView {
  const nodes: ClusterView['nodes'] = [];
  const vips = new Map<string, ClusterView['vips'][number]>();
  const truncated: string[] = [];
  const sorted = [...items].sort((a, b) =>
    String(a?.metadata?.name).localeCompare(String(b?.metadata?.name)),
  );
  for (const item of sorted) {
    const node = String(item?.metadata?.name ?? '?');
    const s = item?.status ?? {};
    const observedAt = typeof s.observedAt === 'string' ? s.observedAt : null;
    const age = observedAt ? now - Date.parse(observedAt) : Number.POSITIVE_INFINITY;
    const peers = arr(s.peers);
    const stale = !(age <= staleMs);
    // What a stale object says may no longer be true: marked wherever it is quoted.
    const who = stale ? `${node} (STALE)` : node;
    nodes.push({
      node,
      version: String(s.agent?.version ?? '?'),
      leader: s.agent?.leader === true,
      ready: s.agent?.ready === true,
      reasons: arr(s.agent?.reasons).map(String),
      announced: Number(s.summary?.vipsAnnounced ?? 0),
      withheld: Number(s.summary?.vipsWithheld ?? 0),
      peers: `${peers.filter((p) => p?.state === 'established').length}/${peers.length} established`,
      observedAt,
      stale,
    });
    if (s.truncated?.vips || s.truncated?.services)
      truncated.push(
        `${node}: ${s.truncated.vips ?? 0} VIPs and ${s.truncated.services ?? 0} services not listed (see its portlb status)`,
      );
    const vipOf = (address: string, owners: string[]) => {
      let v = vips.get(address);
      if (!v) {
        v = { address, owners: [], announcedBy: [], withheldBy: [], routers: [], services: [] };
        vips.set(address, v);
      }
      for (const o of owners) if (!v.owners.includes(o)) v.owners.push(o);
      return v;
    };
    for (const v of arr(s.vips)) {
      const vip = vipOf(String(v?.address), arr(v?.owners).map(String));
      if (v?.announced) {
        vip.announcedBy.push(who);
        for (const p of peers) {
          const address = String(p?.address);
          let r = vip.routers.find((x) => x.router === address);
          if (!r) {
            r = { router: address, asn: Number(p?.asn), sessions: [] };
            vip.routers.push(r);
          }
          r.sessions.push({
            node: who,
            state: String(p?.state),
            bfd: typeof p?.bfd === 'string' ? p.bfd : null,
          });
        }
      } else vip.withheldBy.push({ node: who, reason: String(v?.withheld ?? 'not announced') });
    }
    for (const svc of arr(s.services)) {
      const vip = vipOf(String(svc?.vip), [String(svc?.owner)]);
      const id = String(svc?.id);
      let entry = vip.services.find((x) => x.id === id);
      if (!entry) {
        entry = { id, backends: [] };
        vip.services.push(entry);
      }
      const listed = arr(svc?.backends);
      const more = Number(svc?.backendCount ?? listed.length) - listed.length;
      const list =
        [
          ...listed.map(
            (b) =>
              `${b?.address} w${b?.weight}${typeof b?.health === 'string' && b.health !== 'up' ? ` ${String(b.health).toUpperCase()}` : ''}`,
          ),
          ...(more > 0 ? [`(+${more} more)`] : []),
        ].join(', ') || '(no backends)';
      // Nodes usually agree; where they do not (health seen from each node, Local policy), each list is shown with its nodes.
      const same = entry.backends.find((b) => b.list === list);
      if (same) same.nodes.push(who);
      else entry.backends.push({ nodes: [who], list });
    }
  }
  for (const v of vips.values()) v.services.sort((a, b) => a.id.localeCompare(b.id));
  return {
    nodes,
    vips: [...vips.values()].sort((a, b) => a.address.localeCompare(b.address, 'en', { numeric: true })),
    truncated,
  };
}

const ago = (iso: string | null, now: number) => {
  if (!iso) return 'never';
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  return s < 120 ? `${s} s ago` : `${Math.round(s / 60)} min ago`;
};

export function formatClusterView(view: ClusterView, now: number): string {
  const lines: string[] = [];
  if (!view.nodes.length)
    return 'no PortlbNodeStatus objects: no agent publishes (kubernetes.nodeStatus.enabled), or the CRD is not installed';
  lines.push(
    'NODE                           VERSION   READY  ANNOUNCED  WITHHELD  BGP                 UPDATED',
  );
  for (const n of view.nodes)
    lines.push(
      `${`${n.node}${n.leader ? ' (leader)' : ''}`.padEnd(30)} ${n.version.padEnd(9)} ${(n.ready ? 'yes' : 'NO').padEnd(6)} ${String(n.announced).padStart(9)}  ${String(n.withheld).padStart(8)}  ${n.peers.padEnd(19)} ${n.stale ? `STALE (${ago(n.observedAt, now)})` : ago(n.observedAt, now)}`,
    );
  for (const n of view.nodes.filter((x) => !x.ready && x.reasons.length))
    lines.push(`  ${n.node} not ready: ${n.reasons.join('; ')}`);
  for (const v of view.vips) {
    lines.push('', `VIP ${v.address}  ${v.owners.join(', ')}`);
    lines.push(`  announced by  ${v.announcedBy.join(', ') || 'NO NODE'}`);
    if (v.withheldBy.length)
      lines.push(`  withheld by   ${v.withheldBy.map((w) => `${w.node} (${w.reason})`).join(', ')}`);
    for (const r of v.routers)
      lines.push(
        `  router        ${r.router} AS${r.asn}: ${r.sessions.map((x) => `${x.node} ${x.state}${x.bfd ? `, BFD ${x.bfd}` : ''}`).join('; ')}`,
      );
    for (const svc of v.services) {
      if (svc.backends.length === 1) lines.push(`  ${svc.id.padEnd(28)}${svc.backends[0]!.list}`);
      else {
        lines.push(`  ${svc.id}  (the nodes disagree)`);
        for (const b of svc.backends) lines.push(`    ${b.nodes.join(', ')}: ${b.list}`);
      }
    }
  }
  if (view.truncated.length) lines.push('', 'NOT ALL LISTED', ...view.truncated.map((t) => `  ${t}`));
  return lines.join('\n');
}
