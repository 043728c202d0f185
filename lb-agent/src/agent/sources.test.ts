// The standalone source: the services file read, refused when bad (the running state kept),
// bounded by the agent's pools, and healthy again once the file is fixed, also when it is
// fixed by putting back the very text that was running.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { parseAgentConfig } from '../config/agent-config.ts';
import { ConfigError } from '../config/validate.ts';
import { ManualClock } from '../util/clock.ts';
import { StandaloneSource } from './sources.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'portlb-sources-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const file = path.join(dir, 'services.yaml');
const config = parseAgentConfig(
  {
    mode: 'standalone',
    standalone: { servicesFile: file },
    pools: [{ name: 'p', addresses: ['203.0.113.0/24'] }],
  },
  'test',
);
const good = `pools: [203.0.113.0/24]
services:
  - { vip: 203.0.113.10, port: 80, backends: [{ address: 10.0.0.1, port: 8080 }] }
`;
const source = () => new StandaloneSource({ file, config, nodeName: 'n1', clock: new ManualClock() });

test('a bad file is refused and the running one kept; the running text put back makes it healthy again', async () => {
  writeFileSync(file, good);
  const s = source();
  assert.equal(await s.load(), true);
  let reloads = 0;
  s.start(() => reloads++);
  try {
    writeFileSync(file, 'services: [ {vip: nope');
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(s.healthy(), false);
    assert.match(s.lastError()!, /services\.yaml/);
    assert.equal((await s.desired()).virtualServices.length, 1, 'the running state kept');
    writeFileSync(file, good);
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(s.healthy(), true, 'the same text as before the bad edit: healthy again');
    assert.equal(s.lastError(), undefined);
    assert.equal(reloads, 0, 'nothing new to apply');
  } finally {
    await s.stop();
  }
});

test("a services file cannot widen what the agent owns: its pools must lie inside the agent's", async () => {
  writeFileSync(
    file,
    good.replace('pools: [203.0.113.0/24]', 'pools: [10.0.0.0/8]').replace('203.0.113.10', '10.1.2.3'),
  );
  await assert.rejects(source().load(), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.match(
      err.problems.join('\n'),
      /"10\.0\.0\.0\/8" is not inside the agent's pools \(203\.0\.113\.0\/24\)/,
    );
    return true;
  });
});
