// The status document of one node (`/status`, `portlb status`): what it programs, with
// which backends and live connection counts, which VIPs it announces or withholds and
// why, its BGP peers, its last pass. Built from the last pass and a read of the kernel.
import type { PeerStatus } from '../bgp/types.ts';
import type { DesiredVirtualService } from '../core/desired.ts';
import type { ServiceHealth } from '../health/checker.ts';
import type { ServiceState } from '../ipvs/types.ts';
import { destinationId, serviceId } from '../ipvs/types.ts';
import { byKey, NODE_STATUS_LIMITS, type NodeStatusReport } from '../k8s/node-status.ts';
import { type Clock, wallTimeOf } from '../util/clock.ts';
import type { Pause, TimeSlicer } from '../util/slicer.ts';
import { Smallest } from '../util/smallest.ts';
import { runSteps, runStepsSliced } from '../util/steps.ts';
import { vipPrefix } from './announcer.ts';
import type { BfdStatus } from './bfd-lane.ts';
import type { PassResult } from './reconciler.ts';

export interface StatusInput {
  node: string;
  mode: string;
  leader: boolean | null;
  source: { kind: string; synced: boolean; healthy: boolean; error: string | undefined };
  ready: { ready: boolean; reasons: string[] };
  live: { ok: boolean; reason: string | undefined };
  last: PassResult | undefined;
  /** The kernel's services inside the pools, with counters; undefined when the read failed. */
  table: ServiceState[] | undefined;
  /** Why the kernel could not be read for this document. */
  kernelError?: string;
  bgp: { connected: boolean; peers: PeerStatus[] } | null;
  /** BFD responder and dead-man switch; null when BFD is not configured. */
  bfd?: BfdStatus | null;
  /** Health-checked services: each backend's state and last probe. */
  health?: ServiceHealth[];
  notices: { what: string; subject: string; reason: string | undefined; message: string }[];
  clock: Clock;
}

/** IPVS service id -> the owner (Service or file entry) that asked for it in the last pass. */
export const ownersById = (last: PassResult | undefined): Map<string, string> => runSteps(ownerSteps(last));

/** The same, in slices (`pause` after each service): for the periodic stats read at 10,000 services. */
export const ownersByIdSliced = (last: PassResult | undefined, pause: Pause): Promise<Map<string, string>> =>
  runStepsSliced(ownerSteps(last), pause);

function* ownerSteps(last: PassResult | undefined): Generator<void, Map<string, string>> {
  const owners = new Map<string, string>();
  for (const v of last?.desired.virtualServices ?? []) {
    owners.set(serviceId(v.spec.service.key), v.owner);
    yield;
  }
  return owners;
}

/**
 * Each VIP of the last pass: announced, or withheld and why, or kept through doubt. One
 * lookup per VIP (a node may hold thousands, most of them withheld while it starts).
 */
export const vipStates = (last: PassResult | undefined): VipState[] => {
  const out: VipState[] = [];
  runSteps(vipSteps(last, (v) => out.push(v)));
  return out;
};

interface VipState {
  address: string;
  owners: string[];
  announced: boolean;
  withheld: string | null;
  kept: boolean;
}

/** Each VIP's state to `visit`; every walk over the pass's lists (10,000 long at scale) yields per item. */
function* vipSteps(last: PassResult | undefined, visit: (v: VipState) => void): Generator<void, void> {
  const announced = new Set<string>();
  for (const a of last?.ads ?? []) {
    announced.add(a.prefix);
    yield;
  }
  const withheld = new Map<string, string>();
  for (const w of last?.withheld ?? []) {
    withheld.set(w.address, w.reason);
    yield;
  }
  const kept = new Set<string>();
  for (const address of last?.kept ?? []) {
    kept.add(address);
    yield;
  }
  for (const v of last?.desired.vips ?? []) {
    visit({
      address: v.address,
      owners: v.owners,
      announced: announced.has(vipPrefix(v.address, v.family)),
      withheld: withheld.get(v.address) ?? null,
      kept: kept.has(v.address),
    });
    yield;
  }
}

export function buildStatus(s: StatusInput): Record<string, unknown> {
  const last = s.last;
  const owners = ownersById(last);
  const outcomes = last?.report.services;
  return {
    node: s.node,
    mode: s.mode,
    leader: s.leader,
    source: s.source,
    ready: s.ready,
    live: s.live,
    lastSync: last && {
      at: new Date(last.at).toISOString(),
      ok: last.ok,
      full: last.full,
      durationMs: Math.round(last.durationMs),
      failures: last.report.failures,
    },
    // Unknown is not empty: a failed read shows as null with its reason.
    kernelError: s.kernelError ?? null,
    services:
      s.table?.map((t) => {
        const id = serviceId(t.service.key);
        return {
          id,
          owner: owners.get(id) ?? null,
          state: outcomes?.get(id)?.outcome ?? null,
          scheduler: t.service.scheduler,
          flags: t.service.schedulerFlags,
          connections: t.stats?.connections ?? 0,
          backends: t.destinations.map((d) => ({
            id: destinationId(d),
            forward: d.forward,
            weight: d.weight,
            active: d.activeConnections,
            inactive: d.inactiveConnections,
          })),
        };
      }) ?? null,
    vips: vipStates(last),
    draining: (last?.report.draining ?? []).map((d) => ({
      service: serviceId(d.key),
      backend: destinationId(d.destination),
      active: d.activeConnections,
      since: new Date(wallTimeOf(s.clock, d.since)).toISOString(),
    })),
    skipped: last?.desired.skipped ?? [],
    warnings: last?.desired.warnings ?? [],
    notices: s.notices,
    bgp: s.bgp && { ...s.bgp, announced: [...new Set((last?.ads ?? []).map((a) => a.prefix))] },
    bfd: s.bfd ?? null,
    health: (s.health ?? []).map((h) => ({
      service: h.service,
      check: h.check,
      healthy: h.healthy,
      total: h.total,
      backends: h.backends.map((b) => ({
        backend: b.address.includes(':') ? `[${b.address}]:${b.port}` : `${b.address}:${b.port}`,
        state: b.state,
        last: b.last ? `${b.last.outcome}: ${b.last.detail}` : null,
        since: new Date(b.since).toISOString(),
      })),
    })),
  };
}

export interface NodeReportInput {
  node: string;
  identity: string;
  version: string;
  leader: boolean;
  ready: { ready: boolean; reasons: string[] };
  last: PassResult | undefined;
  bgp: { connected: boolean; peers: PeerStatus[] } | null;
  bfd: BfdStatus | null;
  health: ServiceHealth[];
}

/**
 * What this node does for the cluster view (its PortlbNodeStatus), from the last pass
 * alone: the weights it asked for, no kernel read (that costs seconds at scale; the node's
 * own /status has the live counters). Every VIP and service is counted, but only those the
 * object keeps (NODE_STATUS_LIMITS, first by address and id) are chosen (never a sort of
 * them all) and built, and every walk yields (`pause` after each item): at 10,000
 * services x 10 backends, building every backend every 10 s held the event loop for
 * hundreds of milliseconds in UML, and so did the sorts and sets of 10,000 in one turn.
 * `slicer.check()` between walks of different kinds: their items' costs differ.
 */
export async function nodeReport(
  s: NodeReportInput,
  slicer: Pick<TimeSlicer, 'pause' | 'check'> = { pause: async () => {}, check: async () => {} },
): Promise<NodeStatusReport> {
  const L = NODE_STATUS_LIMITS;
  const pause = () => slicer.pause();
  const last = s.last;
  const vips = new Smallest<VipState>(
    L.vips,
    byKey((v) => v.address),
  );
  let announced = 0;
  await runStepsSliced(
    vipSteps(last, (v) => {
      vips.add(v);
      if (v.announced) announced++;
    }),
    pause,
  );
  await slicer.check();
  const services = new Smallest<{ id: string; v: DesiredVirtualService }>(
    L.services,
    byKey((s) => s.id),
  );
  for (const v of last?.desired.virtualServices ?? []) {
    services.add({ id: serviceId(v.spec.service.key), v });
    await pause();
  }
  await slicer.check();
  const bfd = new Map((s.bfd?.sessions ?? []).map((x) => [x.peer, x.state]));
  const health = new Map<string, string>();
  for (const h of s.health)
    for (const b of h.backends) {
      health.set(`${h.service}|${b.address}|${b.port}`, b.state);
      await pause();
    }
  // Building a service's backends costs far more than the items before.
  await slicer.check();
  const built: NodeStatusReport['services'] = [];
  for (const { id, v } of services.sorted()) {
    const backends = new Smallest<NodeStatusReport['services'][number]['backends'][number]>(
      L.backendsPerService,
      byKey((b) => b.address),
    );
    for (const d of v.spec.destinations)
      backends.add({
        address: destinationId(d),
        weight: d.weight,
        health: health.get(`${v.owner}|${d.address}|${d.port}`) ?? null,
      });
    built.push({
      id,
      vip: v.vip,
      owner: v.owner,
      state: last?.report.services.get(id)?.outcome ?? 'unknown',
      backendCount: v.spec.destinations.length,
      backends: backends.sorted(),
    });
    await pause();
  }
  return {
    node: s.node,
    identity: s.identity,
    version: s.version,
    ready: s.ready.ready,
    reasons: s.ready.reasons,
    leader: s.leader,
    lastSync: last ? { at: new Date(last.at).toISOString(), ok: last.ok } : null,
    speakerConnected: s.bgp ? s.bgp.connected : null,
    peers: (s.bgp?.peers ?? []).map((p) => ({
      address: p.address,
      asn: p.asn,
      state: p.state,
      bfd: s.bfd ? (bfd.get(p.address) ?? null) : null,
    })),
    vips: vips.sorted().map(({ kept: _, ...v }) => v),
    services: built,
    counts: { vips: vips.count, vipsAnnounced: announced, services: services.count },
  };
}
