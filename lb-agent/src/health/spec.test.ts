import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseServicesFile } from '../ipvs/services-file.ts';
import { describeCheck, parseHealthCheckText } from './spec.ts';

test('health check annotation: a type alone takes the defaults; JSON sets fields', () => {
  const tcp = parseHealthCheckText('tcp');
  assert.ok(tcp.ok);
  assert.deepEqual(tcp.spec, {
    type: 'tcp',
    port: undefined,
    path: '/',
    host: undefined,
    expectStatus: [200, 399],
    send: '',
    expect: '',
    intervalMs: 5000,
    timeoutMs: 2000,
    rise: 2,
    fall: 3,
  });
  const http = parseHealthCheckText(
    '{"type":"http","path":"/healthz","expectStatus":"200","intervalSeconds":1,"timeoutSeconds":0.5,"port":8081}',
  );
  assert.ok(http.ok);
  assert.deepEqual(
    [http.spec.path, http.spec.expectStatus, http.spec.intervalMs, http.spec.timeoutMs, http.spec.port],
    ['/healthz', [200, 200], 1000, 500, 8081],
  );
  assert.equal(describeCheck(http.spec), 'http /healthz port 8081 every 1 s, timeout 0.5 s, rise 2, fall 3');
});

test('health check: each bad field is named with its value', () => {
  const cases: [string, RegExp][] = [
    ['ping', /must be tcp, http, https or a JSON object/],
    ['{"type":"icmp"}', /type: must be one of tcp, http, https, udp \(got "icmp"\)/],
    [
      '{"type":"tcp","intervalSeconds":1,"timeoutSeconds":3}',
      /timeoutSeconds: must not exceed intervalSeconds \(1\) \(got 3\)/,
    ],
    ['{"type":"udp"}', /send: udp checks need a request/],
    ['{"type":"udp","send":"xyz"}', /send: must be hex bytes/],
    ['{"type":"http","expectStatus":"300-200"}', /expectStatus: the range is reversed/],
    ['{"type":"http","path":"healthz"}', /path: must start with \/ and hold no spaces \(got "healthz"\)/],
    ['{"type":"tcp","rise":0}', /rise: must be an integer from 1 to 100 \(got 0\)/],
    ['{"type":"tcp","interval":5}', /interval: unknown option/],
  ];
  for (const [text, want] of cases) {
    const r = parseHealthCheckText(text);
    assert.equal(r.ok, false, text);
    assert.match((r as { problem: string }).problem, want, text);
  }
});

test('services file: healthCheck is validated where it stands', () => {
  const file = (healthCheck: unknown) => ({
    pools: ['203.0.113.0/24'],
    services: [{ vip: '203.0.113.1', port: 80, healthCheck, backends: [{ address: '10.0.0.1' }] }],
  });
  const ok = parseServicesFile(file({ type: 'http', path: '/ready', fall: 2 }), 'svc.yaml');
  assert.equal(ok.services[0]!.healthCheck?.type, 'http');
  assert.equal(ok.services[0]!.healthCheck?.fall, 2);
  assert.throws(
    () => parseServicesFile(file({ type: 'http', timeoutSeconds: 0 }), 'svc.yaml'),
    /services\[0\]\.healthCheck\.timeoutSeconds: must be a number of seconds from 0.05 to 60 \(got 0\)/,
  );
});
