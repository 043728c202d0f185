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
  });
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
