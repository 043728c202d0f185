import { anyOf, GobgpApi } from './lb-agent/src/bgp/gobgp-api.ts';

const api = new GobgpApi({ target: 'unix:///tmp/gb/api.sock' });
console.log('getbgp', JSON.stringify(await api.unary('GetBgp', {})));
await api.unary('StartBgp', { global: { asn: 65001, router_id: '10.0.0.1', listen_port: -1 } });
console.log('getbgp', JSON.stringify(await api.unary('GetBgp', {})));
const fam = { afi: 'AFI_IP', safi: 'SAFI_UNICAST' };
const r = await api.unary('AddPath', {
  path: {
    family: fam,
    nlri: anyOf('IPAddressPrefix', { prefix: '203.0.113.10', prefix_len: 32 }),
    pattrs: [
      anyOf('OriginAttribute', { origin: 0 }),
      anyOf('NextHopAttribute', { next_hop: '0.0.0.0' }),
      anyOf('CommunitiesAttribute', { communities: [4294901760] }),
    ],
  },
});
console.log('addpath', JSON.stringify(r));
for (const t of ['GLOBAL', 'LOCAL']) {
  try {
    console.log(t, JSON.stringify(await api.list('ListPath', { table_type: t, family: fam })));
  } catch (e) {
    console.log(t, 'ERR', (e as Error).message);
  }
}
await api.unary('AddPeer', {
  peer: {
    conf: { neighbor_address: '10.9.9.9', peer_asn: 65000, auth_password: 'x' },
    timers: { config: { hold_time: 9, keepalive_interval: 3 } },
    afi_safis: [{ config: { family: fam, enabled: true } }],
  },
});
console.log('peers', JSON.stringify(await api.list('ListPeer', {})));
api.close();
