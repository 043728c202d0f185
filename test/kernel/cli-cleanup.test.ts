// `portlb cleanup` against the real kernel: exactly what portlb created goes (its IPVS
// services, its VIP interface, its iptables chains and the jumps to them); a foreign IPVS
// service, a foreign chain and its jump stay. --dry-run changes nothing.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ensureDummy, requireKernelHarness, sh } from '../harness/kernel.ts';

requireKernelHarness();

const repo = path.resolve(import.meta.dirname, '..', '..');
const bin = path.join(repo, 'lb-agent', 'bin', 'portlb.js');

describe('portlb cleanup (kernel)', () => {
  let dir: string;
  let config: string;
  const portlb = (...args: string[]) =>
    spawnSync(process.execPath, [bin, 'cleanup', ...args], { encoding: 'utf8' });
  const services = () => sh('ipvsadm -Ln');

  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'portlb-cleanup-'));
    config = path.join(dir, 'agent.yaml');
    writeFileSync(
      config,
      'mode: standalone\nstandalone: { servicesFile: /nonexistent }\npools: [{ name: a, addresses: [10.250.20.0/24, 10.250.21.0/24] }]\nipvs: { vipInterface: plclean0 }\n',
    );
    sh('ipvsadm -C');
    ensureDummy('plcl0', ['10.249.3.254/24']);
    // A VIP as 0.1.0 left it (an address on the interface) and one as now (a local route of
    // protocol 240 through it), outside the pools: both portlb's.
    ensureDummy('plclean0', ['10.250.20.1/32']);
    sh('ip route add local 10.250.99.2 dev plclean0 table local proto 240');
    for (const vip of ['10.250.20.1', '10.250.21.5', '10.250.99.1', '10.250.99.2']) {
      sh(`ipvsadm -A -t ${vip}:80 -s rr && ipvsadm -a -t ${vip}:80 -r 10.249.3.1:8080 -m`);
    }
    sh('iptables-legacy -w -t nat -N PORTLB-SNAT');
    sh('iptables-legacy -w -t nat -A POSTROUTING -m comment --comment "portlb SNAT" -j PORTLB-SNAT');
    sh('iptables-legacy -w -t nat -A PORTLB-SNAT -d 10.250.20.1/32 -j MASQUERADE');
    sh('iptables-legacy -w -t nat -N FOREIGN');
    sh('iptables-legacy -w -t nat -A POSTROUTING -j FOREIGN');
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
    sh('ipvsadm -C; ip link del plclean0 2>/dev/null; ip link del plcl0 2>/dev/null; true');
    sh('iptables-legacy -w -t nat -F; iptables-legacy -w -t nat -X; true');
  });

  test('--dry-run lists what would go and changes nothing', () => {
    const r = portlb('--config', config, '--dry-run');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /would remove IPVS service tcp:10\.250\.20\.1:80/);
    assert.match(r.stdout, /would remove IPVS service tcp:10\.250\.21\.5:80/);
    assert.match(r.stdout, /would remove IPVS service tcp:10\.250\.99\.2:80/);
    assert.match(r.stdout, /would remove interface plclean0 \(2 VIPs\)/);
    assert.match(r.stdout, /would remove iptables-legacy chains PORTLB-\* in table nat/);
    assert.doesNotMatch(r.stdout, /10\.250\.99\.1\b/);
    assert.match(services(), /10\.250\.20\.1:80/);
    assert.match(sh('ip link show plclean0'), /plclean0/);
  });

  test('removes exactly what portlb created', () => {
    const r = portlb('--config', config);
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    const table = services();
    assert.doesNotMatch(table, /10\.250\.20\.1:80|10\.250\.21\.5:80|10\.250\.99\.2:80/);
    assert.match(table, /10\.250\.99\.1:80/, 'a foreign IPVS service stays');
    assert.equal(spawnSync('ip', ['link', 'show', 'plclean0']).status, 1, 'the VIP interface is gone');
    const nat = sh('iptables-legacy -w -t nat -S');
    assert.doesNotMatch(nat, /PORTLB/);
    assert.match(nat, /-N FOREIGN/);
    assert.match(nat, /-A POSTROUTING -j FOREIGN/);
    const again = portlb('--config', config);
    assert.equal(again.status, 0);
    assert.match(again.stdout, /no IPVS service or interface of portlb here/);
  });
});
