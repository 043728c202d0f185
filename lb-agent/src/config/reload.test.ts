import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseAgentConfig } from './agent-config.ts';
import { planReload } from './reload.ts';

const base = {
  mode: 'standalone',
  standalone: { servicesFile: '/etc/portlb/services.yaml' },
  pools: [{ name: 'default', addresses: ['203.0.113.0/24'] }],
  bgp: { asn: 65001, peers: [{ address: '192.0.2.1', asn: 65000 }] },
};
const config = (o: Record<string, unknown> = {}) => parseAgentConfig({ ...base, ...o }, 'test');

test('pools and BGP peers are live; nothing else is, and each such option is named', () => {
  assert.deepEqual(planReload(config(), config()), { restart: [], pools: false, peers: false });
  const more = config({
    pools: [...base.pools, { name: 'extra', addresses: ['198.51.100.0/28'] }],
    bgp: { ...base.bgp, peers: [...base.bgp.peers, { address: '192.0.2.2', asn: 65000 }] },
  });
  assert.deepEqual(planReload(config(), more), { restart: [], pools: true, peers: true });
  const other = config({
    bgp: { ...base.bgp, asn: 65002 },
    sync: { resyncSeconds: 120 },
    defaults: { scheduler: 'wrr' },
  });
  assert.deepEqual(planReload(config(), other).restart, [
    'bgp.asn',
    'defaults.scheduler',
    'sync.resyncSeconds',
  ]);
});

test('a peer change that touches a BFD session needs a restart; one that does not is live', () => {
  const bfd = { bfd: {} };
  const withBfd = config(bfd);
  const added = config({
    ...bfd,
    bgp: { ...base.bgp, peers: [...base.bgp.peers, { address: '192.0.2.2', asn: 65000 }] },
  });
  assert.deepEqual(planReload(withBfd, added).restart, ['bgp.peers (a peer with BFD)']);
  const noBfdPeer = config({
    ...bfd,
    bgp: { ...base.bgp, peers: [...base.bgp.peers, { address: '192.0.2.2', asn: 65000, bfd: false }] },
  });
  assert.deepEqual(planReload(withBfd, noBfdPeer), { restart: [], pools: false, peers: true });
});
