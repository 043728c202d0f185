import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type NodeStatusReport, nodeStatusObject } from '../k8s/node-status.ts';
import { clusterView, formatClusterView } from './cluster-status.ts';

const NOW = Date.parse('2026-12-02T10:00:00.000Z');

const published = (o: Partial<NodeStatusReport> & { node: string }, observedAgoMs = 5000) => {
  const obj = nodeStatusObject(
    {
      identity: `portlb-${o.node}`,
      version: '0.1.0',
      ready: true,
      reasons: [],
      leader: false,
      lastSync: null,
      speakerConnected: true,
      peers: [{ address: '192.0.2.1', asn: 65000, state: 'established', bfd: 'up' }],
      vips: [],
      services: [],
      ...o,
    },
    `uid-${o.node}`,
  );
  obj.status.observedAt = new Date(NOW - observedAgoMs).toISOString();
  return obj;
};

const web = (backends: { address: string; weight: number; health: string | null }[]) => ({
  id: 'tcp:203.0.113.10:80',
  vip: '203.0.113.10',
  owner: 'shop/web',
  state: 'programmed',
  backends,
});

describe('portlb status --cluster', () => {
  test('per VIP: who announces, who withholds and why, the routers, the backends', () => {
    const both = [{ address: '10.1.0.1:8080', weight: 1, health: 'up' }];
    const items = [
      published({
        node: 'edge-2',
        vips: [
          { address: '203.0.113.10', owners: ['shop/web'], announced: false, withheld: 'NoLocalEndpoints' },
        ],
        services: [web(both)],
      }),
      published({
        node: 'edge-1',
        leader: true,
        vips: [{ address: '203.0.113.10', owners: ['shop/web'], announced: true, withheld: null }],
        services: [web(both)],
      }),
    ];
    const view = clusterView(items, NOW, 600_000);
    assert.deepEqual(
      view.nodes.map((n) => [n.node, n.leader, n.announced, n.withheld, n.stale]),
      [
        ['edge-1', true, 1, 0, false],
        ['edge-2', false, 0, 1, false],
      ],
    );
    const [vip] = view.vips;
    assert.equal(vip!.address, '203.0.113.10');
    assert.deepEqual(vip!.owners, ['shop/web']);
    assert.deepEqual(vip!.announcedBy, ['edge-1']);
    assert.deepEqual(vip!.withheldBy, [{ node: 'edge-2', reason: 'NoLocalEndpoints' }]);
    assert.deepEqual(vip!.routers, [
      { router: '192.0.2.1', asn: 65000, sessions: [{ node: 'edge-1', state: 'established', bfd: 'up' }] },
    ]);
    assert.deepEqual(vip!.services, [
      { id: 'tcp:203.0.113.10:80', backends: [{ nodes: ['edge-1', 'edge-2'], list: '10.1.0.1:8080 w1' }] },
    ]);
    const text = formatClusterView(view, NOW);
    assert.match(text, /^edge-1 \(leader\)\s+0\.1\.0\s+yes\s+1\s+0\s+1\/1 established\s+5 s ago$/m);
    assert.match(text, /^ {2}announced by {2}edge-1$/m);
    assert.match(text, /^ {2}withheld by {3}edge-2 \(NoLocalEndpoints\)$/m);
    assert.match(text, /^ {2}router {8}192\.0\.2\.1 AS65000: edge-1 established, BFD up$/m);
  });

  test('nodes that disagree on backends are shown apart; a stale object is marked wherever it is quoted', () => {
    const items = [
      published({
        node: 'edge-1',
        vips: [{ address: '203.0.113.10', owners: ['shop/web'], announced: true, withheld: null }],
        services: [web([{ address: '10.1.0.1:8080', weight: 0, health: 'down' }])],
      }),
      published(
        {
          node: 'edge-2',
          vips: [{ address: '203.0.113.10', owners: ['shop/web'], announced: true, withheld: null }],
          services: [web([{ address: '10.1.0.1:8080', weight: 1, health: 'up' }])],
        },
        30 * 60_000,
      ),
    ];
    const view = clusterView(items, NOW, 600_000);
    assert.deepEqual(
      view.nodes.map((n) => n.stale),
      [false, true],
    );
    assert.deepEqual(view.vips[0]!.announcedBy, ['edge-1', 'edge-2 (STALE)']);
    const text = formatClusterView(view, NOW);
    assert.match(text, /tcp:203\.0\.113\.10:80 {2}\(the nodes disagree\)/);
    assert.match(text, /^ {4}edge-1: 10\.1\.0\.1:8080 w0 DOWN$/m);
    assert.match(text, /^ {4}edge-2 \(STALE\): 10\.1\.0\.1:8080 w1$/m);
    assert.match(text, /STALE \(30 min ago\)/);
  });

  test('nothing published: says what to check', () => {
    assert.match(formatClusterView(clusterView([], NOW, 600_000), NOW), /no PortlbNodeStatus objects/);
  });
});
