// BFD beside the BGP speaker: the responder (a BFD-only BIRD the agent provisions) and the
// dead-man switch that holds BFD down while the agent is not live (docs/bfd.md). Its own
// lane: neither waits for the sync loop, and the sync loop never waits for them.

import { BfdResponder, type BfdView } from '../bfd/bfd-responder.ts';
import type { BfdPeer } from '../bfd/bird-config.ts';
import { DeadManSwitch, type GuardBackend, LegacyGuard, NftGuard } from '../bfd/dead-man.ts';
import type { AgentConfig } from '../config/agent-config.ts';
import type { Clock } from '../util/clock.ts';
import type { Logger } from '../util/log.ts';
import type { AgentMetrics } from './metrics.ts';

/** The peers that get a BFD session: every configured one unless it says bfd: false. */
export function bfdPeers(config: AgentConfig): BfdPeer[] {
  if (!config.bfd || !config.bgp) return [];
  return config.bgp.peers
    .filter((p) => p.bfd ?? true)
    .map((p) => ({
      address: p.address,
      localAddress: p.localAddress,
      multihop: (p.ebgpMultihopTtl ?? 1) > 1,
    }));
}

/** BGP's TCP ports toward the BFD peers: each peer's, and our listener's. */
export function bgpPorts(config: AgentConfig): number[] {
  const bgp = config.bgp;
  if (!bgp) return [];
  const ports = bgp.peers.filter((p) => p.bfd ?? true).map((p) => p.port);
  if (bgp.listenPort > 0) ports.push(bgp.listenPort);
  return [...new Set(ports)].sort((a, b) => a - b);
}

export interface BfdStatus {
  reachable: boolean;
  error: string | null;
  sessions: { peer: string; state: string }[] | null;
  deadMan: { timeoutSeconds: number; holding: string | null } | null;
}

export class BfdLane {
  readonly responder: BfdResponder;
  readonly deadMan: DeadManSwitch | undefined;
  private readonly metrics: AgentMetrics;

  constructor(o: {
    config: AgentConfig;
    routerId: string;
    /** ms the sync pass in progress has been running (0: none). */
    passRunningMs: () => number;
    /** nftables or legacy iptables, as the rest of portlb's netfilter objects; or a test's. */
    guard: GuardBackend | 'nftables' | 'iptables-legacy';
    metrics: AgentMetrics;
    clock: Clock;
    logger: Logger;
  }) {
    const bfd = o.config.bfd!;
    const peers = bfdPeers(o.config);
    this.metrics = o.metrics;
    this.responder = new BfdResponder({
      settings: { routerId: o.routerId, intervalMs: bfd.intervalMs, multiplier: bfd.multiplier, peers },
      socket: bfd.socket,
      configFile: bfd.configFile,
      clock: o.clock,
      logger: o.logger,
    });
    if (bfd.deadManSeconds > 0 && peers.length) {
      const maxPassMs = bfd.maxPassSeconds * 1000;
      this.deadMan = new DeadManSwitch({
        peers: peers.map((p) => p.address),
        bgpPorts: bgpPorts(o.config),
        timeoutMs: bfd.deadManSeconds * 1000,
        backend:
          o.guard === 'nftables'
            ? new NftGuard()
            : o.guard === 'iptables-legacy'
              ? new LegacyGuard()
              : o.guard,
        live: () => {
          const running = o.passRunningMs();
          return running > maxPassMs
            ? { ok: false, reason: `a sync pass has been running for ${Math.round(running / 1000)} s` }
            : { ok: true, reason: undefined };
        },
        clock: o.clock,
        logger: o.logger,
        onChange: (holding) => this.metrics.deadManHolding.set(holding ? 1 : 0),
        onLapse: () => this.metrics.deadManLapses.inc(),
      });
      this.metrics.deadManHolding.set(0);
    }
  }

  start(): this {
    this.deadMan?.start();
    this.responder.start((v) => this.record(v));
    return this;
  }

  close(): void {
    this.deadMan?.close();
    this.responder.close();
  }

  private record(v: BfdView): void {
    this.metrics.bfdResponderReachable.set(v.reachable ? 1 : 0);
    this.metrics.bfdSessionUp.reset();
    // Unknown is not down: no sample while the responder cannot be asked.
    if (v.reachable)
      for (const s of v.sessions ?? [])
        this.metrics.bfdSessionUp.set({ peer: s.address, state: s.state }, s.state === 'up' ? 1 : 0);
  }

  status(): BfdStatus {
    const v = this.responder.state();
    return {
      reachable: v.reachable,
      error: v.error ?? null,
      sessions: v.reachable ? (v.sessions ?? []).map((s) => ({ peer: s.address, state: s.state })) : null,
      deadMan: this.deadMan
        ? { timeoutSeconds: this.deadMan.timeoutMs / 1000, holding: this.deadMan.holding ?? null }
        : null,
    };
  }
}
