// The gRPC transport to gobgpd: proto loading, deadlines, unary and server-streaming
// calls as promises. Wire messages are plain objects shaped like protos/gobgp; only the
// adapter (gobgp-speaker.ts) looks inside them.
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { BgpError } from './errors.ts';

const PROTO_DIR = path.resolve(import.meta.dirname, '..', '..', '..', 'protos', 'gobgp');

// biome-ignore lint/suspicious/noExplicitAny: wire messages are checked by the contract test, not the compiler.
export type Wire = Record<string, any>;

type UnaryMethod = (
  req: Wire,
  options: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res: Wire) => void,
) => void;
type StreamMethod = (req: Wire, options: grpc.CallOptions) => grpc.ClientReadableStream<Wire>;

let definition: grpc.GrpcObject | undefined;
function loadDefinition(): grpc.GrpcObject {
  definition ??= grpc.loadPackageDefinition(
    protoLoader.loadSync(['gobgp.proto', 'attribute.proto'], {
      includeDirs: [PROTO_DIR],
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
      // Any fields travel as {'@type': 'type.googleapis.com/apipb.X', ...fields}.
      json: true,
    }),
  );
  return definition;
}

export const anyOf = (type: string, fields: Wire): Wire => ({
  '@type': `type.googleapis.com/apipb.${type}`,
  ...fields,
});
export const anyType = (v: Wire | undefined): string | undefined =>
  typeof v?.['@type'] === 'string'
    ? (v['@type'] as string).replace(/^type\.googleapis\.com\/apipb\./, '')
    : undefined;

export interface GobgpApiOptions {
  /** "unix:///run/portlb/gobgp.sock"; TCP targets are refused unless allowTcp (tests only). */
  target: string;
  /** Per-call deadline. */
  timeoutMs?: number;
}

export class GobgpApi {
  private readonly client: grpc.Client & Record<string, UnaryMethod | StreamMethod>;
  private readonly timeoutMs: number;
  readonly target: string;

  constructor(options: GobgpApiOptions) {
    if (!options.target.startsWith('unix:')) {
      throw new BgpError(
        'BGP_INVALID_CONFIG',
        `speaker API target must be a unix socket (unix:///path), got ${JSON.stringify(options.target)}: gobgpd's API is unauthenticated and never goes on a network port`,
      );
    }
    const apipb = loadDefinition().apipb as grpc.GrpcObject;
    const Ctor = apipb.GobgpApi as grpc.ServiceClientConstructor;
    this.client = new Ctor(options.target, grpc.credentials.createInsecure(), {
      // Reconnect quickly after gobgpd restarts; the supervisor adds its own backoff on top.
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 2000,
    }) as never;
    this.timeoutMs = options.timeoutMs ?? 5000;
    this.target = options.target;
  }

  private deadline(): grpc.CallOptions {
    return { deadline: Date.now() + this.timeoutMs };
  }

  unary(method: string, request: Wire): Promise<Wire> {
    const fn = this.client[method] as UnaryMethod | undefined;
    if (!fn) throw new Error(`unknown GoBGP method ${method}`);
    return new Promise((resolve, reject) => {
      fn.call(this.client, request, this.deadline(), (err, res) => {
        if (err) reject(toBgpError(method, err));
        else resolve(res);
      });
    });
  }

  /** A server-streaming call collected into an array (ListPeer, ListPath). */
  list(method: string, request: Wire): Promise<Wire[]> {
    const fn = this.client[method] as StreamMethod | undefined;
    if (!fn) throw new Error(`unknown GoBGP method ${method}`);
    return new Promise((resolve, reject) => {
      const out: Wire[] = [];
      const stream = fn.call(this.client, request, this.deadline());
      stream.on('data', (m: Wire) => out.push(m));
      stream.on('error', (err: grpc.ServiceError) => reject(toBgpError(method, err)));
      stream.on('end', () => resolve(out));
    });
  }

  /** A long-lived server stream (WatchEvent); no deadline. */
  stream(method: string, request: Wire): grpc.ClientReadableStream<Wire> {
    const fn = this.client[method] as StreamMethod | undefined;
    if (!fn) throw new Error(`unknown GoBGP method ${method}`);
    return fn.call(this.client, request, {});
  }

  /** Waits until the channel is connected (or the deadline passes). */
  waitForReady(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.client.waitForReady(Date.now() + timeoutMs, (err) => {
        if (err)
          reject(
            new BgpError('SPEAKER_UNAVAILABLE', `gobgpd not reachable at ${this.target}: ${err.message}`, {
              cause: err,
            }),
          );
        else resolve();
      });
    });
  }

  close(): void {
    this.client.close();
  }
}

export function toBgpError(method: string, err: grpc.ServiceError): BgpError {
  const unavailable =
    err.code === grpc.status.UNAVAILABLE ||
    err.code === grpc.status.DEADLINE_EXCEEDED ||
    err.code === grpc.status.CANCELLED;
  return new BgpError(
    unavailable ? 'SPEAKER_UNAVAILABLE' : 'SPEAKER_ERROR',
    `gobgpd ${method}: ${err.details || err.message}`,
    { cause: err },
  );
}
