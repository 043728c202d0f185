// A fake Kubernetes API server at the HTTP level, for driving the real
// @kubernetes/client-node (informers, status writes, leases, events) in tests.
//
// What it does like the real one: list with a collection resourceVersion; streaming
// watch from a resourceVersion, replaying history then live events; 410 Gone once the
// history is compacted, either as an HTTP status or as an ERROR event (both happen in
// real clusters); lists in pages (limit and continue); bookmarks when asked; label and
// field selectors; the status subresource (main updates keep status, /status updates
// only status); 409 Conflict on a stale resourceVersion or an existing name; merge and
// JSON patches. It can go away and come back on the same port.
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { Socket } from 'node:net';
import type { KubeConnection } from '../../lb-agent/src/k8s/connection.ts';

// biome-ignore lint/suspicious/noExplicitAny: Kubernetes objects are free-form JSON here.
export type Obj = Record<string, any>;

interface ResourceType {
  group: string;
  version: string;
  plural: string;
  kind: string;
  namespaced: boolean;
  hasStatus: boolean;
  /** A custom resource: an update must name a resourceVersion (422 otherwise), as for every CRD. */
  custom?: boolean;
}

export const RESOURCES: Record<string, ResourceType> = {
  services: {
    group: '',
    version: 'v1',
    plural: 'services',
    kind: 'Service',
    namespaced: true,
    hasStatus: true,
  },
  endpointslices: {
    group: 'discovery.k8s.io',
    version: 'v1',
    plural: 'endpointslices',
    kind: 'EndpointSlice',
    namespaced: true,
    hasStatus: false,
  },
  nodes: { group: '', version: 'v1', plural: 'nodes', kind: 'Node', namespaced: false, hasStatus: true },
  leases: {
    group: 'coordination.k8s.io',
    version: 'v1',
    plural: 'leases',
    kind: 'Lease',
    namespaced: true,
    hasStatus: false,
  },
  events: { group: '', version: 'v1', plural: 'events', kind: 'Event', namespaced: true, hasStatus: false },
  portlbaddresspools: {
    group: 'portlb.io',
    version: 'v1alpha1',
    plural: 'portlbaddresspools',
    kind: 'PortlbAddressPool',
    namespaced: false,
    hasStatus: true,
    custom: true,
  },
  portlbbgppeers: {
    group: 'portlb.io',
    version: 'v1alpha1',
    plural: 'portlbbgppeers',
    kind: 'PortlbBgpPeer',
    namespaced: false,
    hasStatus: true,
    custom: true,
  },
  portlbnodestatuses: {
    group: 'portlb.io',
    version: 'v1alpha1',
    plural: 'portlbnodestatuses',
    kind: 'PortlbNodeStatus',
    namespaced: false,
    hasStatus: false,
    custom: true,
  },
};

const apiVersion = (r: ResourceType) => (r.group ? `${r.group}/${r.version}` : r.version);

interface WatchEvent {
  rv: number;
  resource: string;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: Obj;
}

interface Watcher {
  resource: string;
  namespace: string | undefined;
  matches: (o: Obj) => boolean;
  res: ServerResponse;
  bookmarks: boolean;
}

export interface FakeKubeApiOptions {
  /** How an expired watch is told: HTTP 410, or a 200 stream with an ERROR event. */
  goneAs?: 'status' | 'event';
  /**
   * Drop status.loadBalancer.ingress[].ipMode on writes, as an API server before 1.30 (or
   * with the LoadBalancerIPMode feature gate off) does.
   */
  dropIpMode?: boolean;
  /** Send bookmarks every N ms even to watches that did not ask (the client must cope). */
  unsolicitedBookmarksMs?: number;
  /** Listen address (default 127.0.0.1). */
  host?: string;
  /** Serve HTTPS with this key and certificate (PEM), as a real API server does. */
  tls?: { key: string; cert: string };
  /** Resources whose CRD is not installed: 404 (plain text, as the real one answers). */
  missing?: string[];
}

const clone = <T>(o: T): T => structuredClone(o);

export function parseLabelSelector(
  sel: string | null,
): (labels: Record<string, string> | undefined) => boolean {
  if (!sel) return () => true;
  const reqs = sel
    .split(/,(?![^(]*\))/)
    .map((s) => s.trim())
    .filter(Boolean)
    .map((r) => {
      let m = /^([^!=\s]+)\s*(==|=|!=)\s*(.*)$/.exec(r);
      if (m) {
        const [, k, op, v] = m;
        return (l: Record<string, string>) => (op === '!=' ? l[k!] !== v : l[k!] === v);
      }
      m = /^([^\s]+)\s+(in|notin)\s+\((.*)\)$/.exec(r);
      if (m) {
        const [, k, op, vs] = m;
        const set = new Set(vs!.split(',').map((x) => x.trim()));
        return (l: Record<string, string>) =>
          op === 'in' ? set.has(l[k!] ?? '\0') : !set.has(l[k!] ?? '\0');
      }
      if (r.startsWith('!')) return (l: Record<string, string>) => !Object.hasOwn(l, r.slice(1));
      return (l: Record<string, string>) => Object.hasOwn(l, r);
    });
  return (labels) => reqs.every((f) => f(labels ?? {}));
}

export function parseFieldSelector(sel: string | null): (o: Obj) => boolean {
  if (!sel) return () => true;
  const reqs = sel.split(',').map((r) => {
    const m = /^([\w.]+)\s*(==|=|!=)\s*(.*)$/.exec(r.trim());
    if (!m) throw new Error(`bad field selector ${r}`);
    const [, path, op, v] = m;
    const get = (o: Obj) => path!.split('.').reduce<unknown>((x, k) => (x as Obj | undefined)?.[k], o);
    return (o: Obj) => (op === '!=' ? String(get(o) ?? '') !== v : String(get(o) ?? '') === v);
  });
  return (o) => reqs.every((f) => f(o));
}

/** RFC 7386 merge patch. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out: Obj =
    target && typeof target === 'object' && !Array.isArray(target) ? { ...(target as Obj) } : {};
  for (const [k, v] of Object.entries(patch as Obj)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** RFC 6902 JSON patch (add, replace, remove, test). */
function jsonPatch(target: Obj, ops: Obj[]): Obj {
  const doc = clone(target);
  for (const op of ops) {
    const parts = String(op.path)
      .split('/')
      .slice(1)
      .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
    const last = parts.pop()!;
    const parent = parts.reduce<Obj>((x, k) => (x[k] ??= {}), doc);
    if (op.op === 'test' && JSON.stringify(parent[last]) !== JSON.stringify(op.value))
      throw new Error('test failed');
    const isList = Array.isArray(parent);
    const list = parent as unknown as unknown[];
    const map = parent as Obj;
    if (op.op === 'remove') {
      if (isList) list.splice(Number(last), 1);
      else delete map[last];
    } else if (op.op === 'add' || op.op === 'replace') {
      if (isList && op.op === 'add') list.splice(last === '-' ? list.length : Number(last), 0, op.value);
      else map[last] = op.value;
    }
  }
  return doc;
}

export class FakeKubeApi {
  private server: Server | undefined;
  private sockets = new Set<Socket>();
  private store = new Map<string, Map<string, Obj>>();
  private history: WatchEvent[] = [];
  private oldestRv = 0;
  private rv = 1000;
  private watchers = new Set<Watcher>();
  private bookmarkTimer: NodeJS.Timeout | undefined;
  port = 0;
  readonly options: FakeKubeApiOptions;
  /** Counts of requests by "METHOD path-without-query", for assertions. */
  readonly requests = new Map<string, number>();
  /** What each request needs of RBAC, as the authorizer sees it: "group|resource[/sub]|verb". */
  readonly verbs = new Set<string>();
  /** While true, new requests hang (see handle()). */
  hang = false;
  private readonly hung = new Set<ServerResponse>();

  constructor(options: FakeKubeApiOptions = {}) {
    this.options = options;
    for (const r of Object.keys(RESOURCES)) this.store.set(r, new Map());
  }

  get url(): string {
    const host = this.options.host ?? '127.0.0.1';
    return `${this.options.tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${this.port}`;
  }

  async start(): Promise<string> {
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      this.handle(req, res).catch((err) => this.status(res, 500, 'InternalError', String(err)));
    };
    const server: Server = this.options.tls
      ? createTlsServer(this.options.tls, handler)
      : createServer(handler);
    server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve) => server.listen(this.port, this.options.host ?? '127.0.0.1', resolve));
    this.port = (server.address() as { port: number }).port;
    this.server = server;
    if (this.options.unsolicitedBookmarksMs) {
      this.bookmarkTimer = setInterval(() => this.sendBookmarks(true), this.options.unsolicitedBookmarksMs);
    }
    return this.url;
  }

  /** The API server goes away: listener closed, every connection (watches too) cut. */
  async stop(): Promise<void> {
    clearInterval(this.bookmarkTimer);
    for (const r of this.hung) r.destroy();
    this.hung.clear();
    for (const w of this.watchers) w.res.destroy();
    this.watchers.clear();
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.server = undefined;
  }

  /** How the agent's client reaches this server. */
  connection(): KubeConnection {
    return {
      server: this.url,
      ca: this.options.tls?.cert,
      insecure: false,
      servername: undefined,
      token: 'fake-token',
      tokenFile: undefined,
      cert: undefined,
      key: undefined,
      apply: undefined,
      source: 'fake API server',
    };
  }

  /** A kubeconfig file's text for the same server (for processes). */
  kubeconfigYaml(): string {
    return `apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: { server: "${this.url}", insecure-skip-tls-verify: true }
users:
- name: agent
  user: { token: fake-token }
contexts:
- name: fake
  context: { cluster: fake, user: agent }
current-context: fake
`;
  }

  // ---- state, as the test (or a controller) changes it ------------------------------

  private key(ns: string | undefined, name: string): string {
    return `${ns ?? ''}/${name}`;
  }

  list(resource: string, namespace?: string): Obj[] {
    return [...this.store.get(resource)!.values()]
      .filter((o) => !namespace || o.metadata?.namespace === namespace)
      .map(clone);
  }

  get(resource: string, namespace: string | undefined, name: string): Obj | undefined {
    const o = this.store.get(resource)!.get(this.key(namespace, name));
    return o && clone(o);
  }

  private record(resource: string, type: WatchEvent['type'], object: Obj): void {
    const ev: WatchEvent = {
      rv: Number(object.metadata.resourceVersion),
      resource,
      type,
      object: clone(object),
    };
    this.history.push(ev);
    for (const w of this.watchers) {
      if (w.resource !== resource) continue;
      if (w.namespace && object.metadata?.namespace !== w.namespace) continue;
      if (!w.matches(object)) continue;
      this.write(w, { type, object: this.withKind(resource, object) });
    }
  }

  private withKind(resource: string, o: Obj): Obj {
    const r = RESOURCES[resource]!;
    return { kind: r.kind, apiVersion: apiVersion(r), ...clone(o) };
  }

  create(resource: string, obj: Obj): Obj {
    const o = clone(obj);
    const r = RESOURCES[resource]!;
    o.metadata ??= {};
    if (!r.namespaced) delete o.metadata.namespace;
    else o.metadata.namespace ??= 'default';
    const k = this.key(o.metadata.namespace, o.metadata.name);
    const table = this.store.get(resource)!;
    if (table.has(k))
      throw new HttpError(409, 'AlreadyExists', `${resource} "${o.metadata.name}" already exists`);
    o.metadata.uid ??= randomUUID();
    o.metadata.creationTimestamp ??= new Date().toISOString();
    o.metadata.generation = 1;
    o.metadata.resourceVersion = String(++this.rv);
    delete o.kind;
    delete o.apiVersion;
    table.set(k, o);
    this.record(resource, 'ADDED', o);
    return clone(o);
  }

  /**
   * Replaces an object; a resourceVersion in `obj` must match (409 otherwise). `patch`: the
   * server applies a patch to the current object (no resourceVersion needed).
   */
  update(resource: string, obj: Obj, opts: { subresource?: 'status'; patch?: boolean } = {}): Obj {
    const table = this.store.get(resource)!;
    const r = RESOURCES[resource]!;
    const ns = r.namespaced ? (obj.metadata?.namespace ?? 'default') : undefined;
    const k = this.key(ns, obj.metadata?.name);
    const cur = table.get(k);
    if (!cur) throw new HttpError(404, 'NotFound', `${resource} "${obj.metadata?.name}" not found`);
    const want = obj.metadata?.resourceVersion;
    if (!want && r.custom && !opts.patch)
      throw new HttpError(
        422,
        'Invalid',
        `${r.kind}.${r.group} "${cur.metadata.name}" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update`,
      );
    if (want && want !== cur.metadata.resourceVersion) {
      throw new HttpError(
        409,
        'Conflict',
        `Operation cannot be fulfilled on ${resource} "${cur.metadata.name}": the object has been modified; please apply your changes to the latest version and try again`,
      );
    }
    let next: Obj;
    if (opts.subresource === 'status') {
      next = { ...clone(cur), status: clone(obj.status) };
      if (this.options.dropIpMode) for (const i of next.status?.loadBalancer?.ingress ?? []) delete i.ipMode;
    } else {
      next = clone(obj);
      delete next.kind;
      delete next.apiVersion;
      if (r.hasStatus) next.status = clone(cur.status);
    }
    // generation counts changes of the spec (of everything but metadata and status).
    const body = (x: Obj) => JSON.stringify({ ...x, metadata: undefined, status: undefined });
    next.metadata = {
      ...next.metadata,
      uid: cur.metadata.uid,
      creationTimestamp: cur.metadata.creationTimestamp,
      generation: (cur.metadata.generation ?? 1) + (body(next) === body(cur) ? 0 : 1),
      namespace: cur.metadata.namespace,
      resourceVersion: String(++this.rv),
    };
    if (!r.namespaced) delete next.metadata.namespace;
    table.set(k, next);
    this.record(resource, 'MODIFIED', next);
    return clone(next);
  }

  /** Test-side convenience: change an object with a function, status included. */
  mutate(resource: string, namespace: string | undefined, name: string, fn: (o: Obj) => void): Obj {
    const cur = this.get(resource, namespace, name);
    if (!cur) throw new Error(`${resource} ${namespace}/${name} not found`);
    fn(cur);
    delete cur.metadata.resourceVersion;
    const r = RESOURCES[resource]!;
    if (r.hasStatus) this.update(resource, { ...cur }, { subresource: 'status', patch: true });
    return this.update(resource, cur, { patch: true });
  }

  remove(resource: string, namespace: string | undefined, name: string): void {
    const table = this.store.get(resource)!;
    const k = this.key(RESOURCES[resource]!.namespaced ? (namespace ?? 'default') : undefined, name);
    const cur = table.get(k);
    if (!cur) throw new HttpError(404, 'NotFound', `${resource} "${name}" not found`);
    table.delete(k);
    const gone = { ...cur, metadata: { ...cur.metadata, resourceVersion: String(++this.rv) } };
    this.record(resource, 'DELETED', gone);
    // The garbage collector (kube-controller-manager's, a moment later; here at once):
    // dependents whose owner reference names the deleted object go too.
    for (const [dependent, objects] of this.store)
      for (const o of [...objects.values()])
        if ((o.metadata?.ownerReferences ?? []).some((ref: Obj) => ref.uid === cur.metadata.uid))
          this.remove(dependent, o.metadata.namespace, o.metadata.name);
  }

  /** Forgets the watch history: any watch from an older resourceVersion gets 410 Gone. */
  compact(): void {
    this.history = [];
    this.oldestRv = this.rv;
  }

  /** Ends every open watch cleanly (as the API server does at its timeout). */
  endWatches(): void {
    for (const w of this.watchers) w.res.end();
    this.watchers.clear();
  }

  /** Sends an ERROR 410 event to every watch, then ends them. */
  expireWatches(): void {
    for (const w of this.watchers) {
      this.write(w, { type: 'ERROR', object: this.goneStatus() });
      w.res.end();
    }
    this.watchers.clear();
  }

  get watchCount(): number {
    return this.watchers.size;
  }

  // ---- HTTP ---------------------------------------------------------------------------

  /**
   * The test's controls when the server runs as a process: POST /_fake/hang?on=1|0,
   * POST /_fake/objects/RESOURCE (create), PATCH /_fake/objects/RESOURCE/NS/NAME (merge
   * into the object, status included), DELETE the same, GET /_fake/requests.
   */
  private async control(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    try {
      const parts = url.pathname.split('/').slice(2);
      if (parts[0] === 'hang') {
        this.hang = url.searchParams.get('on') === '1';
        if (!this.hang) for (const r of this.hung) r.destroy();
        return this.json(res, 200, { hang: this.hang });
      }
      if (parts[0] === 'requests') return this.json(res, 200, Object.fromEntries(this.requests));
      if (parts[0] === 'objects') {
        const [, resource, ns, name] = parts;
        if (!resource || !RESOURCES[resource])
          return this.status(res, 404, 'NotFound', `no resource ${resource}`);
        if (req.method === 'POST') return this.json(res, 201, this.create(resource, await this.body(req)));
        const namespace = ns === '-' ? undefined : ns;
        if (req.method === 'PATCH') {
          const patch = await this.body(req);
          return this.json(
            res,
            200,
            this.mutate(resource, namespace, name!, (o) => Object.assign(o, mergePatch(o, patch))),
          );
        }
        if (req.method === 'DELETE') {
          this.remove(resource, namespace, name!);
          return this.json(res, 200, {});
        }
      }
      return this.status(res, 404, 'NotFound', `no control ${url.pathname}`);
    } catch (err) {
      if (err instanceof HttpError) return this.status(res, err.code, err.reason, err.message);
      throw err;
    }
  }

  private goneStatus(): Obj {
    return {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: 'too old resource version',
      reason: 'Expired',
      code: 410,
    };
  }

  private status(res: ServerResponse, code: number, reason: string, message: string): void {
    if (res.headersSent) return void res.end();
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message,
        reason,
        code,
      }),
    );
  }

  /**
   * Discovery, the unaggregated kind (what kubectl falls back to): versions, groups and each
   * group version's resources, so that a real kubectl can be pointed at this server.
   */
  private discovery(res: ServerResponse, p: string): boolean {
    const types = Object.values(RESOURCES);
    const groups = [...new Set(types.filter((t) => t.group).map((t) => `${t.group}/${t.version}`))];
    if (p === '/version') {
      this.json(res, 200, { major: '1', minor: '33', gitVersion: 'v1.33.0-fake', platform: 'linux/amd64' });
      return true;
    }
    if (p === '/api') {
      this.json(res, 200, {
        kind: 'APIVersions',
        versions: ['v1'],
        serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: '127.0.0.1' }],
      });
      return true;
    }
    if (p === '/apis') {
      this.json(res, 200, {
        kind: 'APIGroupList',
        apiVersion: 'v1',
        groups: groups.map((gv) => {
          const [name, version] = gv.split('/');
          const v = { groupVersion: gv, version };
          return { name, versions: [v], preferredVersion: v };
        }),
      });
      return true;
    }
    const gv = p === '/api/v1' ? 'v1' : p.startsWith('/apis/') ? p.slice('/apis/'.length) : undefined;
    if (!gv || (gv !== 'v1' && !groups.includes(gv))) return false;
    this.json(res, 200, {
      kind: 'APIResourceList',
      apiVersion: 'v1',
      groupVersion: gv,
      resources: types
        .filter((t) => apiVersion(t) === gv)
        .map((t) => ({
          name: t.plural,
          singularName: t.kind.toLowerCase(),
          namespaced: t.namespaced,
          kind: t.kind,
          verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'],
        })),
    });
    return true;
  }

  private json(res: ServerResponse, code: number, body: unknown): void {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  }

  private write(w: Watcher, ev: Obj): void {
    w.res.write(`${JSON.stringify(ev)}\n`);
  }

  private sendBookmarks(unsolicited = false): void {
    for (const w of this.watchers) {
      if (!w.bookmarks && !unsolicited) continue;
      const r = RESOURCES[w.resource]!;
      this.write(w, {
        type: 'BOOKMARK',
        object: { kind: r.kind, apiVersion: apiVersion(r), metadata: { resourceVersion: String(this.rv) } },
      });
    }
  }

  private route(
    path: string,
  ): { resource: string; namespace?: string; name?: string; subresource?: string } | undefined {
    const m =
      /^\/api\/v1(?:\/namespaces\/([^/]+))?\/([a-z]+)(?:\/([^/]+))?(?:\/(status))?$/.exec(path) ??
      /^\/apis\/[^/]+\/v1[a-z0-9]*(?:\/namespaces\/([^/]+))?\/([a-z]+)(?:\/([^/]+))?(?:\/(status))?$/.exec(
        path,
      );
    if (!m || !RESOURCES[m[2]!]) return undefined;
    return { resource: m[2]!, namespace: m[1], name: m[3], subresource: m[4] };
  }

  private async body(req: IncomingMessage): Promise<Obj> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    return text ? (JSON.parse(text) as Obj) : {};
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname.startsWith('/_fake/')) return this.control(req, res, url);
    this.requests.set(
      `${req.method} ${url.pathname}`,
      (this.requests.get(`${req.method} ${url.pathname}`) ?? 0) + 1,
    );
    // A hung API server: every new request is accepted and never answered (open watches
    // keep streaming). The connection is cut only when the server stops.
    if (this.hang) {
      this.hung.add(res);
      res.on('close', () => this.hung.delete(res));
      return;
    }
    if (req.method === 'GET' && this.discovery(res, url.pathname)) return;
    const r = this.route(url.pathname);
    if (!r) return this.status(res, 404, 'NotFound', `no route for ${url.pathname}`);
    if (this.options.missing?.includes(r.resource)) {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
      return void res.end('404 page not found\n');
    }
    const type = RESOURCES[r.resource]!;
    const watch = ['1', 'true'].includes(url.searchParams.get('watch') ?? '');
    const verb =
      req.method === 'GET'
        ? r.name
          ? 'get'
          : watch
            ? 'watch'
            : 'list'
        : ({ POST: 'create', PUT: 'update', PATCH: 'patch', DELETE: 'delete' } as Record<string, string>)[
            req.method ?? ''
          ];
    this.verbs.add(`${type.group}|${r.resource}${r.subresource ? `/${r.subresource}` : ''}|${verb}`);
    try {
      if (req.method === 'GET' && !r.name) return this.handleList(req, res, url, r.resource, r.namespace);
      if (req.method === 'GET') {
        const o = this.get(r.resource, r.namespace, r.name!);
        if (!o) return this.status(res, 404, 'NotFound', `${r.resource} "${r.name}" not found`);
        return this.json(res, 200, this.withKind(r.resource, o));
      }
      if (req.method === 'POST') {
        const body = await this.body(req);
        if (r.namespace) body.metadata = { ...body.metadata, namespace: r.namespace };
        if (!body.metadata?.name && body.metadata?.generateName)
          body.metadata.name = `${body.metadata.generateName}${randomUUID().slice(0, 5)}`;
        return this.json(res, 201, this.withKind(r.resource, this.create(r.resource, body)));
      }
      if (req.method === 'PUT') {
        const body = await this.body(req);
        body.metadata = {
          ...body.metadata,
          name: r.name,
          ...(type.namespaced ? { namespace: r.namespace } : {}),
        };
        const sub = r.subresource === 'status' ? { subresource: 'status' as const } : {};
        return this.json(res, 200, this.withKind(r.resource, this.update(r.resource, body, sub)));
      }
      if (req.method === 'PATCH') {
        const patch = await this.body(req);
        const cur = this.get(r.resource, r.namespace, r.name!);
        if (!cur) return this.status(res, 404, 'NotFound', `${r.resource} "${r.name}" not found`);
        const ctype = String(req.headers['content-type'] ?? '');
        const next = ctype.includes('json-patch')
          ? jsonPatch(cur, patch as unknown as Obj[])
          : (mergePatch(cur, patch) as Obj);
        if (!ctype.includes('json-patch') && !patch.metadata?.resourceVersion)
          delete next.metadata.resourceVersion;
        const sub = r.subresource === 'status' ? { subresource: 'status' as const } : {};
        return this.json(
          res,
          200,
          this.withKind(r.resource, this.update(r.resource, next, { ...sub, patch: true })),
        );
      }
      if (req.method === 'DELETE') {
        this.remove(r.resource, r.namespace, r.name!);
        return this.json(res, 200, { kind: 'Status', apiVersion: 'v1', status: 'Success' });
      }
      return this.status(res, 405, 'MethodNotAllowed', `${req.method} not supported`);
    } catch (err) {
      if (err instanceof HttpError) return this.status(res, err.code, err.reason, err.message);
      throw err;
    }
  }

  private handleList(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    resource: string,
    namespace: string | undefined,
  ): void {
    const labels = parseLabelSelector(url.searchParams.get('labelSelector'));
    const fields = parseFieldSelector(url.searchParams.get('fieldSelector'));
    const matches = (o: Obj) => labels(o.metadata?.labels) && fields(o);
    const type = RESOURCES[resource]!;
    if (url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1') {
      const from = Number(url.searchParams.get('resourceVersion') ?? '0');
      if (from && from < this.oldestRv) {
        if ((this.options.goneAs ?? 'status') === 'status') {
          this.status(res, 410, 'Expired', 'too old resource version');
          return;
        }
        res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
        res.end(`${JSON.stringify({ type: 'ERROR', object: this.goneStatus() })}\n`);
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
      const w: Watcher = {
        resource,
        namespace,
        matches,
        res,
        bookmarks: url.searchParams.get('allowWatchBookmarks') === 'true',
      };
      for (const ev of this.history) {
        if (ev.rv <= from || ev.resource !== resource) continue;
        if (namespace && ev.object.metadata?.namespace !== namespace) continue;
        if (matches(ev.object)) this.write(w, { type: ev.type, object: this.withKind(resource, ev.object) });
      }
      if (w.bookmarks)
        this.write(w, {
          type: 'BOOKMARK',
          object: {
            kind: type.kind,
            apiVersion: apiVersion(type),
            metadata: { resourceVersion: String(this.rv) },
          },
        });
      this.watchers.add(w);
      req.on('close', () => this.watchers.delete(w));
      return;
    }
    // Pages as the real server serves them: `limit` items in key order (namespace/name,
    // etcd's), a `continue` token naming the page's last key and the first page's
    // resourceVersion, which every page reports; 410 Expired once that version is compacted.
    const limit = Math.max(0, Number(url.searchParams.get('limit') ?? 0) || 0);
    const token = url.searchParams.get('continue');
    let after = '';
    let rv = this.rv;
    if (token) {
      let parsed: { rv?: unknown; after?: unknown } | undefined;
      try {
        parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
      } catch {}
      if (typeof parsed?.rv !== 'number' || typeof parsed.after !== 'string') {
        this.status(res, 400, 'BadRequest', 'continue key is not valid');
        return;
      }
      if (parsed.rv < this.oldestRv) {
        this.status(res, 410, 'Expired', 'The provided continue parameter is too old');
        return;
      }
      ({ rv, after } = parsed as { rv: number; after: string });
    }
    // Only a page's objects are copied (a 10,000-item list in 20 pages copied each 20 times).
    let entries = [...this.store.get(resource)!].filter(
      ([k, o]) => k > after && (!namespace || o.metadata?.namespace === namespace) && matches(o),
    );
    let next: string | undefined;
    if (limit || token) {
      entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      if (limit && entries.length > limit) {
        entries = entries.slice(0, limit);
        next = Buffer.from(JSON.stringify({ rv, after: entries.at(-1)![0] })).toString('base64url');
      }
    }
    const items = entries.map(([, o]) => clone(o));
    this.json(res, 200, {
      kind: `${type.kind}List`,
      apiVersion: apiVersion(type),
      metadata: { resourceVersion: String(rv), ...(next ? { continue: next } : {}) },
      items,
    });
  }
}

export class HttpError extends Error {
  readonly code: number;
  readonly reason: string;
  constructor(code: number, reason: string, message: string) {
    super(message);
    this.code = code;
    this.reason = reason;
  }
}
