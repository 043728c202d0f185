// `npm run lab`: the whole system, with real traffic, inside the kernel harness. A BIRD
// router, LB replicas (lb-agent + gobgpd each), three backends and a client in network
// namespaces. Prints each step; leaves nothing behind.
import { parseArgs } from 'node:util';
import {
  CLIENT,
  describeLoad,
  Lab,
  type LoadResult,
  labServices,
  lbAddress,
  NAT_VIP,
  TUNNEL_VIP,
} from '../test/harness/lab.ts';

const { values } = parseArgs({
  options: { help: { type: 'boolean' }, seconds: { type: 'string', default: '8' } },
});
if (values.help) {
  console.log(`Usage: npm run lab [-- --seconds N]

Builds the lab inside a User-Mode Linux kernel and shows portlb working end to end:
BGP sessions, the ECMP route, a load run split per replica and backend, a scale-out to a
third replica, a replica killed under load, and a summary. Takes a few minutes.`);
  process.exit(0);
}
if (process.env.PORTLB_IN_UML !== '1') {
  console.error('scripts/lab.ts runs inside the kernel harness: use `npm run lab`');
  process.exit(2);
}
const seconds = Number(values.seconds);
const t0 = Date.now();
const stamp = () => `[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s]`;
const say = (line: string) => console.log(`${stamp()} ${line}`);
const step = (title: string) => console.log(`\n${stamp()} == ${title}`);

const services = labServices();

const lab = new Lab({ prefix: 'lab', maxReplicas: 3, backends: 3, services, say: (l) => say(`   ${l}`) });
const summary: string[] = [];
const show = (r: LoadResult) => `${describeLoad(r)}; per backend ${JSON.stringify(r.byBackend)}`;

async function perReplica(before: Record<number, Record<string, number>>, replicas: number[]) {
  const out: string[] = [];
  for (const i of replicas) {
    const now = await lab.connections(i);
    const parts = Object.entries(now).map(([id, n]) => `${id} +${n - (before[i]?.[id] ?? 0)}`);
    out.push(`lb${i} (${lbAddress(i)}): ${parts.join(', ')}`);
  }
  return out;
}

try {
  step('building the lab');
  await lab.up();

  step('starting two LB replicas (lb-agent + gobgpd each)');
  await Promise.all([lab.startReplica(1), lab.startReplica(2)]);
  say(`   sessions: lb1 ${lab.sessionState(1)}, lb2 ${lab.sessionState(2)}`);

  step('the router installs one ECMP route per VIP, a next hop per replica');
  for (const s of services) {
    const hops = await lab.waitNextHops(s.vip, 2);
    say(`   ${s.vip} (${s.name}, ${s.forwarding}): next hops ${hops.join(', ')}`);
  }
  console.log(lab.net.exec('router', 'ip', ['route', 'show', TUNNEL_VIP]).replace(/^/gm, '         '));

  step(`load run: ${seconds} s from the client (${CLIENT}), new connection per request`);
  const before = { 1: await lab.connections(1), 2: await lab.connections(2) };
  const load = lab.load({ vips: [TUNNEL_VIP, NAT_VIP], seconds, concurrency: 8 });
  const r1 = await load.done;
  say(`   ${show(r1)}`);
  for (const line of await perReplica(before, [1, 2])) say(`   ${line}`);
  summary.push(`load over 2 replicas: ${r1.ok}/${r1.requests} ok`);

  step('scale-out: a third replica joins');
  // Long-lived connections, kept busy from before the new replica starts until after the
  // router spreads flows over it.
  const scaleLoad = lab.load({ vips: [TUNNEL_VIP], seconds: 600, keepalive: 24, intervalMs: 50 });
  await scaleLoad.started;
  await new Promise((r) => setTimeout(r, 1500));
  await lab.startReplica(3);
  const hops3 = await lab.waitNextHops(TUNNEL_VIP, 3);
  say(`   ${TUNNEL_VIP}: next hops ${hops3.join(', ')}`);
  await new Promise((r) => setTimeout(r, 3000));
  scaleLoad.stop();
  const r2 = await scaleLoad.done;
  const moved = (await lab.connections(3))[`tcp:${TUNNEL_VIP}:80`] ?? 0;
  say(
    `   the router moved ${moved} of the open flows to lb3; with mh + sloppy_tcp lb3 picks the same backend`,
  );
  say(
    `   24 long-lived connections (tunnel + mh) during the scale-out: ${r2.connections?.broken ?? 0} broken, ${r2.failed} failed requests of ${r2.requests}`,
  );
  summary.push(
    `scale-out 2 -> 3 (tunnel + mh): ${r2.connections?.broken ?? 0} of 24 long-lived connections broken`,
  );

  step('a replica dies (lb-agent and gobgpd of lb1 killed) under load');
  // One load per VIP: a NAT flow moved to another replica breaks (the backend sees a new
  // source), a tunnel + mh flow must not; counted apart.
  const killLoads = [TUNNEL_VIP, NAT_VIP].map((vip) => lab.load({ vips: [vip], seconds, concurrency: 4 }));
  await Promise.all(killLoads.map((l) => l.started));
  await new Promise((r) => setTimeout(r, 2000));
  const tKill = Date.now();
  await lab.killReplica(1);
  const hops2 = await lab.waitNextHops(TUNNEL_VIP, 2);
  say(
    `   route back to ${hops2.length} next hops (${hops2.join(', ')}) ${Date.now() - tKill} ms after the kill`,
  );
  const [rt, rn] = await Promise.all(killLoads.map((l) => l.done));
  say(`   tunnel: ${show(rt!)}`);
  say(`   nat:    ${show(rn!)}`);
  summary.push(
    `replica killed under load: tunnel ${rt!.failed} of ${rt!.requests} failed, nat ${rn!.failed} of ${rn!.requests} (a moved NAT flow breaks)`,
  );

  step('summary');
  for (const line of summary) say(`   ${line}`);
  say(`   lab finished in ${((Date.now() - t0) / 1000).toFixed(0)} s; cleaning up`);
} catch (err) {
  console.error(`\nlab failed: ${(err as Error).message}`);
  for (const i of [1, 2, 3]) {
    const agent = lab.agent(i);
    if (agent)
      console.error(
        `--- last lines of the lb${i} agent log:\n${lab.net.log(agent).split('\n').slice(-15).join('\n')}`,
      );
  }
  process.exitCode = 1;
} finally {
  await lab.down();
}
