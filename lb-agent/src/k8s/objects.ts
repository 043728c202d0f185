// The Kubernetes objects as portlb keeps them: only what translation and allocation read,
// taken from the API's JSON as it arrives (list or watch), everything else released at
// once (managedFields, foreign annotations, the rest of the status). Read defensively:
// a malformed object becomes a lean one with the odd field missing, never an exception.
import { ANNOTATION_PREFIX } from './annotations.ts';
import type { Json } from './client.ts';

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
export const EXCLUDE_LABEL = 'node.kubernetes.io/exclude-from-external-load-balancers';

export interface LeanService {
  namespace: string;
  name: string;
  /** namespace/name, made once: every pass keys maps by it (10,000 strings a pass otherwise). */
  id: string;
  uid: string | undefined;
  resourceVersion: string | undefined;
  /** Milliseconds since the epoch; undefined when absent or unreadable. */
  createdAt: number | undefined;
  type: string | undefined;
  loadBalancerClass: string | undefined;
  /** As written (validated by translation): protocol and port may be anything. */
  ports: { name: string; protocol: unknown; port: unknown }[] | undefined;
  externalTrafficPolicy: string | undefined;
  sessionAffinity: string | undefined;
  affinityTimeoutSeconds: number | undefined;
  ipFamilies: string[];
  ipFamilyPolicy: string | undefined;
  loadBalancerIP: string | undefined;
  /** portlb.io/ annotations only. */
  annotations: Record<string, string>;
  ingress: { ip: string | undefined; ipMode: string | undefined }[];
}

export interface LeanEndpoint {
  /** The first address (kube-proxy uses only that one). */
  address: unknown;
  ready: boolean | undefined;
  serving: boolean | undefined;
  terminating: boolean | undefined;
  nodeName: string | undefined;
}

export interface LeanEndpointSlice {
  namespace: string;
  name: string;
  resourceVersion: string | undefined;
  /** The label kubernetes.io/service-name. */
  serviceName: string | undefined;
  /** namespace/serviceName of the Service it belongs to (made once, like LeanService.id). */
  serviceId: string | undefined;
  addressType: string | undefined;
  ports: { name: string; protocol: string | undefined; port: unknown }[];
  endpoints: LeanEndpoint[];
}

export interface LeanNode {
  name: string;
  /** For owner references (this node's PortlbNodeStatus). */
  uid: string | undefined;
  resourceVersion: string | undefined;
  excluded: boolean;
  ready: boolean;
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const obj = (v: unknown): Json => (v && typeof v === 'object' && !Array.isArray(v) ? v : {});
const arr = (v: unknown): Json[] => (Array.isArray(v) ? v : []);
const bool = (v: unknown): boolean | undefined => (typeof v === 'boolean' ? v : undefined);

export const objectKey = (o: { namespace?: string; name: string }): string =>
  `${o.namespace ?? ''}/${o.name}`;

export function leanService(raw: Json): LeanService {
  const m = obj(raw?.metadata);
  const spec = obj(raw?.spec);
  const created =
    m.creationTimestamp instanceof Date
      ? m.creationTimestamp.getTime()
      : Date.parse(str(m.creationTimestamp) ?? '');
  const annotations: Record<string, string> = {};
  for (const [k, v] of Object.entries(obj(m.annotations))) {
    if (k.startsWith(ANNOTATION_PREFIX) && typeof v === 'string') annotations[k] = v;
  }
  const timeout = obj(obj(spec.sessionAffinityConfig).clientIP).timeoutSeconds;
  const namespace = str(m.namespace) ?? '';
  const name = str(m.name) ?? '';
  return {
    namespace,
    name,
    id: objectKey({ namespace, name }),
    uid: str(m.uid),
    resourceVersion: str(m.resourceVersion),
    createdAt: Number.isNaN(created) ? undefined : created,
    type: str(spec.type),
    loadBalancerClass: str(spec.loadBalancerClass),
    ports: Array.isArray(spec.ports)
      ? spec.ports.map((p: Json) => ({ name: str(p?.name) ?? '', protocol: p?.protocol, port: p?.port }))
      : undefined,
    externalTrafficPolicy: str(spec.externalTrafficPolicy),
    sessionAffinity: str(spec.sessionAffinity),
    affinityTimeoutSeconds: typeof timeout === 'number' ? timeout : undefined,
    ipFamilies: arr(spec.ipFamilies).filter((f) => typeof f === 'string'),
    ipFamilyPolicy: str(spec.ipFamilyPolicy),
    loadBalancerIP: str(spec.loadBalancerIP) || undefined,
    annotations,
    ingress: arr(obj(obj(raw?.status).loadBalancer).ingress).map((i) => ({
      ip: str(i?.ip),
      ipMode: str(i?.ipMode),
    })),
  };
}

export function leanEndpointSlice(raw: Json): LeanEndpointSlice {
  const m = obj(raw?.metadata);
  const namespace = str(m.namespace) ?? '';
  const serviceName = str(obj(m.labels)[SERVICE_NAME_LABEL]);
  return {
    namespace,
    name: str(m.name) ?? '',
    resourceVersion: str(m.resourceVersion),
    serviceName,
    serviceId: serviceName ? objectKey({ namespace, name: serviceName }) : undefined,
    addressType: str(raw?.addressType),
    ports: arr(raw?.ports).map((p) => ({
      name: str(p?.name) ?? '',
      protocol: str(p?.protocol),
      port: p?.port,
    })),
    endpoints: arr(raw?.endpoints).map((e) => {
      const c = obj(e?.conditions);
      return {
        address: arr(e?.addresses)[0],
        ready: bool(c.ready),
        serving: bool(c.serving),
        terminating: bool(c.terminating),
        nodeName: str(e?.nodeName),
      };
    }),
  };
}

export function leanNode(raw: Json): LeanNode {
  const m = obj(raw?.metadata);
  const ready = arr(obj(raw?.status).conditions).find((c) => c?.type === 'Ready');
  return {
    name: str(m.name) ?? '',
    uid: str(m.uid),
    resourceVersion: str(m.resourceVersion),
    excluded: Object.hasOwn(obj(m.labels), EXCLUDE_LABEL),
    ready: ready?.status === 'True',
  };
}
