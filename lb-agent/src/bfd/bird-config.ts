// The configuration of the BFD-only BIRD beside gobgpd: one `protocol bfd` with a session
// per BFD-enabled peer. BIRD takes timers per interface, not per neighbour, and refuses a
// second `protocol bfd` that would hold the same sessions, so the timers are one pair for
// every peer (bfd.intervalMs, bfd.multiplier); multihop peers get the same pair.
// Pure: the agent writes the text atomically and asks BIRD to reload it.

export interface BfdPeer {
  address: string;
  /** Our address toward the peer (bgp.peers[].localAddress), when pinned. */
  localAddress?: string;
  /** A peer more than one hop away (bgp.peers[].ebgpMultihopTtl > 1): BFD multihop (port 4784). */
  multihop: boolean;
}

export interface BfdSettings {
  routerId: string;
  intervalMs: number;
  multiplier: number;
  peers: BfdPeer[];
}

export const BIRD_CONFIG_HEADER =
  '# portlb: BFD-only BIRD, written by lb-agent (every change is overwritten)';

export function renderBirdConfig(s: BfdSettings): string {
  const timers = `interval ${s.intervalMs} ms; multiplier ${s.multiplier};`;
  const peers = [...s.peers].sort((a, b) => a.address.localeCompare(b.address));
  const neighbors = peers.map(
    (p) =>
      `  neighbor ${p.address}${p.localAddress ? ` local ${p.localAddress}` : ''}${p.multihop ? ' multihop on' : ''};`,
  );
  return [
    BIRD_CONFIG_HEADER,
    `router id ${s.routerId};`,
    'log stderr { warning, error, fatal };',
    // BFD learns the node's interfaces and addresses from the device protocol.
    'protocol device { scan time 10; }',
    'protocol bfd portlb {',
    `  interface "*" { ${timers} };`,
    `  multihop { ${timers} };`,
    ...neighbors,
    '}',
    '',
  ].join('\n');
}

export type BfdState = 'up' | 'down' | 'init' | 'admin-down' | 'unknown';

export interface BfdSession {
  address: string;
  interface: string;
  state: BfdState;
  /** Transmit interval and detection timeout BIRD reports (seconds). */
  intervalSeconds: number | undefined;
  timeoutSeconds: number | undefined;
}

/**
 * `show bfd sessions` as BIRD 2.0 prints it (code 1020):
 *   portlb:
 *   IP address                Interface  State      Since         Interval  Timeout
 *   10.0.0.1                  veth0      Up         12:00:01.123    0.100    0.300
 */
export function parseBfdSessions(lines: readonly { code: number; text: string }[]): BfdSession[] {
  const out: BfdSession[] = [];
  for (const { code, text } of lines) {
    if (code !== 1020) continue;
    const f = text.trim().split(/\s+/);
    if (f.length < 3 || !/^[0-9a-fA-F:.]+$/.test(f[0]!) || !/[.:]/.test(f[0]!)) continue;
    const state = f[2]!.toLowerCase();
    const known: BfdState[] = ['up', 'down', 'init', 'admin-down'];
    const num = (s: string | undefined) =>
      s !== undefined && /^\d+(\.\d+)?$/.test(s) ? Number(s) : undefined;
    out.push({
      address: f[0]!,
      interface: f[1]!,
      state: known.includes(state as BfdState)
        ? (state as BfdState)
        : state === 'admindown'
          ? 'admin-down'
          : 'unknown',
      intervalSeconds: num(f.at(-2)),
      timeoutSeconds: num(f.at(-1)),
    });
  }
  return out;
}
