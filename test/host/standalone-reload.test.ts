// A standalone agent's configuration changed while it runs (what SIGHUP does; the signal
// itself is exercised in the kernel lab by test/e2e/traffic.test.ts): new pools and BGP
// peers are applied live; a change that needs a restart, or pools the services file no
// longer fits in, are refused as a whole and nothing changes. Fakes at the kernel and
// speaker, the real services file on disk.
import assert from 'node:assert/strict';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Agent } from '../../lb-agent/src/agent/agent.ts';
import { FakeNetfilter } from '../../lb-agent/src/agent/netfilter.ts';
import { FakeAddressManager } from '../../lb-agent/src/agent/vips.ts';
import { FakeBgpSpeaker } from '../../lb-agent/src/bgp/fake-speaker.ts';
import { parseAgentConfig } from '../../lb-agent/src/config/agent-config.ts';
import { ConfigError } from '../../lb-agent/src/config/validate.ts';
import { FakeIpvsClient } from '../../lb-agent/src/ipvs/fake-client.ts';
import { silentLogger } from '../../lb-agent/src/util/log.ts';
import { waitFor } from '../harness/netns.ts';

describe('standalone: the agent configuration reloaded while running', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'portlb-reload-'));
  const servicesFile = path.join(dir, 'services.yaml');
  const ipvs = new FakeIpvsClient();
  const speaker = new FakeBgpSpeaker();
  let agent: Agent;
  const config = (o: { pools?: string[][]; peers?: string[]; asn?: number } = {}) =>
    parseAgentConfig(
      {
        mode: 'standalone',
        standalone: { servicesFile },
        pools: (o.pools ?? [['default', '203.0.113.0/24']]).map(([name, ...addresses]) => ({
          name,
          addresses,
        })),
        bgp: {
          asn: o.asn ?? 65001,
          routerId: '192.0.2.11',
          peers: (o.peers ?? ['192.0.2.1']).map((address) => ({ address, asn: 65000 })),
          gracefulShutdownSeconds: 0,
        },
        http: { listen: '127.0.0.1:0' },
        sync: { minIntervalMs: 50, resyncSeconds: 30 },
      },
      'agent.yaml',
    );
  const twoPools = [
    ['default', '203.0.113.0/24'],
    ['extra', '198.51.100.0/28'],
  ];
  const writeServices = (pools: string[], services: string[]) => {
    writeFileSync(
      `${servicesFile}.tmp`,
      `pools: [${pools.join(', ')}]\nservices:\n${services.map((vip) => `  - { vip: ${vip}, port: 80, backends: [{ address: 10.1.0.5, port: 8080 }] }`).join('\n')}\n`,
    );
    renameSync(`${servicesFile}.tmp`, servicesFile);
  };
  const vips = async () =>
    (await ipvs.getTable())
      .map((s) => (s.service.key.kind === 'address' ? s.service.key.address : '?'))
      .sort();
  const refusal = async (p: Promise<unknown>) => {
    const err = await p.then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof ConfigError, `refused (${err})`);
    return err.problems.join('; ');
  };

  before(async () => {
    writeServices(['203.0.113.0/24'], ['203.0.113.10']);
    agent = new Agent(
      { config: config(), nodeName: 'edge-1', identity: 'edge-1' },
      {
        ipvs,
        addresses: new FakeAddressManager(),
        netfilter: new FakeNetfilter(),
        speaker,
        logger: silentLogger,
      },
    );
    await agent.start();
    await waitFor('programmed', async () => (await vips()).join() === '203.0.113.10');
  });
  after(async () => {
    await agent.shutdown({ graceful: false });
    rmSync(dir, { recursive: true, force: true });
  });

  test('a pool added live: a services file that uses it is accepted and programmed, no restart', async () => {
    // Before: the services file may not reach outside the agent's pools.
    writeServices(['203.0.113.0/24', '198.51.100.0/28'], ['203.0.113.10', '198.51.100.5']);
    await waitFor('refused', () => agent.source.lastError?.() !== undefined, { timeoutMs: 10_000 });
    assert.match(agent.source.lastError?.() ?? '', /"198\.51\.100\.0\/28" is not inside the agent's pools/);
    assert.deepEqual(
      await agent.reloadConfig(
        config({
          pools: twoPools,
        }),
        'agent.yaml',
      ),
      ['pools'],
    );
    // The refused file is read again at once: it fits now.
    await waitFor(
      'programmed in the new pool',
      async () => (await vips()).join() === '198.51.100.5,203.0.113.10',
      {
        timeoutMs: 10_000,
      },
    );
    assert.equal(agent.source.lastError?.(), undefined);
    assert.ok(agent.owns('198.51.100.5'));
  });

  test('pools the running services file no longer fits in: refused, nothing changes', async () => {
    const why = await refusal(
      agent.reloadConfig(config({ pools: [['default', '203.0.113.0/24']] }), 'agent.yaml'),
    );
    assert.match(why, /"198\.51\.100\.0\/28" is not inside the agent's pools/);
    assert.ok(agent.owns('198.51.100.5'), 'the running pools stay');
    assert.equal(agent.config.pools.length, 2);
  });

  test('a change that needs a restart: refused naming the option; nothing changes, not even the live part', async () => {
    const why = await refusal(
      agent.reloadConfig(
        config({
          pools: twoPools,
          peers: ['192.0.2.1', '192.0.2.2'],
          asn: 65009,
        }),
        'agent.yaml',
      ),
    );
    assert.match(why, /needs a restart to change: bgp\.asn/);
    assert.deepEqual(
      (await speaker.listPeers()).map((p) => p.address),
      ['192.0.2.1'],
    );
  });

  test('a BGP peer added live reaches the speaker', async () => {
    assert.deepEqual(
      await agent.reloadConfig(
        config({
          pools: twoPools,
          peers: ['192.0.2.1', '192.0.2.2'],
        }),
        'agent.yaml',
      ),
      ['bgp.peers'],
    );
    assert.deepEqual((await speaker.listPeers()).map((p) => p.address).sort(), ['192.0.2.1', '192.0.2.2']);
    assert.equal((await vips()).length, 2, 'the services stay');
  });
});
