// The real probes against real sockets on loopback.
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type Server } from 'node:net';
import { after, describe, test } from 'node:test';
import { probe } from './probe.ts';
import { parseHealthCheckText } from './spec.ts';

const spec = (text: string) => {
  const r = parseHealthCheckText(text);
  if (!r.ok) throw new Error(r.problem);
  return r.spec;
};
const listen = (s: Server | ReturnType<typeof createHttpServer>) =>
  new Promise<number>((resolve) =>
    s.listen(0, '127.0.0.1', () => resolve((s.address() as { port: number }).port)),
  );
const at = (port: number) => ({ address: '127.0.0.1', family: 'ipv4' as const, port });
/** A port nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const s = createServer();
  const port = await listen(s);
  await new Promise((r) => s.close(r));
  return port;
}

describe('probes (loopback)', () => {
  const servers: { close(): void }[] = [];
  after(() => {
    for (const s of servers) s.close();
  });

  test('tcp: connect passes, a refused port fails', async () => {
    const s = createServer((c) => c.on('error', () => {}));
    servers.push(s);
    const port = await listen(s);
    assert.deepEqual(await probe(at(port), spec('tcp')), { outcome: 'pass', detail: 'connected' });
    assert.deepEqual(await probe(at(await closedPort()), spec('tcp')), {
      outcome: 'fail',
      detail: 'ECONNREFUSED',
    });
  });

  test('http: the status decides; path and Host are sent; a silent server times out', async () => {
    const seen: { url?: string; host?: string }[] = [];
    const s = createHttpServer((req, res) => {
      seen.push({ url: req.url, host: req.headers.host });
      res.writeHead(req.url === '/ready' ? 200 : 503);
      res.end('x');
    });
    servers.push(s);
    const port = await listen(s);
    assert.deepEqual(await probe(at(port), spec('{"type":"http","path":"/ready","host":"web.example"}')), {
      outcome: 'pass',
      detail: 'status 200',
    });
    assert.deepEqual(seen[0], { url: '/ready', host: 'web.example' });
    assert.deepEqual(await probe(at(port), spec('{"type":"http","path":"/down"}')), {
      outcome: 'fail',
      detail: 'status 503 (expected 200-399)',
    });
    const silent = createHttpServer(() => {});
    servers.push(silent);
    const sp = await listen(silent);
    const t0 = performance.now();
    const r = await probe(at(sp), spec('{"type":"http","intervalSeconds":1,"timeoutSeconds":0.3}'));
    assert.deepEqual(r, { outcome: 'fail', detail: 'timed out after 300 ms' });
    assert.ok(performance.now() - t0 < 1500);
  });

  test('udp: a reply that starts as expected passes; another reply or a closed port fails', async () => {
    const echo = createSocket('udp4');
    servers.push(echo);
    echo.on('message', (msg, rinfo) =>
      echo.send(Buffer.concat([Buffer.from('ok'), msg]), rinfo.port, rinfo.address),
    );
    const port = await new Promise<number>((r) => echo.bind(0, '127.0.0.1', () => r(echo.address().port)));
    const send = Buffer.from('ping').toString('hex');
    const expect = Buffer.from('ok').toString('hex');
    assert.equal(
      (await probe(at(port), spec(`{"type":"udp","send":"${send}","expect":"${expect}"}`))).outcome,
      'pass',
    );
    assert.equal(
      (await probe(at(port), spec(`{"type":"udp","send":"${send}","expect":"ffff"}`))).outcome,
      'fail',
    );
    const closed = await probe(
      at(await closedPort()),
      spec(`{"type":"udp","send":"${send}","timeoutSeconds":1}`),
    );
    assert.equal(closed.outcome, 'fail');
    assert.equal(closed.detail, 'ECONNREFUSED', 'the ICMP port unreachable, not a timeout');
  });
});

test('a busy event loop does not turn an answer into a timeout', async () => {
  const s = createServer((c) => c.on('error', () => {}));
  const port = await listen(s);
  const result = probe(at(port), spec('{"type":"tcp","intervalSeconds":1,"timeoutSeconds":0.05}'));
  // Blocks the loop past the deadline while the kernel completes the handshake.
  const until = performance.now() + 200;
  while (performance.now() < until);
  try {
    assert.deepEqual(await result, { outcome: 'pass', detail: 'connected' });
  } finally {
    s.close();
  }
});
