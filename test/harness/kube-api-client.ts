// A test's client for the fake API server running as a process: plain REST over HTTPS
// with the server's certificate as CA (what the agent's client library does in-cluster).
import { request } from 'node:https';
import { type Obj, RESOURCES } from './fake-kube-api.ts';

export class KubeApiClient {
  readonly url: string;
  private readonly ca: string;

  constructor(url: string, ca: string) {
    this.url = url;
    this.ca = ca;
  }

  private path(resource: string, namespace?: string, name?: string, sub?: string): string {
    const r = RESOURCES[resource];
    if (!r) throw new Error(`unknown resource ${resource}`);
    const base = r.group ? `/apis/${r.group}/${r.version}` : `/api/${r.version}`;
    const ns = r.namespaced && namespace ? `/namespaces/${namespace}` : '';
    return `${base}${ns}/${r.plural}${name ? `/${name}` : ''}${sub ? `/${sub}` : ''}`;
  }

  call(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<Obj> {
    return new Promise((resolve, reject) => {
      const req = request(
        `${this.url}${path}`,
        {
          method,
          ca: this.ca,
          headers: body === undefined ? {} : { 'content-type': contentType },
          timeout: 10_000,
          // A connection per call: a kept-alive socket that the server closes as idle
          // just as a call reuses it fails the call with "socket hang up" (seen in a busy
          // guest); the test's calls are few.
          agent: false,
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d) => (text += d));
          res.on('end', () => {
            const parsed = text ? (JSON.parse(text) as Obj) : {};
            if ((res.statusCode ?? 500) >= 400)
              reject(new Error(`${method} ${path}: ${res.statusCode} ${parsed.message ?? text}`));
            else resolve(parsed);
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timeout`)));
      req.on('error', reject);
      req.end(body === undefined ? undefined : JSON.stringify(body));
    });
  }

  create(resource: string, obj: Obj): Promise<Obj> {
    return this.call('POST', this.path(resource, obj.metadata?.namespace), obj);
  }

  get(resource: string, namespace: string | undefined, name: string): Promise<Obj> {
    return this.call('GET', this.path(resource, namespace, name));
  }

  async list(resource: string, namespace?: string): Promise<Obj[]> {
    return ((await this.call('GET', this.path(resource, namespace))).items ?? []) as Obj[];
  }

  /** A merge patch (on the status subresource when `status` is true). */
  patch(
    resource: string,
    namespace: string | undefined,
    name: string,
    patch: Obj,
    status = false,
  ): Promise<Obj> {
    return this.call(
      'PATCH',
      this.path(resource, namespace, name, status ? 'status' : undefined),
      patch,
      'application/merge-patch+json',
    );
  }

  remove(resource: string, namespace: string | undefined, name: string): Promise<Obj> {
    return this.call('DELETE', this.path(resource, namespace, name));
  }
}
