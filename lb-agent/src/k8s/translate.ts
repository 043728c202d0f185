// Kubernetes objects -> ServiceIntents, pure. Which Services are ours (type, class), their
// assigned VIPs (status), their ports, and their endpoints chosen as kube-proxy reads
// EndpointSlices. Every LoadBalancer Service left out gets a reason; malformed objects are
// read defensively and never throw.
import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import type { Endpoint, PortIntent, ServiceIntent, Skip } from '../core/types.ts';
import type { Protocol } from '../ipvs/types.ts';
import { canonicalIp, type Family, ipFamily } from '../net/ip.ts';
import { parseAnnotations, type ServiceSettings } from './annotations.ts';

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
export const EXCLUDE_LABEL = 'node.kubernetes.io/exclude-from-external-load-balancers';

export interface KubeSnapshot {
  services: readonly V1Service[];
  endpointSlices: readonly V1EndpointSlice[];
}

export interface TranslateConfig {
  loadBalancerClass: string;
  serveServicesWithoutClass: boolean;
  defaultScheduler: string;
  defaultForwarding: 'nat' | 'tunnel' | 'dr';
}

export const serviceKey = (s: { metadata?: { namespace?: string; name?: string } }): string =>
  `${s.metadata?.namespace ?? ''}/${s.metadata?.name ?? ''}`;

/** Whether portlb is the implementation for this Service (type and class). */
export function isOurs(
  svc: V1Service,
  cfg: Pick<TranslateConfig, 'loadBalancerClass' | 'serveServicesWithoutClass'>,
): boolean {
  if (svc?.spec?.type !== 'LoadBalancer') return false;
  const cls = svc.spec.loadBalancerClass;
  return cls === undefined || cls === null || cls === ''
    ? cfg.serveServicesWithoutClass
    : cls === cfg.loadBalancerClass;
}

const PROTOCOLS: Record<string, Protocol> = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' };

function validPort(p: unknown): p is number {
  return typeof p === 'number' && Number.isInteger(p) && p >= 1 && p <= 65535;
}

/** Endpoints of one service port, from all of the service's slices (deduplicated by ip:port). */
export function endpointsForPort(
  slices: readonly V1EndpointSlice[],
  port: { name: string; protocol: Protocol },
  warnings: string[],
): Endpoint[] {
  const byKey = new Map<string, Endpoint>();
  for (const slice of slices) {
    const family: Family | undefined =
      slice.addressType === 'IPv4' ? 'ipv4' : slice.addressType === 'IPv6' ? 'ipv6' : undefined;
    if (!family) continue; // FQDN slices carry no addresses to balance to
    const slicePort = (slice.ports ?? []).find(
      (p) => (p?.name ?? '') === port.name && PROTOCOLS[p?.protocol ?? 'TCP'] === port.protocol,
    );
    if (!slicePort) continue;
    if (!validPort(slicePort.port)) {
      warnings.push(
        `EndpointSlice ${slice.metadata?.name}: port ${JSON.stringify(port.name)} has no valid number (${JSON.stringify(slicePort.port)})`,
      );
      continue;
    }
    for (const ep of slice.endpoints ?? []) {
      // kube-proxy uses the first address only.
      const raw = ep?.addresses?.[0];
      const address = typeof raw === 'string' ? canonicalIp(raw) : undefined;
      if (!address || ipFamily(address) !== family) {
        warnings.push(
          `EndpointSlice ${slice.metadata?.name}: endpoint address ${JSON.stringify(raw)} is not an ${family} address, ignored`,
        );
        continue;
      }
      const c = ep.conditions ?? {};
      // Unset conditions mean ready/serving (the API's documented default); terminating defaults to false.
      const ready = c.ready !== false;
      const serving = c.serving ?? ready;
      const terminating = c.terminating === true;
      const e: Endpoint = {
        address,
        family,
        port: slicePort.port,
        ready: ready && !terminating,
        serving,
        terminating,
        nodeName: ep.nodeName ?? undefined,
      };
      const key = `${address}|${e.port}`;
      const prev = byKey.get(key);
      // The same endpoint in two slices (during a slice update): keep the more available view.
      if (!prev || (e.ready && !prev.ready) || (e.serving && !prev.serving)) byKey.set(key, e);
    }
  }
  return [...byKey.values()];
}

function persistenceOf(svc: V1Service, settings: ServiceSettings): ServiceIntent['persistence'] {
  let timeout: number | undefined;
  if (svc.spec?.sessionAffinity === 'ClientIP') {
    timeout = svc.spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? 10800;
  }
  if (settings.persistenceTimeout !== undefined) timeout = settings.persistenceTimeout;
  if (!timeout) return undefined;
  return { timeout, prefix: settings.persistenceNetmask };
}

export interface Translation {
  services: ServiceIntent[];
  skipped: Skip[];
  /** The parsed settings of each of our Services (the allocator needs pools and sharing keys). */
  settings: Map<string, ServiceSettings>;
}

type OneResult = { skip: Skip } | { intent: ServiceIntent; settings: ServiceSettings };

/**
 * Per-Service results keyed by the resourceVersions of the Service and its slices: an
 * unchanged Service yields the very same intent object (so computeDesired's memo hits
 * too), and a 1-slice change costs one Service's work instead of all of them.
 */
export class TranslateMemo {
  private entries = new Map<string, { key: string; result: OneResult }>();

  lookup(id: string, key: string | undefined, compute: () => OneResult): OneResult {
    if (key === undefined) return compute();
    const hit = this.entries.get(id);
    if (hit && hit.key === key) return hit.result;
    const result = compute();
    this.entries.set(id, { key, result });
    return result;
  }

  retain(ids: Set<string>): void {
    for (const id of this.entries.keys()) if (!ids.has(id)) this.entries.delete(id);
  }
}

function versionKey(svc: V1Service, slices: readonly V1EndpointSlice[]): string | undefined {
  const rv = svc.metadata?.resourceVersion;
  if (!rv) return undefined;
  const parts = [rv];
  for (const s of slices) {
    if (!s.metadata?.resourceVersion) return undefined;
    parts.push(`${s.metadata.name}@${s.metadata.resourceVersion}`);
  }
  return parts.sort().join('|');
}

export function translateKubernetes(
  snapshot: KubeSnapshot,
  cfg: TranslateConfig,
  memo?: TranslateMemo,
): Translation {
  const slicesByService = new Map<string, V1EndpointSlice[]>();
  for (const slice of snapshot.endpointSlices) {
    const name = slice?.metadata?.labels?.[SERVICE_NAME_LABEL];
    if (!name) continue;
    const key = `${slice.metadata?.namespace ?? ''}/${name}`;
    const list = slicesByService.get(key);
    if (list) list.push(slice);
    else slicesByService.set(key, [slice]);
  }
  const out: Translation = { services: [], skipped: [], settings: new Map() };
  const seen = new Set<string>();
  for (const svc of snapshot.services) {
    if (svc?.spec?.type !== 'LoadBalancer') continue;
    const id = serviceKey(svc);
    seen.add(id);
    try {
      const slices = slicesByService.get(id) ?? [];
      const compute = () => translateOne(svc, id, slices, cfg);
      const result = memo ? memo.lookup(id, versionKey(svc, slices), compute) : compute();
      if ('skip' in result) out.skipped.push(result.skip);
      else {
        out.services.push(result.intent);
        out.settings.set(id, result.settings);
      }
    } catch (err) {
      out.skipped.push({
        service: id,
        reason: 'Malformed',
        detail: `could not read the object: ${(err as Error).message}`,
      });
    }
  }
  return out;
}

function translateOne(
  svc: V1Service,
  id: string,
  slices: readonly V1EndpointSlice[],
  cfg: TranslateConfig,
): OneResult {
  const skip = (reason: Skip['reason'], detail: string) => ({ skip: { service: id, reason, detail } });
  if (!isOurs(svc, cfg)) {
    return skip(
      'NotOurClass',
      `loadBalancerClass ${JSON.stringify(svc.spec?.loadBalancerClass ?? null)} is not ${cfg.loadBalancerClass}`,
    );
  }
  const parsed = parseAnnotations(svc.metadata?.annotations, cfg.defaultScheduler);
  if (!parsed.ok) return skip('InvalidAnnotation', parsed.problem);
  const settings = parsed.settings;

  const rawPorts = svc.spec?.ports;
  if (!Array.isArray(rawPorts) || rawPorts.length === 0) return skip('NoPorts', 'spec.ports is empty');
  const ports: PortIntent[] = [];
  const warnings: string[] = [];
  for (const [i, p] of rawPorts.entries()) {
    const protocol = PROTOCOLS[p?.protocol ?? 'TCP'];
    if (!protocol)
      return skip(
        'UnsupportedProtocol',
        `spec.ports[${i}].protocol ${JSON.stringify(p?.protocol)} is not TCP, UDP or SCTP`,
      );
    if (!validPort(p?.port))
      return skip('InvalidPort', `spec.ports[${i}].port ${JSON.stringify(p?.port)} is not 1..65535`);
    const name = typeof p.name === 'string' ? p.name : '';
    ports.push({
      name,
      protocol,
      port: p.port,
      endpoints: endpointsForPort(slices, { name, protocol }, warnings),
    });
  }

  const ingress = svc.status?.loadBalancer?.ingress ?? [];
  const vips: string[] = [];
  for (const ing of ingress) {
    if (!ing?.ip) continue; // hostname-only entries are for other implementations
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
    vips,
    ports,
    scheduler: settings.scheduler ?? cfg.defaultScheduler,
    schedulerFlags: settings.schedulerFlags ?? [],
    forwarding: settings.forwarding ?? cfg.defaultForwarding,
    persistence: persistenceOf(svc, settings),
    trafficPolicy: svc.spec?.externalTrafficPolicy === 'Local' ? 'Local' : 'Cluster',
    announce: true,
    warnings,
  };
  return { intent, settings };
}

/** The node facts that decide whether this node announces. */
export function nodeInfo(
  node: V1Node | undefined,
  name: string,
): { name: string; excluded: boolean; ready: boolean } {
  if (!node) return { name, excluded: false, ready: false };
  const labels = node.metadata?.labels ?? {};
  const readyCond = (node.status?.conditions ?? []).find((c) => c?.type === 'Ready');
  return {
    name,
    excluded: Object.hasOwn(labels, EXCLUDE_LABEL),
    ready: readyCond?.status === 'True',
  };
}
