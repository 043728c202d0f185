import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError, parseYamlText } from '../config/validate.ts';
import { fileOwnership, parseServicesFile } from './services-file.ts';

const parse = (yaml: string) => parseServicesFile(parseYamlText(yaml, 'services.yaml'), 'services.yaml');

function problems(yaml: string): string[] {
  try {
    parse(yaml);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems;
  }
  assert.fail('expected the file to be rejected');
}

describe('services file', () => {
  test('a full file becomes normalized service specs with defaults applied', () => {
    const f = parse(`
pools: [10.96.0.0/24, "fd00:96::/120"]
fwmarks: 1000-1999
defaults: { scheduler: wrr, forwarding: nat }
services:
  - name: web
    vip: 10.96.0.10
    port: 80
    scheduler: mh
    schedulerFlags: [mh-port, mh-fallback]
    persistence: { timeout: 300, netmask: 255.255.255.0 }
    backends:
      - { address: 10.0.1.1, port: 8080, weight: 2 }
      - { address: 10.0.1.2 }
  - vip: "FD00:96::0010"
    port: 443
    protocol: sctp
    forwarding: tunnel
    backends: [{ address: "fd00:1::1", tunnelType: gue, tunnelPort: 6080 }]
  - fwmark: 1001
    backends: [{ address: 10.0.1.3, port: 0, forwarding: dr }]
`);
    assert.equal(f.services.length, 3);
    const [web, v6, fw] = f.services;
    assert.deepEqual(web?.service, {
      key: { kind: 'address', family: 'ipv4', protocol: 'tcp', address: '10.96.0.10', port: 80 },
      scheduler: 'mh',
      schedulerFlags: ['flag-1', 'flag-2'],
      onePacket: false,
      persistence: { timeout: 300, prefix: 24 },
      persistenceEngine: undefined,
    });
    assert.deepEqual(
      web?.destinations.map((d) => [d.address, d.port, d.weight, d.forward]),
      [
        ['10.0.1.1', 8080, 2, 'nat'],
        ['10.0.1.2', 80, 1, 'nat'],
      ],
    );
    assert.equal(v6?.service.key.kind === 'address' && v6.service.key.address, 'fd00:96::10');
    assert.equal(v6?.service.scheduler, 'wrr');
    assert.deepEqual(v6?.destinations[0], {
      family: 'ipv6',
      address: 'fd00:1::1',
      port: 443,
      forward: 'tunnel',
      weight: 1,
      upperThreshold: 0,
      lowerThreshold: 0,
      tunnelType: 'gue',
      tunnelPort: 6080,
    });
    assert.equal(fw?.service.key.kind, 'fwmark');
    const owns = fileOwnership(f);
    assert.ok(owns({ kind: 'address', family: 'ipv4', protocol: 'udp', address: '10.96.0.200', port: 1 }));
    assert.ok(!owns({ kind: 'address', family: 'ipv4', protocol: 'tcp', address: '10.96.1.1', port: 80 }));
    assert.ok(owns({ kind: 'fwmark', family: 'ipv4', fwmark: 1999 }));
    assert.ok(!owns({ kind: 'fwmark', family: 'ipv4', fwmark: 2000 }));
    assert.ok(Object.isFrozen(f) && Object.isFrozen(f.services));
  });

  test('each bad field is named with its value', () => {
    const p = problems(`
pools: [10.96.0.0/24]
services:
  - { vip: 10.96.0.300, port: 80 }
  - { vip: 10.96.0.1, port: 70000 }
  - { vip: 10.96.0.2, port: 80, scheduler: fastest }
  - { vip: 10.96.0.3, port: 80, protocol: icmp }
  - { vip: 10.96.0.4, port: 80, colour: blue }
  - { vip: 10.96.0.5, port: 80, backends: [{ address: 10.0.0.1, weight: -1 }] }
`);
    assert.deepEqual(p, [
      'services[0].vip: is not an IP address (got "10.96.0.300")',
      'services[1].port: must be a port from 1 to 65535 (got 70000)',
      `services[2].scheduler: must be a scheduler: rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos (got "fastest")`,
      'services[3].protocol: must be one of tcp, udp, sctp (got "icmp")',
      'services[4].colour: unknown option',
      'services[5].backends[0].weight: must be an integer from 0 to 65535 (got -1)',
    ]);
  });

  test('cross-field rules: pools, duplicates, families, flags, thresholds', () => {
    const p = problems(`
pools: [10.96.0.0/24, 10.96.0.128/25]
services:
  - { vip: 10.97.0.1, port: 80 }
  - { vip: 10.96.0.1, port: 80 }
  - { vip: 10.96.0.1, port: 80 }
  - { vip: 10.96.0.2, port: 80, scheduler: rr, schedulerFlags: [mh-port] }
  - { vip: 10.96.0.3, port: 80, backends: [{ address: "fd00::1" }] }
  - { vip: 10.96.0.4, port: 80, backends: [{ address: 10.0.0.1, upperThreshold: 5, lowerThreshold: 9 }] }
  - { vip: 10.96.0.5, port: 80, backends: [{ address: 10.0.0.1 }, { address: 10.0.0.1 }] }
  - { vip: 10.96.0.6, port: 80, persistence: { timeout: 10, netmask: 255.0.255.0 } }
  - { vip: 10.96.0.7 }
`);
    assert.deepEqual(p, [
      'pools[1]: "10.96.0.128/25" overlaps "10.96.0.0/24"',
      'services[0].vip: 10.97.0.1 is outside every pool (10.96.0.0/24, 10.96.0.128/25)',
      'services[2]: duplicate service tcp:10.96.0.1:80 (also services[1])',
      'services[3].schedulerFlags[0]: mh-port needs scheduler mh (got rr)',
      'services[4].backends[0].address: fd00::1 is ipv6 but the service is ipv4; mixing families needs forwarding: tunnel',
      'services[5].backends[0].lowerThreshold: 9 is above upperThreshold 5',
      'services[6].backends[1]: duplicate backend 10.0.0.1:80',
      'services[7].persistence.netmask: must be a prefix length or a contiguous IPv4 netmask (got "255.0.255.0")',
      'services[8]: needs vip and port (or fwmark)',
    ]);
  });

  test('pools are required and syntax errors carry a position', () => {
    assert.match(problems('services: []\n')[0]!, /^pools: /);
    assert.throws(
      () => parse('pools: [10.0.0.0/8\nservices: ['),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.equal(err.code, 'CONFIG_SYNTAX');
        assert.match(err.message, /line \d+/);
        return true;
      },
    );
  });
});
