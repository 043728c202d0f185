import { EXIT, helpText, parseCommand, UsageError } from './args.ts';

const spec = {
  usage: 'portlb status [--url URL] [--json]',
  description:
    'Shows what the agent on this node does: its services and backends (weights, connections),\n' +
    'draining backends, VIPs (announced or why not), BGP peers, and the last sync. Reads the\n' +
    "agent's /status endpoint.",
  options: { url: { type: 'string' }, json: { type: 'boolean' } },
  optionHelp: [
    '--url URL            the agent (default http://$PORTLB_NODE_IP:9180, else http://127.0.0.1:9180)',
    '--json               the raw status document',
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
