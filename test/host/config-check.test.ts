// `portlb config check`, as an operator runs it before a rollout: the shipped examples
// pass; a bad field is named with its value and the exit code is 2; standard input works.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';

const repo = path.resolve(import.meta.dirname, '..', '..');
const portlb = (args: string[], input?: string) =>
  spawnSync(process.execPath, [path.join(repo, 'lb-agent', 'bin', 'portlb.js'), 'config', ...args], {
    encoding: 'utf8',
    input,
  });

describe('portlb config check', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'plcc-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('the shipped examples are valid', () => {
    const agent = portlb(['check', path.join(repo, 'deploy', 'examples', 'standalone-config.yaml')]);
    assert.equal(agent.status, 0, agent.stderr);
    assert.match(
      agent.stdout,
      /a valid agent configuration: mode standalone, 1 pool\(s\), 1 BGP peer\(s\), BFD/,
    );
    const services = portlb([
      'check',
      '--services',
      path.join(repo, 'deploy', 'examples', 'ipvs-services.yaml'),
    ]);
    assert.equal(services.status, 0, services.stderr);
    assert.match(services.stdout, /a valid services file: \d+ service\(s\)/);
  });

  test('a bad field is named with its value; nothing else is said to be valid; exit 2', () => {
    const file = path.join(dir, 'bad.yaml');
    writeFileSync(
      file,
      'mode: standalone\nstandalone: { servicesFile: /x }\npools: [{ name: a, addresses: [203.0.113.0/24] }]\nsync: { resyncSeconds: 0 }\n',
    );
    const r = portlb(['check', file]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /sync\.resyncSeconds: .*\(got 0\)/);
    assert.equal(r.stdout, '');
  });

  test('a services file from standard input, its health check checked; --config bounds its pools', () => {
    const text =
      'pools: [198.51.100.0/24]\nservices:\n  - { vip: 198.51.100.1, port: 80, healthCheck: { type: http, rise: 0 }, backends: [{ address: 10.0.0.1 }] }\n';
    const bad = portlb(['check', '--services', '-'], text);
    assert.equal(bad.status, 2);
    assert.match(
      bad.stderr,
      /<stdin>: services\[0\]\.healthCheck\.rise: must be an integer from 1 to 100 \(got 0\)/,
    );
    const good = text.replace('rise: 0', 'rise: 2');
    const ok = portlb(['check', '--services', '-'], good);
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /1 service\(s\), 1 pool\(s\), 1 with a health check/);
    const outside = portlb(
      [
        'check',
        '--services',
        '--config',
        path.join(repo, 'deploy', 'examples', 'standalone-config.yaml'),
        '-',
      ],
      good,
    );
    assert.equal(outside.status, 2);
    assert.match(outside.stderr, /pools: "198\.51\.100\.0\/24" is not inside the agent's pools/);
  });

  test('usage errors say what to do', () => {
    assert.equal(portlb(['check']).status, 2);
    assert.match(portlb(['check']).stderr, /needs a FILE/);
    assert.equal(portlb(['check', '--help']).status, 0);
    assert.match(portlb(['check', '--help']).stdout, /Usage: portlb config check/);
  });
});
