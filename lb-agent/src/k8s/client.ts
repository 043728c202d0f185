// A small Kubernetes API client over node:https: JSON requests with a deadline on every
// one, and watch streams (newline-delimited JSON events). portlb's own, so that the agent
// holds only what it reads (the generated client library costs 80 MB before the first
// object); connection.ts says where and how to authenticate.
import { readFile } from 'node:fs/promises';
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent, request as httpsRequest, type RequestOptions } from 'node:https';
import { PortlbError } from '../errors.ts';
import { deadlineSignal } from '../util/clock.ts';
import type { KubeConnection } from './connection.ts';

/** The API server answered with an error status (a Status object). */
export class KubeApiError extends PortlbError<string> {
  readonly status: number;
  readonly reason: string;
  constructor(status: number, reason: string, message: string) {
    super(`KUBE_${reason || status}`, message);
    this.status = status;
    this.reason = reason;
  }
}

/** No answer: connection refused, TLS failure, timeout. */
export class KubeTransportError extends PortlbError<'KUBE_UNREACHABLE' | 'KUBE_TIMEOUT' | 'KUBE_PROTOCOL'> {}

// biome-ignore lint/suspicious/noExplicitAny: API objects are free-form JSON until a transform reads them.
export type Json = any;

export interface WatchEvent {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: Json;
}

export interface RequestOpts {
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  contentType?: string;
  /** Aborts the request (a deadline: AbortSignal.timeout). Without one, DEFAULT_TIMEOUT_MS. */
  signal?: AbortSignal;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const TOKEN_REREAD_MS = 60_000;

export class KubeClient {
  private readonly conn: KubeConnection;
  private readonly agent: Agent | HttpAgent;
  /** Plain http only for a local `kubectl proxy` (and tests); a real API server is https. */
  private readonly request_: typeof httpsRequest;
  private token: { value: string | undefined; readAt: number } | undefined;
  /** Requests by outcome, for tests and metrics. */
  readonly stats = { requests: 0, errors: 0, watches: 0 };

  constructor(conn: KubeConnection) {
    this.conn = conn;
    const plain = conn.server.startsWith('http:');
    this.request_ = plain ? (httpRequest as typeof httpsRequest) : httpsRequest;
    this.agent = plain
      ? new HttpAgent({ keepAlive: true, maxSockets: 16 })
      : new Agent({
          keepAlive: true,
          maxSockets: 16,
          ca: conn.ca,
          rejectUnauthorized: !conn.insecure,
          servername: conn.servername,
          cert: conn.cert,
          key: conn.key,
        });
  }

  get server(): string {
    return this.conn.server;
  }

  private async bearer(): Promise<string | undefined> {
    if (this.conn.token) return this.conn.token;
    if (!this.conn.tokenFile) return undefined;
    const now = performance.now();
    if (!this.token || now - this.token.readAt > TOKEN_REREAD_MS) {
      const value = (await readFile(this.conn.tokenFile, 'utf8').catch(() => undefined))?.trim();
      this.token = { value: value ?? this.token?.value, readAt: now };
    }
    return this.token.value;
  }

  private async options(method: string, signal: AbortSignal, contentType?: string): Promise<RequestOptions> {
    const headers: Record<string, string> = { accept: 'application/json', 'user-agent': 'portlb' };
    const token = await this.bearer();
    if (token) headers.authorization = `Bearer ${token}`;
    if (contentType) headers['content-type'] = contentType;
    const options: RequestOptions = { method, agent: this.agent, headers, signal };
    if (this.conn.apply) await this.conn.apply(options);
    return options;
  }

  private url(path: string, query: RequestOpts['query']): string {
    const q = Object.entries(query ?? {})
      .filter(([, v]) => v !== undefined && v !== '')
      .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
      .join('&');
    return `${this.conn.server}${path}${q ? `?${q}` : ''}`;
  }

  /** One JSON request; rejects with KubeApiError (an error status) or KubeTransportError. */
  async request<T = Json>(method: string, path: string, o: RequestOpts = {}): Promise<T> {
    const signal = o.signal ?? deadlineSignal(DEFAULT_TIMEOUT_MS);
    const body = o.body === undefined ? undefined : JSON.stringify(o.body);
    const options = await this.options(
      method,
      signal,
      body ? (o.contentType ?? 'application/json') : undefined,
    );
    this.stats.requests++;
    return new Promise<T>((resolve_, reject_) => {
      // A TLS socket keeps its first request reachable for as long as it lives (Node's agent
      // holds that request's connect callback), and the request its listeners: through
      // them the promise, its answer and the answer's bytes (a 10,000-item list page: 8 MB).
      // The listeners reach the promise only through `pending`, emptied once it settles.
      let pending: { resolve: (v: T) => void; reject: (e: unknown) => void } | undefined = {
        resolve: resolve_,
        reject: reject_,
      };
      const resolve = (v: T) => {
        pending?.resolve(v);
        pending = undefined;
      };
      const reject = (e: unknown) => {
        pending?.reject(e);
        pending = undefined;
      };
      const req = this.request_(this.url(path, o.query), options, (res) => {
        let chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) => reject(transportError(err, method, path, signal)));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          chunks = [];
          const status = res.statusCode ?? 0;
          let parsed: Json;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch {
            parsed = undefined;
          }
          if (status >= 400) {
            this.stats.errors++;
            return reject(
              new KubeApiError(
                status,
                parsed?.reason ?? '',
                `${method} ${path}: ${status} ${parsed?.message ?? text.slice(0, 200).trim()}`,
              ),
            );
          }
          if (text && parsed === undefined)
            return reject(
              new KubeTransportError('KUBE_PROTOCOL', `${method} ${path}: the answer is not JSON`),
            );
          resolve(parsed as T);
        });
      });
      req.on('error', (err) => {
        this.stats.errors++;
        reject(transportError(err, method, path, signal));
      });
      req.end(body);
    });
  }

  /**
   * A watch: yields events until the server ends the stream (its timeout) or `signal`
   * aborts; throws on transport errors and error statuses. An ERROR event is yielded as
   * such (410 Gone arrives that way too).
   */
  async *watch(
    path: string,
    query: RequestOpts['query'],
    signal: AbortSignal,
    opened?: () => void,
  ): AsyncGenerator<WatchEvent> {
    const options = await this.options('GET', signal);
    this.stats.watches++;
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = this.request_(this.url(path, { ...query, watch: 'true' }), options, resolve);
      req.on('error', (err) => reject(transportError(err, 'WATCH', path, signal)));
      req.end();
    });
    if ((res.statusCode ?? 0) >= 400) {
      const chunks: Buffer[] = [];
      for await (const c of res) chunks.push(c as Buffer);
      const text = Buffer.concat(chunks).toString('utf8');
      let parsed: Json;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
      throw new KubeApiError(
        res.statusCode ?? 0,
        parsed?.reason ?? '',
        `WATCH ${path}: ${res.statusCode} ${parsed?.message ?? text.slice(0, 200)}`,
      );
    }
    opened?.();
    let buffered = '';
    try {
      for await (const chunk of res) {
        buffered += (chunk as Buffer).toString('utf8');
        let nl = buffered.indexOf('\n');
        while (nl >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          if (line) yield JSON.parse(line) as WatchEvent;
          nl = buffered.indexOf('\n');
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      throw transportError(err as Error, 'WATCH', path, signal);
    } finally {
      res.destroy();
    }
  }

  close(): void {
    this.agent.destroy();
  }
}

function transportError(err: Error, method: string, path: string, signal: AbortSignal): KubeTransportError {
  if (signal.aborted && (signal.reason as Error)?.name === 'TimeoutError')
    return new KubeTransportError('KUBE_TIMEOUT', `${method} ${path}: no answer before the deadline`, {
      cause: err,
    });
  return new KubeTransportError('KUBE_UNREACHABLE', `${method} ${path}: ${err.message}`, { cause: err });
}
