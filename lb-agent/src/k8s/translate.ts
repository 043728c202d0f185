// Kubernetes objects (lean, objects.ts) -> ServiceIntents, pure. Which Services are ours
// (type, class), their assigned VIPs (status), their ports, and their endpoints chosen as
// kube-proxy reads EndpointSlices. Every LoadBalancer Service left out gets a reason;
// malformed objects never throw. A Service whose portlb.io/ settings turn invalid keeps
// its last valid ones (with a warning) instead of going down: the caller hands the last
// valid settings in and keeps the ones handed back.
import type { Endpoint, PortIntent, ServiceIntent, Skip } from '../core/types.ts';
import type { Protocol } from '../ipvs/types.ts';
import { canonicalIp, type Family, ipFamily } from '../net/ip.ts';
import { compact } from '../util/compact.ts';
import { parseAnnotations, type ServiceSettings } from './annotations.ts';
import {
  EXCLUDE_LABEL,
  type LeanEndpointSlice,
  type LeanNode,
  type LeanService,
  SERVICE_NAME_LABEL,
} from './objects.ts';

export { EXCLUDE_LABEL, SERVICE_NAME_LABEL };

export interface KubeSnapshot {
  services: readonly LeanService[];
  endpointSlices: readonly LeanEndpointSlice[];
}

export interface TranslateConfig {
  loadBalancerClass: string;
  serveServicesWithoutClass: boolean;
  defaultScheduler: string;
  defaultForwarding: 'nat' | 'tunnel' | 'dr';
}

/** Whether portlb is the implementation for this Service (type and class). */
export function isOurs(
  svc: Pick<LeanService, 'type' | 'loadBalancerClass'>,
  cfg: Pick<TranslateConfig, 'loadBalancerClass' | 'serveServicesWithoutClass'>,
): boolean {
  if (svc.type !== 'LoadBalancer') return false;
  const cls = svc.loadBalancerClass;
  return !cls ? cfg.serveServicesWithoutClass : cls === cfg.loadBalancerClass;
}

const PROTOCOLS: Record<string, Protocol> = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' };

function validPort(p: unknown): p is number {
  return typeof p === 'number' && Number.isInteger(p) && p >= 1 && p <= 65535;
}

/** Endpoints of one service port, from all of the service's slices (deduplicated by ip:port). */
export function endpointsForPort(
  slices: readonly LeanEndpointSlice[],
  port: { name: string; protocol: Protocol },
  warnings: string[],
): Endpoint[] {
  const byKey = new Map<string, Endpoint>();
  for (const slice of slices) {
    const family: Family | undefined =
      slice.addressType === 'IPv4' ? 'ipv4' : slice.addressType === 'IPv6' ? 'ipv6' : undefined;
    if (!family) continue; // FQDN slices carry no addresses to balance to
    const slicePort = slice.ports.find(
      (p) => p.name === port.name && PROTOCOLS[p.protocol ?? 'TCP'] === port.protocol,
    );
    if (!slicePort) continue;
    if (!validPort(slicePort.port)) {
      warnings.push(
        `EndpointSlice ${slice.name}: port ${JSON.stringify(port.name)} has no valid number (${JSON.stringify(slicePort.port)})`,
      );
      continue;
    }
    for (const ep of slice.endpoints) {
      const raw = ep.address;
      const address = typeof raw === 'string' ? canonicalIp(raw) : undefined;
      if (!address || ipFamily(address) !== family) {
        warnings.push(
          `EndpointSlice ${slice.name}: endpoint address ${JSON.stringify(raw)} is not an ${family} address, ignored`,
        );
        continue;
      }
      // Unset conditions mean ready/serving (the API's documented default); terminating defaults to false.
      const ready = ep.ready !== false;
      const serving = ep.serving ?? ready;
      const terminating = ep.terminating === true;
      const e: Endpoint = {
        address,
        family,
        port: slicePort.port,
        ready: ready && !terminating,
        serving,
        terminating,
        nodeName: ep.nodeName,
      };
      const key = `${address}|${e.port}`;
      const prev = byKey.get(key);
      // The same endpoint in two slices (during a slice update): keep the more available view.
      if (!prev || (e.ready && !prev.ready) || (e.serving && !prev.serving)) byKey.set(key, e);
    }
  }
  return [...byKey.values()];
}

function persistenceOf(svc: LeanService, settings: ServiceSettings): ServiceIntent['persistence'] {
  let timeout: number | undefined;
  if (svc.sessionAffinity === 'ClientIP') timeout = svc.affinityTimeoutSeconds ?? 10800;
  if (settings.persistenceTimeout !== undefined) timeout = settings.persistenceTimeout;
  if (!timeout) return undefined;
  return { timeout, prefix: settings.persistenceNetmask };
}

/** The last valid portlb.io/ settings of each Service, by namespace/name (with its uid). */
export type LastValidSettings = ReadonlyMap<string, { uid: string | undefined; settings: ServiceSettings }>;

export interface Translation {
  services: ServiceIntent[];
  skipped: Skip[];
  /** The settings in force for each of our Services (the allocator needs pools and sharing keys). */
  settings: Map<string, ServiceSettings>;
  /** Services running on their last valid settings because the current ones are invalid. */
  kept: { service: string; problem: string }[];
  /** To hand to the next translation. */
  lastValid: Map<string, { uid: string | undefined; settings: ServiceSettings }>;
}

/** One Service's translation: an intent or a skip, and its settings whenever they are known. */
export type OneResult = ({ skip: Skip; intent?: undefined } | { intent: ServiceIntent; skip?: undefined }) & {
  /** The settings in force (valid, or the last valid ones); absent when invalid with nothing to fall back on. */
  settings?: ServiceSettings;
  /** Why the current settings are not the ones in force. */
  problem?: string;
};

/**
 * Per-Service results keyed by the resourceVersions of the Service and its slices: an
 * unchanged Service yields the very same intent object (so computeDesired's memo hits
 * too), and a 1-slice change costs one Service's work instead of all of them.
 */
export class TranslateMemo {
  private entries = new Map<
    string,
    { key: string; svc: LeanService; slices: readonly LeanEndpointSlice[]; kept: boolean; result: OneResult }
  >();

  /**
   * The same objects as last time (the caches replace an object when it changes) answer
   * without building the resourceVersion key: at 10,000 Services that key's strings and
   * sort were a third of the translation's time in every pass.
   */
  lookup(
    id: string,
    svc: LeanService,
    slices: readonly LeanEndpointSlice[],
    kept: boolean,
    compute: () => OneResult,
  ): OneResult {
    const hit = this.entries.get(id);
    if (hit && hit.svc === svc && hit.kept === kept && sameItems(hit.slices, slices)) return hit.result;
    const key = versionKey(svc, slices, kept);
    if (key === undefined) return compute();
    if (hit && hit.key === key) {
      this.entries.set(id, { ...hit, svc, slices, kept });
      return hit.result;
    }
    const result = compute();
    this.entries.set(id, { key, svc, slices, kept, result });
    return result;
  }

  /** The Service object and result the last lookup of `id` saw. */
  peek(id: string): { svc: LeanService; result: OneResult } | undefined {
    return this.entries.get(id);
  }

  retain(ids: Set<string>): void {
    for (const id of this.entries.keys()) if (!ids.has(id)) this.entries.delete(id);
  }
}

const sameItems = <T>(a: readonly T[], b: readonly T[]) =>
  a.length === b.length && a.every((x, i) => x === b[i]);

function versionKey(
  svc: LeanService,
  slices: readonly LeanEndpointSlice[],
  kept: boolean,
): string | undefined {
  if (!svc.resourceVersion) return undefined;
  const parts = [svc.resourceVersion, kept ? 'kept' : ''];
  for (const s of slices) {
    if (!s.resourceVersion) return undefined;
    parts.push(`${s.name}@${s.resourceVersion}`);
  }
  return parts.sort().join('|');
}

export function translateKubernetes(
  snapshot: KubeSnapshot,
  cfg: TranslateConfig,
  options: { memo?: TranslateMemo; lastValid?: LastValidSettings } = {},
): Translation {
  const slicesByService = new Map<string, LeanEndpointSlice[]>();
  for (const slice of snapshot.endpointSlices) {
    const key = slice.serviceId;
    if (!key) continue;
    const list = slicesByService.get(key);
    if (list) list.push(slice);
    else slicesByService.set(key, [slice]);
  }
  const out: Translation = { services: [], skipped: [], settings: new Map(), kept: [], lastValid: new Map() };
  const seen = new Set<string>();
  for (const svc of snapshot.services) {
    if (svc.type !== 'LoadBalancer') continue;
    const id = svc.id;
    seen.add(id);
    const previous = options.lastValid?.get(id);
    try {
      const result = translateService(svc, slicesByService.get(id) ?? [], cfg, options);
      if (result.settings) {
        out.settings.set(id, result.settings);
        out.lastValid.set(
          id,
          previous && previous.uid === svc.uid && previous.settings === result.settings
            ? previous
            : { uid: svc.uid, settings: result.settings },
        );
        if (result.problem) out.kept.push({ service: id, problem: result.problem });
      }
      if (result.skip) out.skipped.push(result.skip);
      else out.services.push(result.intent);
    } catch (err) {
      out.skipped.push({
        service: id,
        reason: 'Malformed',
        detail: `could not read the object: ${(err as Error).message}`,
      });
    }
  }
  options.memo?.retain(seen);
  return out;
}

/** One LoadBalancer Service with its EndpointSlices (through the memo when there is one). */
export function translateService(
  svc: LeanService,
  slices: readonly LeanEndpointSlice[],
  cfg: TranslateConfig,
  options: { memo?: TranslateMemo; lastValid?: LastValidSettings },
): OneResult {
  const previous = options.lastValid?.get(svc.id);
  const fallback = previous && previous.uid === svc.uid ? previous.settings : undefined;
  const compute = () => translateOne(svc, svc.id, slices, cfg, fallback);
  return options.memo ? options.memo.lookup(svc.id, svc, slices, fallback !== undefined, compute) : compute();
}

function translateOne(
  svc: LeanService,
  id: string,
  slices: readonly LeanEndpointSlice[],
  cfg: TranslateConfig,
  fallback: ServiceSettings | undefined,
): OneResult {
  let settings: ServiceSettings | undefined;
  let problem: string | undefined;
  const skip = (reason: Skip['reason'], detail: string): OneResult => ({
    skip: { service: id, reason, detail },
    settings,
    problem,
  });
  if (!isOurs(svc, cfg)) {
    return skip(
      'NotOurClass',
      `loadBalancerClass ${JSON.stringify(svc.loadBalancerClass ?? null)} is not ${cfg.loadBalancerClass}`,
    );
  }
  const parsed = parseAnnotations(svc.annotations, cfg.defaultScheduler);
  const warnings: string[] = parsed.ok ? [...parsed.warnings] : [];
  if (parsed.ok) settings = parsed.settings;
  else if (fallback) {
    // A typo on a serving Service must not take it down: the last valid settings stay.
    settings = fallback;
    problem = parsed.problem;
    warnings.push(`${parsed.problem}; the last valid settings stay in force until it is fixed`);
  } else return skip('InvalidAnnotation', parsed.problem);

  const rawPorts = svc.ports;
  if (!Array.isArray(rawPorts) || rawPorts.length === 0) return skip('NoPorts', 'spec.ports is empty');
  const ports: PortIntent[] = [];
  for (const [i, p] of rawPorts.entries()) {
    const protocol =
      PROTOCOLS[typeof p.protocol === 'string' ? p.protocol : p.protocol === undefined ? 'TCP' : ''];
    if (!protocol)
      return skip(
        'UnsupportedProtocol',
        `spec.ports[${i}].protocol ${JSON.stringify(p.protocol)} is not TCP, UDP or SCTP`,
      );
    if (!validPort(p.port))
      return skip('InvalidPort', `spec.ports[${i}].port ${JSON.stringify(p.port)} is not 1..65535`);
    ports.push({
      name: p.name,
      protocol,
      port: p.port,
      endpoints: endpointsForPort(slices, { name: p.name, protocol }, warnings),
    });
  }

  const vips: string[] = [];
  for (const ing of svc.ingress) {
    if (!ing.ip) continue; // hostname-only entries are for other implementations
    const ip = canonicalIp(ing.ip);
    if (!ip)
      return skip(
        'InvalidAddress',
        `status.loadBalancer.ingress ip ${JSON.stringify(ing.ip)} is not an IP address`,
      );
    if (!vips.includes(ip)) vips.push(ip);
  }
  if (!vips.length)
    return skip('NoAddress', 'no address assigned yet (status.loadBalancer.ingress is empty)');

  const intent: ServiceIntent = {
    id,
    vips: compact(vips),
    ports: compact(ports),
    scheduler: settings.scheduler ?? cfg.defaultScheduler,
    schedulerFlags: settings.schedulerFlags ?? [],
    forwarding: settings.forwarding ?? cfg.defaultForwarding,
    persistence: persistenceOf(svc, settings),
    trafficPolicy: svc.externalTrafficPolicy === 'Local' ? 'Local' : 'Cluster',
    announce: true,
    warnings,
    ...(settings.healthCheck ? { healthCheck: settings.healthCheck } : {}),
  };
  return { intent, settings, problem };
}

/** The node facts that decide whether this node announces. */
export function nodeInfo(
  node: LeanNode | undefined,
  name: string,
): { name: string; excluded: boolean; ready: boolean } {
  if (!node) return { name, excluded: false, ready: false };
  return { name, excluded: node.excluded, ready: node.ready };
}
