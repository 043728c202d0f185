import { readFileSync } from 'node:fs';
import { describeError } from '../errors.ts';
import { type Json, KubeApiError, KubeClient } from '../k8s/client.ts';
import { resolveConnection } from '../k8s/connection.ts';
import { NODE_STATUS_PATH } from '../k8s/node-status.ts';
import { EXIT, helpText, parseCommand, UsageError } from './args.ts';
import { clusterView, formatClusterView } from './cluster-status.ts';

const spec = {
  usage:
    'portlb status [--url URL] [--json]\n       portlb status --cluster [--kubeconfig FILE | --from FILE|-] [--stale-after SECONDS] [--json]',
  description:
    'Shows what the agent on this node does: its services and backends (weights, connections),\n' +
    'draining backends, VIPs (announced or why not), BGP peers, and the last sync. Reads the\n' +
    "agent's /status endpoint.\n\n" +
    'With --cluster, every node at once, per VIP: the nodes that announce it, those that\n' +
    'withhold it and why, the routers, the backends. Reads the PortlbNodeStatus objects the\n' +
    'agents publish (from the API server, or from `kubectl get portlbnodestatuses -o json`\n' +
    'with --from -; `kubectl portlb status` does that).',
  options: {
    url: { type: 'string' },
    json: { type: 'boolean' },
    cluster: { type: 'boolean' },
    kubeconfig: { type: 'string' },
    from: { type: 'string' },
    'stale-after': { type: 'string' },
  },
  optionHelp: [
    '--url URL            the agent (default http://$PORTLB_NODE_IP:9180, else http://127.0.0.1:9180)',
    '--json               the raw status document (with --cluster: the view as JSON)',
    '--cluster            every node, from their PortlbNodeStatus objects',
    '--kubeconfig FILE    with --cluster: the API server (default $KUBECONFIG, ~/.kube/config, or in-cluster)',
    '--from FILE|-        with --cluster: read a List of the objects from a file or standard input instead',
    '--stale-after S      with --cluster: an object not rewritten for S seconds is STALE (default 600: twice the\n' +
      "                     agents' kubernetes.nodeStatus.refreshSeconds default)",
  ],
} as const;

// biome-ignore lint/suspicious/noExplicitAny: the status document is the agent's JSON.
type Status = Record<string, any>;

export function formatStatus(s: Status): string {
  const lines: string[] = [];
  lines.push(
    `node ${s.node}  mode ${s.mode}${s.leader === null ? '' : `  leader ${s.leader ? 'yes' : 'no'}`}  ready ${s.ready.ready ? 'yes' : `no (${s.ready.reasons.join('; ')})`}`,
  );
  if (s.lastSync) {
    const failures = (s.lastSync.failures ?? []) as Status[];
    lines.push(
      `last sync ${s.lastSync.at} ${s.lastSync.ok ? 'ok' : 'FAILED'} in ${s.lastSync.durationMs} ms${failures.length ? `: ${failures.map((f) => `${f.step} ${f.code} ${f.message}`).join('; ')}` : ''}`,
    );
  }
  if (s.live && !s.live.ok) lines.push(`live no (${s.live.reason})`);
  if (s.source && !s.source.healthy)
    lines.push(
      `source ${s.source.kind} UNHEALTHY: ${s.source.error ?? 'unknown error'} (last known state kept)`,
    );
  // null is unknown (the read failed), not an empty table.
  if (s.services === null) {
    lines.push('', `IPVS: the kernel could not be read: ${s.kernelError ?? 'unknown error'}`);
  } else {
    lines.push(
      '',
      'SERVICE                                  SCHED   CONNS  BACKEND                       FWD     WEIGHT  ACTIVE  INACT',
    );
    for (const svc of s.services) {
      const head = `${svc.id.padEnd(40)} ${String(svc.scheduler).padEnd(7)} ${String(svc.connections).padStart(5)}`;
      const mark =
        svc.state === 'not-programmed'
          ? '  NOT PROGRAMMED'
          : svc.state === 'unknown'
            ? '  STATE UNKNOWN'
            : '';
      if (!svc.backends.length) lines.push(`${head}  (no backends)${mark}`);
      svc.backends.forEach((b: Status, i: number) => {
        lines.push(
          `${i === 0 ? head : ' '.repeat(head.length)}  ${b.id.padEnd(29)} ${b.forward.padEnd(7)} ${String(b.weight).padStart(6)}  ${String(b.active).padStart(6)}  ${String(b.inactive).padStart(5)}${i === 0 ? mark : ''}`,
        );
      });
    }
  }
  if (s.draining.length) {
    lines.push('', 'DRAINING');
    for (const d of s.draining)
      lines.push(`  ${d.service} -> ${d.backend}: ${d.active} active since ${d.since}`);
  }
  lines.push('', 'VIP                        ANNOUNCED  OWNERS');
  for (const v of s.vips)
    lines.push(
      `${v.address.padEnd(26)} ${(v.announced ? (v.kept ? 'yes (kept: state unknown)' : 'yes') : `no: ${v.withheld}`).padEnd(10)} ${v.owners.join(', ')}`,
    );
  if (s.health?.length) {
    lines.push('', 'HEALTH CHECKS (from this node)');
    for (const h of s.health) {
      lines.push(`  ${h.service}: ${h.healthy}/${h.total} healthy (${h.check})`);
      for (const b of h.backends)
        lines.push(
          `    ${String(b.backend).padEnd(28)} ${String(b.state).toUpperCase().padEnd(8)} since ${b.since}${b.last ? `  last: ${b.last}` : ''}`,
        );
    }
  }
  if (s.bgp) {
    lines.push('', `BGP speaker ${s.bgp.connected ? 'connected' : 'NOT connected'}`);
    for (const p of s.bgp.peers) lines.push(`  peer ${String(p.address).padEnd(24)} AS${p.asn}  ${p.state}`);
  }
  if (s.bfd) {
    const dm = s.bfd.deadMan;
    lines.push(
      '',
      `BFD responder ${s.bfd.reachable ? 'reachable' : `UNREACHABLE (sessions unknown): ${s.bfd.error}`}${dm ? `; dead-man switch ${dm.timeoutSeconds} s: ${dm.holding ? `HOLDING BFD DOWN (${dm.holding})` : 'armed'}` : '; dead-man switch off'}`,
    );
    for (const x of s.bfd.sessions ?? []) lines.push(`  peer ${String(x.peer).padEnd(24)} BFD ${x.state}`);
  }
  if (s.skipped.length) {
    lines.push('', 'SKIPPED');
    for (const k of s.skipped) lines.push(`  ${k.service}: ${k.reason}: ${k.detail}`);
  }
  if (s.warnings?.length) {
    lines.push('', 'WARNINGS');
    for (const w of s.warnings) lines.push(`  ${w.service}: ${w.message}`);
  }
  if (s.notices?.length) {
    lines.push('', 'NOTICES');
    for (const n of s.notices) lines.push(`  ${n.what} ${n.subject}: ${n.message}`);
  }
  return lines.join('\n');
}

export async function statusCommand(argv: string[]): Promise<number> {
  const args = parseCommand(spec, argv);
  if (args.help) {
    console.log(helpText(spec));
    return EXIT.OK;
  }
  if (args.positionals.length) throw new UsageError(`unexpected argument '${args.positionals[0]}'`);
  const v = args.values;
  if (!v.cluster && (v.kubeconfig || v.from || v['stale-after']))
    throw new UsageError('--kubeconfig, --from and --stale-after go with --cluster');
  if (v.cluster) {
    if (v.url) throw new UsageError('--url reads one agent; --cluster reads every node from the API server');
    const staleS = Number(v['stale-after'] ?? 600);
    if (!Number.isFinite(staleS) || staleS <= 0)
      throw new UsageError(`--stale-after: must be a number of seconds above 0 (got ${v['stale-after']})`);
    const items = await readNodeStatuses(v.from, v.kubeconfig);
    if (!items) return EXIT.ENVIRONMENT;
    const now = Date.now();
    const view = clusterView(items, now, staleS * 1000);
    console.log(v.json ? JSON.stringify(view, null, 2) : formatClusterView(view, now));
    return EXIT.OK;
  }
  const base = args.values.url ?? `http://${process.env.PORTLB_NODE_IP ?? '127.0.0.1'}:9180`;
  const url = `${base.replace(/\/$/, '')}/status`;
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(30_000) });
  } catch (err) {
    console.error(
      `portlb: cannot reach the agent at ${url} (${(err as Error).message}): is it running, and is --url its http.listen?`,
    );
    return EXIT.ENVIRONMENT;
  }
  if (!res.ok) {
    console.error(`portlb: ${url} answered ${res.status}: ${await res.text()}`);
    return EXIT.FAILED;
  }
  const status = (await res.json()) as Status;
  console.log(args.values.json ? JSON.stringify(status, null, 2) : formatStatus(status));
  return EXIT.OK;
}

/** The PortlbNodeStatus objects, from a file/stdin or the API server; undefined (said why) when they cannot be read. */
async function readNodeStatuses(
  from: string | undefined,
  kubeconfig: string | undefined,
): Promise<Json[] | undefined> {
  if (from) {
    let list: Json;
    try {
      list = JSON.parse(readFileSync(from === '-' ? 0 : from, 'utf8'));
    } catch (err) {
      throw new UsageError(
        `--from ${from}: not a JSON List (${describeError(err)}); give the output of kubectl get portlbnodestatuses -o json`,
      );
    }
    if (list?.kind === 'PortlbNodeStatus') return [list];
    if (!Array.isArray(list?.items))
      throw new UsageError(
        `--from ${from}: no items: give the output of kubectl get portlbnodestatuses -o json`,
      );
    return list.items;
  }
  let client: KubeClient;
  try {
    client = new KubeClient(await resolveConnection(kubeconfig));
  } catch (err) {
    console.error(
      `portlb: no API server (${describeError(err)}): give --kubeconfig, or pipe kubectl get portlbnodestatuses -o json into --from -`,
    );
    return undefined;
  }
  try {
    const list: Json = await client.request('GET', NODE_STATUS_PATH, { signal: AbortSignal.timeout(30_000) });
    return Array.isArray(list?.items) ? list.items : [];
  } catch (err) {
    const hint =
      err instanceof KubeApiError && err.status === 404
        ? ': the PortlbNodeStatus CRD is not installed (it comes with the chart)'
        : err instanceof KubeApiError && err.status === 403
          ? ': your user may not list portlbnodestatuses.portlb.io'
          : '';
    console.error(
      `portlb: cannot list PortlbNodeStatus objects at ${client.server} (${describeError(err)})${hint}`,
    );
    return undefined;
  } finally {
    client.close();
  }
}
