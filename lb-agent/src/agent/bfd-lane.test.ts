import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseAgentConfig } from '../config/agent-config.ts';
import { bfdPeers, bgpPorts } from './bfd-lane.ts';

test('bfd peers: every BGP peer unless it opts out; multihop from the eBGP multihop TTL', () => {
  const config = parseAgentConfig(
    {
      pools: [{ name: 'default', addresses: ['203.0.113.0/24'] }],
      bgp: {
        asn: 65001,
        peers: [
          { address: '10.0.0.1', asn: 65000, localAddress: '10.0.0.2' },
          { address: '10.0.0.9', asn: 65000, bfd: false },
          { address: '192.0.2.1', asn: 65010, ebgpMultihopTtl: 3 },
        ],
      },
      bfd: { intervalMs: 100 },
    },
    'config.yaml',
  );
  assert.deepEqual(bgpPorts(config), [179], "the BFD peers' port (and no listener)");
  assert.deepEqual(bfdPeers(config), [
    { address: '10.0.0.1', localAddress: '10.0.0.2', multihop: false },
    { address: '192.0.2.1', localAddress: undefined, multihop: true },
  ]);
  assert.deepEqual(
    bfdPeers(
      parseAgentConfig(
        { ...config, bfd: undefined, pools: [{ name: 'default', addresses: ['203.0.113.0/24'] }] },
        'x',
      ),
    ),
    [],
  );
});
