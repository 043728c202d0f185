import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatStatus } from './status-command.ts';

test('portlb status: services with backends, draining, VIPs with reasons, peers, skips', () => {
  const text = formatStatus({
    node: 'edge-1',
    mode: 'kubernetes',
    leader: true,
    ready: { ready: false, reasons: ['BGP speaker not connected'] },
    lastSync: { at: '2026-11-27T17:00:00.000Z', ok: true, durationMs: 12 },
    services: [
      {
        id: 'tcp:203.0.113.1:80',
        scheduler: 'mh',
        connections: 42,
        backends: [
          { id: '10.1.0.5:8080', forward: 'nat', weight: 1, active: 3, inactive: 1 },
          { id: '10.1.0.6:8080', forward: 'nat', weight: 0, active: 2, inactive: 0 },
        ],
      },
      { id: 'udp:203.0.113.2:53', scheduler: 'rr', connections: 0, backends: [] },
    ],
    draining: [
      {
        service: 'tcp:203.0.113.1:80',
        backend: '10.1.0.6:8080',
        active: 2,
        since: '2026-11-27T16:59:00.000Z',
      },
    ],
    vips: [
      { address: '203.0.113.1', owners: ['shop/web'], announced: true, withheld: null },
      { address: '203.0.113.2', owners: ['shop/dns'], announced: false, withheld: 'NoReadyBackends' },
    ],
    bgp: { connected: false, peers: [{ address: '10.0.0.1', asn: 65000, state: 'active' }] },
    skipped: [{ service: 'shop/typo', reason: 'InvalidAnnotation', detail: 'portlb.io/scheduler: ...' }],
    warnings: [{ service: 'shop/web', message: 'tunnel forwarding cannot change ports: ...' }],
    health: [
      {
        service: 'shop/web',
        check: 'http /healthz every 5 s, timeout 2 s, rise 2, fall 3',
        healthy: 1,
        total: 2,
        backends: [
          {
            backend: '10.1.0.5:8080',
            state: 'up',
            last: 'pass: status 200',
            since: '2026-11-27T16:00:00.000Z',
          },
          {
            backend: '10.1.0.6:8080',
            state: 'down',
            last: 'fail: status 503 (expected 200-399)',
            since: '2026-11-27T16:59:00.000Z',
          },
        ],
      },
    ],
  });
  assert.match(
    text,
    /HEALTH CHECKS \(from this node\)\n {2}shop\/web: 1\/2 healthy \(http \/healthz every 5 s/,
  );
  assert.match(
    text,
    /^ {4}10\.1\.0\.6:8080 +DOWN +since 2026-11-27T16:59:00\.000Z {2}last: fail: status 503/m,
  );
  assert.match(
    text,
    /^node edge-1 {2}mode kubernetes {2}leader yes {2}ready no \(BGP speaker not connected\)$/m,
  );
  assert.match(text, /tcp:203\.0\.113\.1:80 +mh +42 {2}10\.1\.0\.5:8080 +nat +1 +3 +1/);
  assert.match(text, /^ +10\.1\.0\.6:8080 +nat +0 +2 +0$/m);
  assert.match(text, /udp:203\.0\.113\.2:53 .*\(no backends\)/);
  assert.match(text, /DRAINING\n {2}tcp:203\.0\.113\.1:80 -> 10\.1\.0\.6:8080: 2 active/);
  assert.match(text, /203\.0\.113\.2 +no: NoReadyBackends +shop\/dns/);
  assert.match(text, /BGP speaker NOT connected\n {2}peer 10\.0\.0\.1 +AS65000 {2}active/);
  assert.match(text, /SKIPPED\n {2}shop\/typo: InvalidAnnotation/);
  assert.match(text, /WARNINGS\n {2}shop\/web: tunnel forwarding cannot change ports/);
});

test('portlb status in doubt: the kernel unreadable, the API unreachable, VIPs kept, notices, a service not programmed', () => {
  const text = formatStatus({
    node: 'edge-1',
    mode: 'kubernetes',
    leader: false,
    source: {
      kind: 'kubernetes',
      synced: true,
      healthy: false,
      error: 'watch services: no answer before the deadline',
    },
    ready: { ready: true, reasons: [] },
    live: { ok: false, reason: "the kernel's state has been unknown for 190 s" },
    lastSync: {
      at: '2026-11-27T17:00:00.000Z',
      ok: false,
      durationMs: 3,
      failures: [{ step: 'read', code: 'KERNEL_ERROR', message: 'IPVS dump: EIO' }],
    },
    kernelError: 'IPVS dump: EIO',
    services: null,
    draining: [],
    vips: [{ address: '203.0.113.1', owners: ['shop/web'], announced: true, withheld: null, kept: true }],
    bgp: null,
    skipped: [],
    warnings: [],
    notices: [
      {
        what: 'IpvsServicesVanish',
        subject: 'node/edge-1',
        reason: 'ExternalDeletes',
        message: 'kube-proxy ...',
      },
    ],
  });
  assert.match(text, /last sync .* FAILED in 3 ms: read KERNEL_ERROR IPVS dump: EIO/);
  assert.match(text, /^live no \(the kernel's state has been unknown for 190 s\)$/m);
  assert.match(
    text,
    /^source kubernetes UNHEALTHY: watch services: no answer before the deadline \(last known state kept\)$/m,
  );
  assert.match(text, /^IPVS: the kernel could not be read: IPVS dump: EIO$/m);
  assert.doesNotMatch(text, /^SERVICE/m, 'no table that looks empty');
  assert.match(text, /203\.0\.113\.1 +yes \(kept: state unknown\) +shop\/web/);
  assert.match(text, /NOTICES\n {2}IpvsServicesVanish node\/edge-1: kube-proxy/);
});

test('portlb status: a service whose programming failed is marked', () => {
  const text = formatStatus({
    node: 'edge-1',
    mode: 'standalone',
    leader: null,
    ready: { ready: true, reasons: [] },
    services: [
      { id: 'tcp:203.0.113.1:80', state: 'not-programmed', scheduler: 'mh', connections: 0, backends: [] },
    ],
    draining: [],
    vips: [],
    bgp: null,
    skipped: [],
  });
  assert.match(text, /tcp:203\.0\.113\.1:80 +mh +0 {2}\(no backends\) +NOT PROGRAMMED/);
});
