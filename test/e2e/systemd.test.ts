// A standalone host, as docs/standalone.md installs it: portlb-speaker.service,
// portlb-bfd.service and portlb-agent.service run with their units' users, groups, capabilities, no_new_privs and
// umask (test/harness/systemd.ts emulates systemd for those directives), in the lab kernel
// with a BIRD router and real traffic. The agent reaches gobgpd's socket through the group
// only; gobgpd binds 179 through its ambient capability only; a killed gobgpd is restarted
// (Restart=always) and re-provisioned by the agent.
import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { birdc } from '../harness/bgp.ts';
import { Lab, labServices, lbAddress, NAT_VIP as NAT } from '../harness/lab.ts';
import { waitFor } from '../harness/netns.ts';
import { capMask, processSecurity } from '../harness/pod.ts';
import { notEmulated, parseUnit, UnitRunner, verifyUnits } from '../harness/systemd.ts';

const repo = path.resolve(import.meta.dirname, '..', '..');
const units = path.join(repo, 'deploy', 'systemd');
const PORTLB_ID = 65532;

describe('e2e: standalone host under the shipped systemd units', () => {
  if (process.env.PORTLB_IN_UML !== '1')
    throw new Error('e2e tests run inside the kernel harness (npm test does)');
  const lab = new Lab({
    prefix: 'e2s',
    maxReplicas: 1,
    backends: 2,
    services: labServices([{ n: 1 }, { n: 2 }]),
    // The router ties the session to BFD (docs/routers.md).
    bfd: { intervalMs: 300, multiplier: 3, deadManSeconds: 2 },
  });
  const speakerUnit = parseUnit(path.join(units, 'portlb-speaker.service'));
  const bfdUnit = parseUnit(path.join(units, 'portlb-bfd.service'));
  const agentUnit = parseUnit(path.join(units, 'portlb-agent.service'));
  let speaker: UnitRunner;
  let bfd: UnitRunner;
  let agent: UnitRunner;

  before(async () => {
    await lab.up();
    const config = lab.agentConfig(1);
    writeFileSync(
      config,
      readFileSync(config, 'utf8')
        .replace(/speakerSocket: "?unix:\/\/[^\n"]+"?/, 'speakerSocket: unix:///run/portlb/gobgp.sock')
        .replaceAll(lab.bfdDir(1), '/run/portlb-bfd'),
    );
    const ids = { portlb: PORTLB_ID, root: 0 };
    speaker = new UnitRunner(lab.net, speakerUnit, { ns: 'lb1', ids });
    bfd = new UnitRunner(lab.net, bfdUnit, { ns: 'lb1', ids, replace: [['/opt/portlb', repo]] });
    agent = new UnitRunner(lab.net, agentUnit, {
      ns: 'lb1',
      ids,
      replace: [
        ['/opt/portlb/node_modules/.bin/node', process.execPath],
        ['/opt/portlb', repo],
        ['/etc/portlb/config.yaml', config],
      ],
    });
    speaker.start();
    await waitFor('the speaker socket', () => {
      try {
        return statSync('/run/portlb/gobgp.sock').isSocket();
      } catch {
        return false;
      }
    });
    bfd.start();
    await waitFor('the BFD control socket', () => {
      try {
        return statSync('/run/portlb-bfd/bird-bfd.ctl').isSocket();
      } catch {
        return false;
      }
    });
    agent.start();
    await lab.waitNextHops(NAT, 1, 120_000).catch((err) => {
      throw new Error(
        `${(err as Error).message}\n--- agent ---\n${agent.log().slice(-3000)}\n--- speaker ---\n${speaker.log().slice(-2000)}`,
      );
    });
  });
  after(async () => {
    await agent?.stop();
    await speaker?.stop();
    await bfd?.stop();
    await lab.down();
  });

  test('systemd accepts the units; what this harness emulates and what it does not is said', () => {
    assert.deepEqual(verifyUnits([speakerUnit.file, bfdUnit.file, agentUnit.file]), []);
    console.log(
      `# not emulated (systemd only): speaker ${notEmulated(speakerUnit).join(' ')}; bfd ${notEmulated(bfdUnit).join(' ')}; agent ${notEmulated(agentUnit).join(' ')}`,
    );
  });

  test('each service runs with exactly its unit’s uid, groups, capabilities and no_new_privs', async () => {
    const s = processSecurity(speaker.pid()!);
    assert.equal(readFileSync(`/proc/${speaker.pid()}/comm`, 'utf8').trim(), 'gobgpd');
    assert.equal(s.uid, PORTLB_ID);
    assert.equal(s.gid, PORTLB_ID);
    assert.equal(s.capBnd, capMask(['NET_BIND_SERVICE']));
    assert.equal(s.capEff, capMask(['NET_BIND_SERVICE']), 'binds 179 through its ambient capability');
    assert.equal(s.noNewPrivs, true);
    const a = processSecurity(agent.pid()!);
    assert.equal(a.uid, 0);
    assert.ok(a.groups.includes(PORTLB_ID), 'in the speaker’s group');
    assert.equal(a.capBnd, capMask(['NET_ADMIN', 'NET_RAW']));
    assert.equal(a.capEff, capMask(['NET_ADMIN', 'NET_RAW']), 'no CAP_DAC_OVERRIDE');
    assert.equal(a.noNewPrivs, true);
    await waitFor('bird running', () => readFileSync(`/proc/${bfd.pid()}/comm`, 'utf8').trim() === 'bird');
    const b = processSecurity(bfd.pid()!);
    assert.equal(b.uid, PORTLB_ID);
    assert.equal(b.capBnd, capMask(['NET_ADMIN']));
    assert.equal(b.capEff, capMask(['NET_ADMIN']), 'SO_PRIORITY for BFD through its ambient capability');
    assert.equal(b.noNewPrivs, true);
    const sock = statSync('/run/portlb/gobgp.sock');
    assert.equal(sock.mode & 0o777, 0o770);
    assert.equal(sock.gid, PORTLB_ID);
    console.log(
      `# measured: speaker uid ${s.uid} CapEff 0x${s.capEff.toString(16)} NNP ${s.noNewPrivs}; agent uid ${a.uid} groups [${a.groups}] CapEff 0x${a.capEff.toString(16)} NNP ${a.noNewPrivs}; socket 0${(sock.mode & 0o777).toString(8)}`,
    );
  });

  test('the agent provisions the BFD unit: the router has the session up, the agent reports it', async () => {
    await waitFor(
      'BFD up at the router',
      () => /10\.0\.0\.11\s+\S+\s+Up/.test(birdc(lab.net, 'router', lab.bird, 'show bfd sessions')),
      { timeoutMs: 60_000, intervalMs: 500 },
    ).catch((err) => {
      throw new Error(
        `${(err as Error).message}\n--- agent ---\n${agent.log().slice(-3000)}\n--- bfd ---\n${bfd.log().slice(-2000)}`,
      );
    });
    const status = (await (await fetch(`http://${lbAddress(1)}:9180/status`)).json()) as {
      bfd: { sessions: { peer: string; state: string }[] };
    };
    assert.deepEqual(status.bfd.sessions, [{ peer: '10.0.0.1', state: 'up' }]);
    assert.match(readFileSync('/run/portlb-bfd/bird-bfd.conf', 'utf8'), /neighbor 10\.0\.0\.1;/);
  });

  test('traffic through the VIP; a killed gobgpd is restarted and re-provisioned', async () => {
    const r = await lab.load({ vips: [NAT], seconds: 3, concurrency: 2 }).done;
    assert.equal(r.failed, 0);
    assert.ok(r.ok > 0);
    process.kill(speaker.pid()!, 'SIGKILL');
    const t0 = Date.now();
    await waitFor('restarted', () => speaker.starts === 2, { timeoutMs: 10_000 });
    await lab.waitNextHops(NAT, 0, 30_000).catch(() => undefined);
    await lab.waitNextHops(NAT, 1, 60_000);
    console.log(
      `# measured: gobgpd killed -> restarted by its unit -> VIP back at the router in ${Date.now() - t0} ms`,
    );
    const again = await lab.load({ vips: [NAT], seconds: 2, concurrency: 2 }).done;
    assert.equal(again.failed, 0);
    assert.equal(lbAddress(1), lab.nextHops(NAT)[0]);
  });
});
