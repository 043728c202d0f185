// BGP safety with real daemons: a replica peering two routers in different ASes never
// carries a route from one to the other (no transit) and holds none of their routes;
// its own VIP reaches both. During a graceful shutdown an eBGP router sees a longer AS
// path, an iBGP router LOCAL_PREF 0 and no AS of its own in the path (no loop, no hard
// withdraw). gobgpd is provisioned only through the adapter, as in production.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { GobgpApi } from '../../lb-agent/src/bgp/gobgp-api.ts';
import { GobgpSpeaker } from '../../lb-agent/src/bgp/gobgp-speaker.ts';
import { advertisement, GRACEFUL_SHUTDOWN } from '../../lb-agent/src/bgp/types.ts';
import { peer } from '../bgp/conformance.ts';
import { type Bird, birdc, type Gobgpd, startBirdWithConfig, startGobgpd } from '../harness/bgp.ts';
import { NetnsLab, waitFor } from '../harness/netns.ts';

const VIP = '203.0.113.10/32';
const THEIRS = '198.51.100.0/24';
const LB = { toA: '10.110.1.2', toB: '10.110.2.2', toI: '10.110.3.2' };
const ROUTERS = {
  a: { address: '10.110.1.1', asn: 65000 },
  b: { address: '10.110.2.1', asn: 65100 },
  i: { address: '10.110.3.1', asn: 65001 },
};

const routerConfig = (
  id: string,
  asn: number,
  neighbor: string,
  opts: { originate?: boolean; ibgp?: boolean },
) => `
router id ${id};
log stderr all;
protocol device { scan time 10; }
${opts.originate ? `protocol static theirs { ipv4; route ${THEIRS} blackhole; }` : ''}
protocol bgp lb {
  local as ${asn};
  neighbor ${neighbor} as 65001;
  ${opts.ibgp ? 'direct;' : ''}
  hold time 9;
  connect delay time 1;
  connect retry time 1;
  error wait time 1, 2;
  ipv4 {
    import all;
    export ${opts.originate ? 'where proto = "theirs"' : 'none'};
  };
}
`;

describe('BGP policy: no transit between routers, graceful shutdown without loops', () => {
  const lab = new NetnsLab('bgpp');
  const birds: Record<string, Bird> = {};
  let gobgpd: Gobgpd;
  let speaker: GobgpSpeaker;

  before(async () => {
    lab.addNamespace('lb');
    for (const [name, r, local] of [
      ['a', ROUTERS.a, LB.toA],
      ['b', ROUTERS.b, LB.toB],
      ['i', ROUTERS.i, LB.toI],
    ] as const) {
      lab.addNamespace(name);
      lab.link(name, `r${name}-lb`, [`${r.address}/24`], 'lb', `lb-${name}`, [`${local}/24`]);
      birds[name] = await startBirdWithConfig(
        lab,
        name,
        routerConfig(r.address, r.asn, local, { originate: name === 'a', ibgp: name === 'i' }),
      );
    }
    gobgpd = await startGobgpd(lab, 'lb');
    speaker = new GobgpSpeaker({ target: gobgpd.target, healthIntervalMs: 500 }).start();
    await waitFor('speaker connected', () => speaker.connected());
    await speaker.setGlobal({ asn: 65001, routerId: LB.toA, listenPort: -1, listenAddresses: [] });
    await speaker.setPeers([
      peer(ROUTERS.a.address, { asn: ROUTERS.a.asn }),
      peer(ROUTERS.b.address, { asn: ROUTERS.b.asn }),
      peer(ROUTERS.i.address, { asn: ROUTERS.i.asn }),
    ]);
    await waitFor(
      'three sessions established',
      async () => (await speaker.listPeers()).filter((p) => p.state === 'established').length === 3,
      { timeoutMs: 30_000 },
    );
    await speaker.setAdvertisements([advertisement(VIP)]);
  });
  after(async () => {
    await speaker?.close();
    await lab.cleanup();
  });

  // birdc exits non-zero on "Network not found".
  const route = (name: string, prefix: string) => {
    try {
      return birdc(lab, name, birds[name]!, `show route for ${prefix} all`);
    } catch (err) {
      if (/Network not found/.test((err as Error).message)) return '';
      throw err;
    }
  };
  const hasRoute = (name: string, prefix: string) => route(name, prefix).includes(prefix);

  test("router A's route never reaches router B through the replica, and the replica holds none", async () => {
    await waitFor('router A announces its route to the replica', async () => {
      const a = route('a', THEIRS);
      return (
        a.includes(THEIRS) &&
        (await speaker.listPeers()).find((p) => p.address === ROUTERS.a.address)?.state === 'established'
      );
    });
    // Long enough for a leak to show (routes propagate in milliseconds between these daemons).
    await waitFor('the VIP reached B', () => hasRoute('b', VIP));
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(hasRoute('b', THEIRS), false, `router B must not learn ${THEIRS}: ${route('b', THEIRS)}`);
    assert.equal(hasRoute('i', THEIRS), false, 'nor the iBGP router');
    const api = new GobgpApi({ target: gobgpd.target });
    try {
      const global = await api.list('ListPath', {
        table_type: 'GLOBAL',
        family: { afi: 'AFI_IP', safi: 'SAFI_UNICAST' },
      });
      const prefixes = global.map((d) => d.destination?.prefix);
      assert.deepEqual(prefixes, [VIP], 'the global RIB holds our own path only');
      const adjIn = await api.list('ListPath', {
        table_type: 'ADJ_IN',
        name: ROUTERS.a.address,
        family: { afi: 'AFI_IP', safi: 'SAFI_UNICAST' },
      });
      const received = adjIn.flatMap((d) => (d.destination?.paths ?? []) as { filtered?: boolean }[]);
      console.log(
        `# measured: adj-RIB-in from router A: ${received.length} path(s), ${received.filter((p) => p.filtered).length} filtered by the import policy`,
      );
    } finally {
      api.close();
    }
  });

  test('our VIP reaches both eBGP routers and the iBGP one', () => {
    for (const r of ['a', 'b', 'i']) assert.ok(hasRoute(r, VIP), `${r} has ${VIP}`);
    assert.match(route('b', VIP), /BGP\.as_path: 65001\s*$/m);
    assert.match(route('i', VIP), /BGP\.as_path:\s*$/m, 'iBGP: empty AS path');
  });

  test('graceful shutdown: eBGP sees our AS prepended, iBGP sees LOCAL_PREF 0 and accepts the path (no loop)', async () => {
    await speaker.setAdvertisements([advertisement(VIP, { communities: [GRACEFUL_SHUTDOWN], localPref: 0 })]);
    await waitFor('eBGP: a longer AS path', () =>
      /BGP\.as_path: 65001 65001 65001\s*$/m.test(route('b', VIP)),
    );
    await waitFor('iBGP: LOCAL_PREF 0', () => /BGP\.local_pref: 0\s*$/m.test(route('i', VIP)));
    const i = route('i', VIP);
    assert.match(i, /BGP\.as_path:\s*$/m, 'no AS of its own in the path');
    assert.match(i, /\(65535,0\)/, 'the GRACEFUL_SHUTDOWN community');
    assert.ok(hasRoute('i', VIP), 'still there: a graceful, not a hard, withdraw');
  });
});
