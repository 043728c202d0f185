// The same ECMP contract with FRR 8.4 as the router (the second router daemon portlb is
// tested against): both replicas -> two next hops; withdraw -> one; graceful shutdown
// moves traffic before the withdraw.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { GobgpSpeaker } from '../../lb-agent/src/bgp/gobgp-speaker.ts';
import { GRACEFUL_SHUTDOWN } from '../../lb-agent/src/bgp/types.ts';
import { ad, peer } from '../bgp/conformance.ts';
import { type Frr, startFrr, startGobgpd, vtysh } from '../harness/bgp.ts';
import { fibNextHops, NetnsLab, waitFor } from '../harness/netns.ts';

const VIP = '203.0.113.20/32';

describe('BGP with FRR 8.4 as the router', () => {
  const lab = new NetnsLab(`plf${process.pid % 10000}`);
  let frr: Frr;
  const speakers: GobgpSpeaker[] = [];
  const lbs = [
    { name: 'lb1', addr: '10.110.1.2', router: '10.110.1.1' },
    { name: 'lb2', addr: '10.110.2.2', router: '10.110.2.1' },
  ];

  before(async () => {
    lab.addNamespace('r');
    for (const lb of lbs) {
      lab.addNamespace(lb.name);
      lab.link('r', `r-${lb.name}`, [`${lb.router}/24`], lb.name, `${lb.name}-r`, [`${lb.addr}/24`]);
    }
    frr = await startFrr(lab, 'r', {
      routerId: '10.110.0.1',
      asn: 65000,
      neighbors: lbs.map((lb) => ({ name: lb.name, address: lb.addr, asn: 65001, family: 'ipv4' as const })),
    });
    for (const lb of lbs) {
      const g = await startGobgpd(lab, lb.name);
      const s = new GobgpSpeaker({ target: g.target, healthIntervalMs: 500 }).start();
      speakers.push(s);
      await waitFor('connected', () => s.connected());
      await s.setGlobal({ asn: 65001, routerId: lb.addr, listenPort: 179, listenAddresses: [lb.addr] });
      await s.setPeers([peer(lb.router)]);
    }
    for (const s of speakers) {
      await waitFor('FRR session', async () => (await s.listPeers())[0]?.state === 'established', {
        timeoutMs: 30_000,
      });
    }
  });

  after(async () => {
    await Promise.all(speakers.map((s) => s.close()));
    await lab.cleanup();
  });

  test('two replicas: one route with two next hops in the FIB', async () => {
    for (const s of speakers) await s.setAdvertisements([ad(VIP)]);
    await waitFor('two next hops', () => fibNextHops(lab, 'r', VIP).length === 2);
    assert.deepEqual(fibNextHops(lab, 'r', VIP), ['10.110.1.2', '10.110.2.2']);
  });

  test('graceful shutdown then withdraw: traffic leaves lb2 first, then the path goes', async () => {
    await speakers[1]!.setAdvertisements([ad(VIP, { communities: [GRACEFUL_SHUTDOWN] })]);
    await waitFor('only lb1', () => fibNextHops(lab, 'r', VIP).join() === '10.110.1.2');
    assert.match(vtysh(lab, 'r', frr, `show bgp ipv4 unicast ${VIP}`), /10\.110\.2\.2[\s\S]*localpref 0/);
    await speakers[1]!.setAdvertisements([]);
    await waitFor(
      'lb2 path gone',
      () => !vtysh(lab, 'r', frr, `show bgp ipv4 unicast ${VIP}`).includes('10.110.2.2'),
    );
    assert.deepEqual(fibNextHops(lab, 'r', VIP), ['10.110.1.2']);
    await speakers[1]!.setAdvertisements([ad(VIP)]);
    await waitFor('two next hops again', () => fibNextHops(lab, 'r', VIP).length === 2);
  });

  test('the router sends nothing back to the replicas', async () => {
    const received = (await speakers[0]!.listPeers())[0]?.received;
    assert.equal(received, 0);
  });
});
