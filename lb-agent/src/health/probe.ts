// One probe of one backend, from this node (the path the LB's traffic takes). Three
// outcomes, never two: the backend answered as expected (pass), it did not (fail: refused,
// reset, timed out, wrong status or reply), or the probe could not be made here (error: no
// route from this node, a permission, no sockets left). An error says nothing about the
// backend, so the checker never counts it as a failure.
import { createSocket } from 'node:dgram';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect, type Socket } from 'node:net';
import type { Family } from '../net/ip.ts';
import type { HealthCheckSpec } from './spec.ts';

export type ProbeOutcome = 'pass' | 'fail' | 'error';

export interface ProbeResult {
  outcome: ProbeOutcome;
  /** What happened, for logs and status: "connected", "status 503", "timed out after 2000 ms". */
  detail: string;
}

export interface ProbeTarget {
  address: string;
  family: Family;
  port: number;
}

export type Prober = (target: ProbeTarget, spec: HealthCheckSpec) => Promise<ProbeResult>;

/** errno codes that describe this node, not the backend. */
const CANNOT_RUN = new Set([
  'ENETUNREACH',
  'EPERM',
  'EACCES',
  'EADDRNOTAVAIL',
  'EADDRINUSE',
  'EMFILE',
  'ENFILE',
  'ENOBUFS',
  'ENOMEM',
  'EAFNOSUPPORT',
  'EINVAL',
]);

function fromError(err: unknown): ProbeResult {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  const detail = code || (err as Error).message || String(err);
  return { outcome: CANNOT_RUN.has(code) ? 'error' : 'fail', detail };
}

/**
 * Closes with a reset: a probe every second to 1,000 backends would otherwise leave
 * 60,000 sockets in TIME_WAIT on this node and use up its ephemeral ports.
 */
const abort = (s: Socket | undefined) => {
  if (s && !s.destroyed) s.resetAndDestroy();
};

/** Runs `body` with a deadline; whatever settles first wins, the rest is cleaned up. */
function withDeadline(
  timeoutMs: number,
  body: (done: (r: ProbeResult) => void, onCleanup: (fn: () => void) => void) => void,
): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const cleanups: (() => void)[] = [];
    let settled = false;
    const done = (r: ProbeResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      for (const c of cleanups) {
        try {
          c();
        } catch {
          // Cleaning up a socket that is already gone.
        }
      }
      resolve(r);
    };
    // The deadline yields once before it fails the probe: timers run before I/O in each
    // turn of the event loop, so after the loop was busy (a child process spawned, a large
    // pass) an answer already waiting in the socket would otherwise lose to the timer.
    const timer = setTimeout(
      () => setImmediate(() => done({ outcome: 'fail', detail: `timed out after ${timeoutMs} ms` })),
      timeoutMs,
    );
    try {
      body(done, (fn) => cleanups.push(fn));
    } catch (err) {
      done(fromError(err));
    }
  });
}

function tcpProbe(t: ProbeTarget, spec: HealthCheckSpec): Promise<ProbeResult> {
  return withDeadline(spec.timeoutMs, (done, onCleanup) => {
    const s = connect({ host: t.address, port: t.port, family: t.family === 'ipv4' ? 4 : 6 });
    onCleanup(() => abort(s));
    s.once('connect', () => done({ outcome: 'pass', detail: 'connected' }));
    s.once('error', (err) => done(fromError(err)));
  });
}

function httpProbe(t: ProbeTarget, spec: HealthCheckSpec): Promise<ProbeResult> {
  return withDeadline(spec.timeoutMs, (done, onCleanup) => {
    const host = spec.host ?? (t.family === 'ipv6' ? `[${t.address}]` : t.address);
    const options = {
      host: t.address,
      family: t.family === 'ipv4' ? 4 : 6,
      port: t.port,
      path: spec.path,
      method: 'GET',
      agent: false,
      headers: { Host: host, 'User-Agent': 'portlb-health-check', Connection: 'close' },
    } as const;
    const req =
      spec.type === 'https'
        ? // The check asks whether the backend serves, not who it is: its certificate names
          // the service, never the address probed.
          httpsRequest({ ...options, rejectUnauthorized: false, servername: spec.host })
        : httpRequest(options);
    onCleanup(() => {
      abort(req.socket ?? undefined);
      req.destroy();
    });
    req.once('response', (res) => {
      const status = res.statusCode ?? 0;
      const [lo, hi] = spec.expectStatus;
      done(
        status >= lo && status <= hi
          ? { outcome: 'pass', detail: `status ${status}` }
          : { outcome: 'fail', detail: `status ${status} (expected ${lo === hi ? lo : `${lo}-${hi}`})` },
      );
    });
    req.once('error', (err) => done(fromError(err)));
    req.end();
  });
}

function udpProbe(t: ProbeTarget, spec: HealthCheckSpec): Promise<ProbeResult> {
  return withDeadline(spec.timeoutMs, (done, onCleanup) => {
    const s = createSocket(t.family === 'ipv4' ? 'udp4' : 'udp6');
    onCleanup(() => s.close());
    const expect = Buffer.from(spec.expect, 'hex');
    s.once('error', (err) => done(fromError(err)));
    s.on('message', (msg) => {
      if (msg.subarray(0, expect.length).equals(expect))
        done({ outcome: 'pass', detail: `reply of ${msg.length} bytes` });
      else done({ outcome: 'fail', detail: `unexpected reply (${msg.subarray(0, 8).toString('hex')}...)` });
    });
    // Connected: an ICMP port unreachable comes back as ECONNREFUSED (a failure).
    s.connect(t.port, t.address, () => s.send(Buffer.from(spec.send, 'hex')));
  });
}

/** The real probes. */
export const probe: Prober = (target, spec) => {
  switch (spec.type) {
    case 'tcp':
      return tcpProbe(target, spec);
    case 'http':
    case 'https':
      return httpProbe(target, spec);
    case 'udp':
      return udpProbe(target, spec);
  }
};
