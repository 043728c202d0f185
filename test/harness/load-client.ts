// Lab load generator: requests to one or more URLs for a while, counting answers per
// backend and every failure. Prints one JSON document at the end.
//   node test/harness/load-client.ts --url http://VIP/ --seconds 10 --concurrency 8 [--keepalive N --interval-ms 100]
// Short mode: a new TCP connection per request. Keep-alive mode: N long-lived connections,
// one request every interval each; a connection that fails (reset, timeout) is counted
// and not reopened (a reset is what a moved flow looks like).
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    url: { type: 'string', multiple: true },
    seconds: { type: 'string', default: '10' },
    concurrency: { type: 'string', default: '8' },
    keepalive: { type: 'string', default: '0' },
    'interval-ms': { type: 'string', default: '100' },
    'timeout-ms': { type: 'string', default: '10000' },
  },
});
const urls = values.url ?? [];
let until = Date.now() + Number(values.seconds) * 1000;
// SIGTERM ends the run early (after the requests in flight) and still prints the summary.
process.on('SIGTERM', () => {
  until = 0;
});
const timeoutMs = Number(values['timeout-ms']);

export interface LoadResult {
  requests: number;
  ok: number;
  failed: number;
  failures: Record<string, number>;
  /** When each failed request started (epoch ms, the first 1000): a test compares with its own events. */
  failedAt: number[];
  byBackend: Record<string, number>;
  bySource: Record<string, number>;
  /**
   * Keep-alive connections: `breaks` says, for the first 20 broken ones, when the socket
   * closed (seconds into the run), how (ECONNRESET: a reset; FIN: closed by the peer) and
   * the backend that had answered on it last.
   */
  connections?: {
    opened: number;
    broken: number;
    breaks: { at: number; how: string; backend: string; port: number }[];
  };
  latencyMs?: { p50: number; p99: number; max: number };
  /**
   * What users feel beyond failures: requests slower than 900 ms (a dropped SYN costs
   * 1 s), when they started (seconds into the run), and the client namespace's TCP
   * retransmissions over the run (counted for the whole namespace: two load clients in it at
   * once each count both).
   */
  stalls: {
    over900ms: number;
    at: number[];
    /** The client's port of each (the first 20): its flow's state can be looked up on the replicas. */
    ports: number[];
    /** When each started (epoch ms, the first 1000): a test tells its own phases apart. */
    startedAt: number[];
    retransSegs: number;
    synRetrans: number;
  };
}
const result: LoadResult = {
  requests: 0,
  ok: 0,
  failed: 0,
  failures: {},
  failedAt: [],
  byBackend: {},
  bySource: {},
  stalls: { over900ms: 0, at: [], ports: [], startedAt: [], retransSegs: 0, synRetrans: 0 },
};
const latencies: number[] = [];
const runStarted = performance.now();

/** TCP counters of this network namespace (per-namespace files under /proc/net). */
function tcpCounters(): { retransSegs: number; synRetrans: number } {
  const field = (file: string, prefix: string, name: string) => {
    try {
      const lines = readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => l.startsWith(`${prefix}:`));
      const names = lines[0]?.split(/\s+/) ?? [];
      const values = lines[1]?.split(/\s+/) ?? [];
      const i = names.indexOf(name);
      return i > 0 ? Number(values[i]) : Number.NaN;
    } catch {
      return Number.NaN;
    }
  };
  return {
    retransSegs: field('/proc/net/snmp', 'Tcp', 'RetransSegs'),
    synRetrans: field('/proc/net/netstat', 'TcpExt', 'TCPSynRetrans'),
  };
}
const countersAtStart = tcpCounters();

function recordLatency(started: number, port: number): void {
  const ms = performance.now() - started;
  latencies.push(ms);
  if (ms > 900) {
    result.stalls.over900ms++;
    if (result.stalls.at.length < 20) {
      result.stalls.at.push(Math.round((started - runStarted) / 100) / 10);
      result.stalls.ports.push(port);
    }
    if (result.stalls.startedAt.length < 1000)
      result.stalls.startedAt.push(Math.round(performance.timeOrigin + started));
  }
}

const watched = new WeakSet<object>();

/** A keep-alive connection's last socket: how and when it closed, who answered last. */
interface Tracked {
  closed?: { at: number; how: string };
  backend: string;
  port: number;
}

function once(url: string, agent: Agent | false, mustReuse = false, tracked?: Tracked): Promise<boolean> {
  return new Promise((resolve) => {
    result.requests++;
    const started = performance.now();
    const startedWall = Date.now();
    let port = 0;
    const req = request(
      url,
      { agent, timeout: timeoutMs, headers: agent ? {} : { connection: 'close' } },
      (res) => {
        // A keep-alive connection that silently became a new one was broken in between.
        if (mustReuse && !req.reusedSocket) {
          res.resume();
          if (tracked && result.connections!.breaks.length < 20)
            result.connections!.breaks.push({
              at: tracked.closed?.at ?? -1,
              how: tracked.closed?.how ?? '?',
              backend: tracked.backend,
              port: tracked.port,
            });
          return fail('connection replaced');
        }
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (body += d));
        res.on('end', () => {
          const [backend = '?', source = '?'] = body.trim().split(' ');
          if (tracked) tracked.backend = backend;
          result.ok++;
          recordLatency(started, port);
          result.byBackend[backend] = (result.byBackend[backend] ?? 0) + 1;
          result.bySource[source] = (result.bySource[source] ?? 0) + 1;
          resolve(true);
        });
        res.on('error', (e) => fail(e.message));
      },
    );
    req.once('socket', (socket) => {
      port = socket.localPort ?? 0;
      if (!port) socket.once('connect', () => (port = socket.localPort ?? 0));
    });
    if (tracked)
      req.once('socket', (socket) => {
        if (watched.has(socket)) return;
        watched.add(socket);
        socket.once('connect', () => (tracked.port = socket.localPort ?? 0));
        let how = 'FIN';
        socket.once('error', (e: NodeJS.ErrnoException) => (how = e.code ?? e.message));
        socket.once('close', () => {
          tracked.closed = { at: Math.round((performance.now() - runStarted) / 100) / 10, how };
        });
      });
    const fail = (why: string) => {
      result.failed++;
      const key = why.replace(/\d+\.\d+\.\d+\.\d+(:\d+)?/g, 'ADDR');
      result.failures[key] = (result.failures[key] ?? 0) + 1;
      if (result.failedAt.length < 1000) result.failedAt.push(startedWall);
      resolve(false);
    };
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => fail((e as NodeJS.ErrnoException).code ?? e.message));
    req.end();
  });
}

// The driver waits for this line before it starts whatever the load is meant to observe.
process.stderr.write('load started\n');
const keepalive = Number(values.keepalive);
if (keepalive > 0) {
  result.connections = { opened: 0, broken: 0, breaks: [] };
  const interval = Number(values['interval-ms']);
  await Promise.all(
    Array.from({ length: keepalive }, async (_, i) => {
      // Spread over one interval: N connections opened at once would measure the burst.
      await new Promise((r) => setTimeout(r, (i * interval) / keepalive));
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      result.connections!.opened++;
      let first = true;
      const tracked: Tracked = { backend: '?', port: 0 };
      while (Date.now() < until) {
        const ok = await once(urls[i % urls.length]!, agent, !first, tracked);
        first = false;
        if (!ok) {
          result.connections!.broken++;
          break;
        }
        await new Promise((r) => setTimeout(r, interval));
      }
      agent.destroy();
    }),
  );
} else {
  await Promise.all(
    Array.from({ length: Number(values.concurrency) }, async (_, i) => {
      while (Date.now() < until) await once(urls[i % urls.length]!, false);
    }),
  );
}
const countersAtEnd = tcpCounters();
result.stalls.retransSegs = countersAtEnd.retransSegs - countersAtStart.retransSegs;
result.stalls.synRetrans = countersAtEnd.synRetrans - countersAtStart.synRetrans;
if (latencies.length) {
  latencies.sort((a, b) => a - b);
  const at = (q: number) =>
    Math.round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!);
  result.latencyMs = { p50: at(0.5), p99: at(0.99), max: Math.round(latencies.at(-1)!) };
}
console.log(JSON.stringify(result));
