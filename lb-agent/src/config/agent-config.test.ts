import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseAgentConfig } from './agent-config.ts';
import { ConfigError } from './validate.ts';

function problems(data: unknown): string[] {
  try {
    parseAgentConfig(data, 'config.yaml');
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems;
  }
  assert.fail('expected the configuration to be rejected');
}

test('agent config: defaults filled in, the result frozen', () => {
  const c = parseAgentConfig({ pools: [{ name: 'default', addresses: ['203.0.113.0/24'] }] }, 'config.yaml');
  assert.equal(c.mode, 'kubernetes');
  assert.equal(c.kubernetes.loadBalancerClass, 'portlb.io/portlb');
  assert.equal(c.kubernetes.leaderElection.leaseDurationSeconds, 15);
  assert.deepEqual(c.defaults, { scheduler: 'mh', forwarding: 'nat', drainTimeoutSeconds: 60 });
  assert.equal(c.pools[0]?.blocks[0]?.text, '203.0.113.0/24');
  assert.ok(
    Object.isFrozen(c) && Object.isFrozen(c.pools[0]) && Object.isFrozen(c.kubernetes.leaderElection),
  );
});

test('agent config: every bad option is named with its value', () => {
  assert.deepEqual(
    problems({
      pools: [{ name: 'a', addresses: ['10.0.0.1/24'] }],
      defaults: { scheduler: 'fastest' },
      bgp: {
        asn: 65001,
        peers: [{ address: '10.0.0.1', asn: 65000, holdTime: 2 }],
        speakerSocket: 'tcp://0.0.0.0:50051',
      },
      sync: { minIntervalMs: -1 },
      colour: 'blue',
    }),
    [
      'defaults.scheduler: must be a scheduler: rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos (got "fastest")',
      'bgp.peers[0].holdTime: must be 0 or from 3 to 65535 seconds (got 2)',
      'sync.minIntervalMs: must be an integer from 0 to 60000 (got -1)',
      'colour: unknown option',
    ],
  );
  assert.deepEqual(
    problems({
      pools: [
        { name: 'a', addresses: ['10.0.0.1/24'] },
        { name: 'b', addresses: ['10.0.0.0/16'] },
        { name: 'b', addresses: ['fd00::/64'] },
      ],
      kubernetes: {
        leaderElection: { leaseDurationSeconds: 10, renewDeadlineSeconds: 10, retryPeriodSeconds: 12 },
      },
      bgp: {
        asn: 65001,
        speakerSocket: 'tcp://0.0.0.0:50051',
        peers: [
          {
            address: '10.0.0.1',
            asn: 65000,
            holdTime: 9,
            keepaliveInterval: 9,
            passwordFile: '/nonexistent/secret',
          },
        ],
      },
      http: { listen: 'everywhere' },
    }),
    [
      'pools[0].addresses[0]: "10.0.0.1/24" has host bits set or a bad prefix length (write the network address, e.g. 10.0.0.0/24)',
      'pools[2].name: duplicate pool name "b"',
      'kubernetes.leaderElection.renewDeadlineSeconds: must be below leaseDurationSeconds (10) (got 10)',
      'kubernetes.leaderElection.retryPeriodSeconds: must be below renewDeadlineSeconds (10) (got 12)',
      'bgp.peers[0].keepaliveInterval: must be below holdTime 9 (got 9)',
      'bgp.peers[0].passwordFile: cannot read "/nonexistent/secret": ENOENT',
      'bgp.speakerSocket: must be a unix socket (unix:///path): gobgpd\'s API is never put on a network port (got "tcp://0.0.0.0:50051")',
      'http.listen: must be host:port, e.g. node:9180 or 127.0.0.1:9180 (got "everywhere")',
    ],
  );
  // The SNAT mark: one bit, 0x1000 unless told (a YAML 0x2000 is the number 8192).
  assert.equal(parseAgentConfig({}, 'test').ipvs.snatMark, 0x1000);
  assert.equal(parseAgentConfig({ ipvs: { snatMark: 0x80000000 } }, 'test').ipvs.snatMark, 0x80000000);
  for (const bad of [0x3000, 0, -4, 2 ** 32])
    assert.deepEqual(problems({ ipvs: { snatMark: bad } }), [
      `ipvs.snatMark: must be one bit of a packet mark (a power of two up to 0x80000000), e.g. 0x1000 (got ${bad})`,
    ]);
  assert.match(
    problems({ ipvs: { snatMark: '0x1000' } })[0]!,
    /^ipvs\.snatMark: must be one bit of a packet mark, e\.g\. 0x1000/,
  );
  assert.match(problems({ mode: 'standalone' })[0]!, /^standalone: required with mode: standalone/);
  assert.match(problems({ kubernetes: { poolObjects: false } })[0]!, /^pools: at least one pool/);
  // Pools may all come from PortlbAddressPool objects.
  assert.deepEqual(parseAgentConfig({}, 'test').pools, []);
});

test('agent config: bfd defaults, per-peer opt-out, bfd on a peer needs the section', () => {
  const base = { pools: [{ name: 'default', addresses: ['203.0.113.0/24'] }] };
  const c = parseAgentConfig(
    {
      ...base,
      bgp: {
        asn: 65001,
        peers: [
          { address: '10.0.0.1', asn: 65000 },
          { address: '10.0.0.9', asn: 65000, bfd: false },
        ],
      },
      bfd: {},
    },
    'config.yaml',
  );
  assert.deepEqual(c.bfd, {
    socket: '/run/portlb/bird-bfd.ctl',
    configFile: '/run/portlb/bird-bfd.conf',
    intervalMs: 300,
    multiplier: 3,
    deadManSeconds: 2,
    maxPassSeconds: 30,
  });
  assert.deepEqual(
    problems({ ...base, bgp: { asn: 65001, peers: [{ address: '10.0.0.1', asn: 65000, bfd: true }] } }),
    ['bgp.peers[0].bfd: true needs the bfd section (bfd: {} for the defaults) and the bfd container'],
  );
  assert.deepEqual(problems({ ...base, bfd: { intervalMs: 5, multiplier: 1 } }), [
    'bfd.intervalMs: must be a number of milliseconds from 10 to 10000 (got 5)',
    'bfd.multiplier: must be an integer from 2 to 255 (got 1)',
  ]);
});

test('agent config: the shipped standalone example is valid', async () => {
  const { readFileSync } = await import('node:fs');
  const { parse } = await import('yaml');
  const file = new URL('../../../deploy/examples/standalone-config.yaml', import.meta.url);
  const c = parseAgentConfig(parse(readFileSync(file, 'utf8')), 'standalone-config.yaml');
  assert.equal(c.mode, 'standalone');
  assert.equal(c.bfd?.socket, '/run/portlb-bfd/bird-bfd.ctl');
});
