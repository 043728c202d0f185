// `portlb ipvs list|apply` against the real kernel: the declarative round trip, and bad
// input refused with a message naming the field and value, the kernel untouched.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type CliIo, ipvsCommand } from '../../lb-agent/src/cli/ipvs-command.ts';
import { ConfigError } from '../../lb-agent/src/config/validate.ts';
import { NetlinkIpvsClient } from '../../lb-agent/src/ipvs/netlink-client.ts';
import { ensureDummy, requireKernelHarness, sh } from '../harness/kernel.ts';

requireKernelHarness();

const repo = path.resolve(import.meta.dirname, '..', '..');
const bin = path.join(repo, 'lb-agent', 'bin', 'portlb.js');

function io(): CliIo & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return {
    stdout,
    stderr,
    out: (l) => stdout.push(l),
    err: (l) => stderr.push(l),
    openIpvs: () => NetlinkIpvsClient.open(),
  };
}

describe('portlb ipvs (kernel)', () => {
  let dir: string;
  const file = (name: string, text: string) => {
    const p = path.join(dir, name);
    writeFileSync(p, text);
    return p;
  };
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'portlb-cli-'));
    ensureDummy('plcli0', ['10.249.2.254/24']);
    sh('ipvsadm -C');
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
    sh('ipvsadm -C');
  });

  const good = `
pools: [10.250.10.0/24]
services:
  - vip: 10.250.10.1
    port: 80
    scheduler: mh
    schedulerFlags: [mh-port]
    backends:
      - { address: 10.249.2.1, port: 8080 }
      - { address: 10.249.2.2, port: 8080, weight: 2 }
  - vip: 10.250.10.2
    port: 53
    protocol: udp
    scheduler: rr
    backends: [{ address: 10.249.2.3 }]
`;

  test('apply creates what the file says, a second apply plans nothing, exit codes 0', () => {
    sh('ipvsadm -A -t 192.0.2.1:80 -s rr'); // foreign: outside the pools
    const f = file('good.yaml', good);
    const first = spawnSync(process.execPath, [bin, 'ipvs', 'apply', f], { encoding: 'utf8' });
    assert.equal(first.status, 0, first.stderr);
    assert.match(first.stdout, /^\+ service TCP 10\.250\.10\.1:80 scheduler mh \(mh-port\)$/m);
    assert.match(first.stdout, /1 services outside the pools left alone/);
    assert.match(first.stdout, /applied 5 of 5 operations/);
    const listed = sh('ipvsadm -Ln --exact');
    assert.match(listed, /TCP {2}10\.250\.10\.1:80 mh \(mh-port\)/);
    assert.match(listed, /-> 10\.249\.2\.2:8080\s+Masq\s+2/);
    assert.match(listed, /UDP {2}10\.250\.10\.2:53 rr/);
    assert.match(listed, /TCP {2}192\.0\.2\.1:80 rr/);
    const second = spawnSync(process.execPath, [bin, 'ipvs', 'apply', f], { encoding: 'utf8' });
    assert.equal(second.status, 0, second.stderr);
    assert.match(second.stdout, /^plan: 0 operations/m);
  });

  test('removing a service from the file deletes it; --dry-run only prints', async () => {
    const smaller = file('smaller.yaml', good.replace(/ {2}- vip: 10\.250\.10\.2[\s\S]*$/, ''));
    const before = sh('ipvsadm -Ln --exact');
    const dry = io();
    assert.equal(await ipvsCommand(['apply', smaller, '--dry-run'], dry), 0);
    assert.deepEqual(
      dry.stdout.filter((l) => l.startsWith('-')),
      ['- service UDP 10.250.10.2:53'],
    );
    assert.equal(sh('ipvsadm -Ln --exact'), before);
    const real = io();
    assert.equal(await ipvsCommand(['apply', smaller], real), 0);
    assert.doesNotMatch(sh('ipvsadm -Ln --exact'), /10\.250\.10\.2:53/);
    assert.match(sh('ipvsadm -Ln --exact'), /192\.0\.2\.1:80/);
  });

  test('list --json is the table in our own types', async () => {
    const out = io();
    assert.equal(await ipvsCommand(['list', '--json'], out), 0);
    const table = JSON.parse(out.stdout.join('\n')) as { service: { key: { address?: string } } }[];
    assert.ok(table.some((s) => s.service.key.address === '10.250.10.1'));
  });

  const badFiles: [string, string, RegExp][] = [
    [
      'invalid address',
      'pools: [10.250.10.0/24]\nservices: [{ vip: 10.250.10.999, port: 80 }]',
      /services\[0\]\.vip: is not an IP address \(got "10\.250\.10\.999"\)/,
    ],
    [
      'port 70000',
      'pools: [10.250.10.0/24]\nservices: [{ vip: 10.250.10.3, port: 70000 }]',
      /services\[0\]\.port: must be a port from 1 to 65535 \(got 70000\)/,
    ],
    [
      'unknown scheduler',
      'pools: [10.250.10.0/24]\nservices: [{ vip: 10.250.10.3, port: 80, scheduler: best }]',
      /services\[0\]\.scheduler: must be a scheduler: .* \(got "best"\)/,
    ],
    [
      'duplicate service',
      'pools: [10.250.10.0/24]\nservices: [{ vip: 10.250.10.3, port: 80 }, { vip: 10.250.10.3, port: 80 }]',
      /services\[1\]: duplicate service tcp:10\.250\.10\.3:80 \(also services\[0\]\)/,
    ],
    [
      'malformed file',
      'pools: [10.250.10.0/24\nservices: {',
      /CONFIG_SYNTAX|Flow sequence|Missing|Unexpected/,
    ],
  ];

  for (const [name, text, message] of badFiles) {
    test(`bad input (${name}): named in the error, kernel untouched`, async () => {
      const before = sh('ipvsadm -Ln --exact');
      const f = file(`${name.replace(/\s/g, '-')}.yaml`, text);
      let opened = false;
      const out = {
        ...io(),
        openIpvs: () => {
          opened = true;
          return NetlinkIpvsClient.open();
        },
      };
      await assert.rejects(ipvsCommand(['apply', f], out), (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.match(`${err.code} ${err.message}`, message);
        return true;
      });
      assert.equal(opened, false, 'the kernel must not even be opened');
      assert.equal(sh('ipvsadm -Ln --exact'), before);
    });
  }

  test('the command exits 2 with the message on stderr for bad input', () => {
    const f = file('bad-port.yaml', badFiles[1]![1]);
    const r = spawnSync(process.execPath, [bin, 'ipvs', 'apply', f], { encoding: 'utf8' });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /nothing was applied/);
    assert.match(r.stderr, /services\[0\]\.port: must be a port from 1 to 65535 \(got 70000\)/);
  });
});
