// The agent's HTTP endpoints: /healthz (liveness), /readyz (readiness), /metrics
// (Prometheus), /status (what this node does, for `portlb status`). Bound to one address
// (the node's by default), never to a VIP.
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { describeError } from '../errors.ts';

export interface AgentEndpoints {
  liveness(): { ok: boolean; reason: string | undefined };
  readiness(): { ready: boolean; reasons: string[] };
  /** The exposition as one text, or in chunks (sent one per event-loop turn). */
  metrics(): Promise<{ contentType: string; body: string | readonly (string | Buffer)[] }>;
  status(): Promise<unknown>;
}

/** Splits http.listen ("host:port", "[v6]:port"); `node` stands for `nodeAddress`. */
export function listenAddress(
  listen: string,
  nodeAddress: string | undefined,
): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  let host = listen.slice(0, i).replace(/^\[|\]$/g, '') || '0.0.0.0';
  const port = Number(listen.slice(i + 1));
  if (host === 'node') {
    if (!nodeAddress)
      throw new Error(
        `http.listen ${listen}: this node's address is unknown (set PORTLB_NODE_IP, bgp.routerId, or an address in http.listen)`,
      );
    host = nodeAddress;
  }
  return { host, port };
}

export async function startAgentHttp(
  endpoints: AgentEndpoints,
  address: { host: string; port: number },
): Promise<Server> {
  const server = createServer((req, res) => {
    const url = req.url?.split('?')[0];
    const send = (code: number, body: string, type = 'text/plain; charset=utf-8') => {
      res.writeHead(code, { 'content-type': type });
      res.end(body);
    };
    void (async () => {
      try {
        if (url === '/healthz') {
          const l = endpoints.liveness();
          return send(l.ok ? 200 : 503, l.ok ? 'ok\n' : `unhealthy: ${l.reason}\n`);
        }
        if (url === '/readyz') {
          const r = endpoints.readiness();
          return send(r.ready ? 200 : 503, `${JSON.stringify(r)}\n`, 'application/json');
        }
        if (url === '/metrics') {
          const m = await endpoints.metrics();
          if (typeof m.body === 'string') return send(200, m.body, m.contentType);
          // At 10,000 services the exposition is megabytes: a chunk per turn of the event
          // loop, waiting for the socket when the client reads slower.
          res.writeHead(200, { 'content-type': m.contentType });
          for (const chunk of m.body) {
            if (res.destroyed) return;
            if (!res.write(chunk)) await Promise.race([once(res, 'drain'), once(res, 'close')]);
            else await yieldToEventLoop();
          }
          return res.end();
        }
        if (url === '/status')
          return send(200, `${JSON.stringify(await endpoints.status(), null, 2)}\n`, 'application/json');
        return send(404, 'not found: /healthz /readyz /metrics /status\n');
      } catch (err) {
        send(500, `${describeError(err)}\n`);
      }
    })();
  });
  // Idle keep-alive connections are closed by the client first (kubelet probes, Prometheus,
  // fetch keep theirs for seconds): a server closing at the same moment a client reuses
  // the connection makes that request fail ("socket hang up"), which a probe counts as a failure.
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) =>
      reject(new Error(`http.listen ${address.host}:${address.port}: ${describeError(err)}`)),
    );
    server.listen(address.port, address.host, resolve);
  });
  return server;
}
