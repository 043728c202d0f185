// The IPVS diff: a pure function from (desired, actual, ownership, drain state, now) to an
// explicit list of operations. It never plans a write to a service it does not own, and
// it drains a removed TCP/SCTP destination (weight 0, delete once idle or after a bound)
// instead of cutting its connections.

import type { Pause } from '../util/slicer.ts';
import { runSteps, runStepsSliced } from '../util/steps.ts';
import { canonicalOrder, planMhOrder } from './mh-order.ts';
import {
  canonicalDestinationId,
  normalizeRealServer,
  normalizeService,
  normalizeServiceKey,
  realServerSettings,
  realServerSettingsEqual,
  serviceSettingsEqual,
} from './normalize.ts';
import {
  type DestinationKey,
  destinationId,
  type IpvsOperation,
  type KnownRealServer,
  type KnownService,
  type ServiceKey,
  type ServiceSpec,
  serviceId,
  specId,
} from './types.ts';

export type Ownership = (key: ServiceKey) => boolean;

export interface PlanInput {
  desired: readonly ServiceSpec[];
  /**
   * What the kernel holds: a table, or one already keyed by serviceId (the state cache's
   * own map: at 10,000 services, copying and re-keying it was a third of the plan's time).
   */
  actual: readonly KnownService[] | ReadonlyMap<string, KnownService>;
  owns: Ownership;
  /** Milliseconds, from the injected clock. */
  now: number;
  /** drainKey -> when its drain started (ms). */
  draining: ReadonlyMap<string, number>;
  /** How long a removed destination may drain; 0 removes at once. */
  drainTimeoutMs: number;
  /**
   * The caller vouches that this desired service is unchanged since a pass after which the
   * kernel matched it: its comparison is skipped (a 1% change then costs 1% of the work).
   * Services with draining destinations are always compared.
   */
  unchanged?: (spec: ServiceSpec) => boolean;
  /**
   * `desired` holds only some of the wanted services (an incremental pass): those not in it
   * are neither compared nor deleted, and the returned drain bookkeeping covers only the
   * services planned.
   */
  partial?: boolean;
}

export interface DrainStatus {
  key: ServiceKey;
  destination: DestinationKey;
  since: number;
  activeConnections: number;
  inactiveConnections: number;
}

export interface IpvsPlan {
  operations: IpvsOperation[];
  /** The drain bookkeeping to keep for the next pass. */
  draining: Map<string, number>;
  /** Destinations still draining after this plan (weight 0, connections left). */
  drainingNow: DrainStatus[];
  /** Desired services refused because the ownership predicate does not cover them. */
  refused: { key: ServiceKey; reason: string }[];
  /** Services present in the kernel that we do not own and leave alone. */
  foreign: number;
  /** mh destinations deleted and added again to restore the canonical list order. */
  moved: number;
}

export const drainKey = (key: ServiceKey, dest: DestinationKey): string =>
  `${serviceId(key)}|${destinationId(dest)}`;

/** The services that have a destination in the drain bookkeeping. */
export const drainingServiceIds = (draining: ReadonlyMap<string, number>): Set<string> =>
  new Set([...draining.keys()].map((k) => k.slice(0, k.indexOf('|'))));

/** UDP has no connection to wait for: a removed UDP destination goes at once. */
function needsDrain(key: ServiceKey): boolean {
  return key.kind === 'fwmark' || key.protocol !== 'udp';
}

export function planIpvs(input: PlanInput): IpvsPlan {
  return runSteps(planSteps(input));
}

/**
 * The same plan, made in slices: at 10,000 services a full plan is about 300 ms of
 * JavaScript on a fast host (seconds in UML), and nothing else may hold the event loop
 * that long (a change, a probe, a scrape). `pause` is awaited after each service.
 */
export function planIpvsSliced(input: PlanInput, pause: Pause): Promise<IpvsPlan> {
  return runStepsSliced(planSteps(input), pause);
}

/** The plan, one service per step. */
function* planSteps(input: PlanInput): Generator<void, IpvsPlan> {
  const { owns, now, drainTimeoutMs } = input;
  const adds: IpvsOperation[] = [];
  const updates: IpvsOperation[] = [];
  const drains: IpvsOperation[] = [];
  const destDeletes: IpvsOperation[] = [];
  const serviceDeletes: IpvsOperation[] = [];
  const draining = new Map<string, number>();
  const drainingNow: DrainStatus[] = [];
  const refused: IpvsPlan['refused'] = [];
  let foreign = 0;
  let moved = 0;

  const actualById: ReadonlyMap<string, KnownService> =
    input.actual instanceof Map
      ? input.actual
      : new Map((input.actual as readonly KnownService[]).map((s) => [serviceId(s.service.key), s]));
  const desiredIds = new Set<string>();

  /** Returns whether the destination stays (draining at weight 0) or goes now. */
  const removeDestination = (key: ServiceKey, d: KnownRealServer): 'drains' | 'goes' => {
    if (!needsDrain(key) || drainTimeoutMs <= 0) {
      destDeletes.push({ op: 'delete-destination', key, destination: pickKey(d) });
      return 'goes';
    }
    const dk = drainKey(key, d);
    const since = input.draining.get(dk) ?? now;
    // Counts not read are unknown, not zero: such a destination drains.
    const idle = d.activeConnections === 0 && d.inactiveConnections === 0;
    if (idle || (d.weight === 0 && now - since >= drainTimeoutMs)) {
      destDeletes.push({ op: 'delete-destination', key, destination: pickKey(d) });
      return 'goes';
    }
    if (d.weight !== 0) {
      // Quiesce first: no new connections, the established ones carry on.
      drains.push({ op: 'update-destination', key, destination: { ...realServerSettings(d), weight: 0 } });
    }
    draining.set(dk, since);
    drainingNow.push({
      key,
      destination: pickKey(d),
      since,
      activeConnections: d.activeConnections ?? 0,
      inactiveConnections: d.inactiveConnections ?? 0,
    });
    return 'drains';
  };

  const drainingServices = drainingServiceIds(input.draining);
  for (const spec of input.desired) {
    yield;
    if (input.unchanged?.(spec)) {
      const id = specId(spec);
      if (actualById.has(id) && !drainingServices.has(id)) {
        desiredIds.add(id);
        continue;
      }
    }
    // Compare first, copy only what becomes an operation: a converged pass allocates nothing per destination.
    const key = normalizeServiceKey(spec.service.key);
    const id = serviceId(key);
    if (!owns(key)) {
      refused.push({ key, reason: 'outside the owned VIP pools' });
      continue;
    }
    desiredIds.add(id);
    const current = actualById.get(id);
    if (current && !drainingServices.has(id) && converged(spec, current)) continue;
    const mh = spec.service.scheduler === 'mh';
    if (!current) {
      adds.push({ op: 'add-service', service: normalizeService(spec.service) });
      // mh: each add goes to the head of the list; the last one added is the first.
      const dests = mh ? [...canonicalOrder(spec.destinations)].reverse() : spec.destinations;
      for (const d of dests) {
        adds.push({ op: 'add-destination', key, destination: normalizeRealServer(d) });
      }
      continue;
    }
    if (!serviceSettingsEqual(current.service, spec.service)) {
      updates.push({ op: 'update-service', service: normalizeService(spec.service) });
    }
    const currentDests = new Map(current.destinations.map((d) => [destinationId(d), d]));
    const wanted = new Set(spec.destinations.map(canonicalDestinationId));
    const leaving = new Set<string>();
    const pinned = new Set<string>();
    for (const [did, d] of currentDests) {
      if (wanted.has(did)) continue;
      (removeDestination(key, d) === 'goes' ? leaving : pinned).add(did);
    }
    // mh: insert (and move) what keeps the kernel's list in canonical order, in sequence.
    const inserted = new Set<string>();
    if (mh) {
      const plan = planMhOrder(
        spec.destinations,
        current.destinations.filter((d) => !leaving.has(destinationId(d))),
        pinned,
      );
      for (const { destination, move } of plan.inserts) {
        inserted.add(canonicalDestinationId(destination));
        if (move) {
          adds.push({ op: 'delete-destination', key, destination: pickKey(destination) });
          moved++;
        }
        adds.push({ op: 'add-destination', key, destination: normalizeRealServer(destination) });
      }
    }
    for (const d of spec.destinations) {
      const did = canonicalDestinationId(d);
      if (inserted.has(did)) continue;
      const have = currentDests.get(did);
      if (!have) adds.push({ op: 'add-destination', key, destination: normalizeRealServer(d) });
      else if (!realServerSettingsEqual(have, d)) {
        updates.push({ op: 'update-destination', key, destination: normalizeRealServer(d) });
      }
    }
  }

  for (const [id, state] of input.partial ? [] : actualById) {
    if (desiredIds.has(id)) continue;
    yield;
    if (!owns(state.service.key)) {
      foreign++;
      continue;
    }
    serviceDeletes.push({ op: 'delete-service', key: state.service.key });
  }

  // A create from empty is all adds (110,000 at 10,000 services): no copy of them then.
  const rest = [...updates, ...drains, ...destDeletes, ...serviceDeletes];
  return {
    operations: rest.length === 0 ? adds : [...adds, ...rest],
    draining,
    drainingNow,
    refused,
    foreign,
    moved,
  };
}

/**
 * The kernel holds exactly the desired service, in the order this planner leaves its list
 * (mh: canonical, head first; the others: in reverse of the desired order, as each add
 * goes to the head). The common case of a full pass, decided without the maps and sets
 * of the comparison below (those were most of a converged plan's time at 10,000 services);
 * anything else, another order included, takes the comparison.
 */
function converged(spec: ServiceSpec, current: KnownService): boolean {
  const mh = spec.service.scheduler === 'mh';
  const want = mh ? canonicalOrder(spec.destinations) : spec.destinations;
  const have = current.destinations;
  const n = want.length;
  if (have.length !== n || !serviceSettingsEqual(current.service, spec.service)) return false;
  for (let i = 0; i < n; i++) {
    const d = want[i]!;
    const c = have[mh ? i : n - 1 - i]!;
    const same =
      d.family === c.family &&
      d.port === c.port &&
      (d.family === 'ipv4' ? d.address === c.address : canonicalDestinationId(d) === destinationId(c));
    if (!same || !realServerSettingsEqual(c, d)) return false;
  }
  return true;
}

function pickKey(d: DestinationKey): DestinationKey {
  return { family: d.family, address: d.address, port: d.port };
}

export interface PlanSummary {
  addServices: number;
  updateServices: number;
  deleteServices: number;
  addDestinations: number;
  updateDestinations: number;
  deleteDestinations: number;
}

export function summarizePlan(ops: readonly IpvsOperation[]): PlanSummary {
  const s: PlanSummary = {
    addServices: 0,
    updateServices: 0,
    deleteServices: 0,
    addDestinations: 0,
    updateDestinations: 0,
    deleteDestinations: 0,
  };
  for (const op of ops) {
    if (op.op === 'add-service') s.addServices++;
    else if (op.op === 'update-service') s.updateServices++;
    else if (op.op === 'delete-service') s.deleteServices++;
    else if (op.op === 'add-destination') s.addDestinations++;
    else if (op.op === 'update-destination') s.updateDestinations++;
    else s.deleteDestinations++;
  }
  return s;
}
