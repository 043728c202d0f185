// The nftables SNAT backend on this host's kernel (which has the nftables ip family), in
// a network namespace of the test's own: the table is created, replaced as a whole and
// removed, and nothing else in the ruleset is touched.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { nftScript } from '../../lb-agent/src/agent/snat.ts';
import { NetnsLab } from '../harness/netns.ts';

describe('SNAT through nftables (host kernel, own namespace)', () => {
  const lab = new NetnsLab(`pln${process.pid % 10000}`);
  before(() => {
    lab.addNamespace('n');
    lab.exec('n', 'nft', ['add', 'table', 'inet', 'someone_else']);
  });
  after(() => lab.cleanup());

  const apply = (rules: Parameters<typeof nftScript>[0]) =>
    lab.exec('n', 'nft', ['-f', '-'], nftScript(rules));

  test('rules match the conntrack original destination and masquerade; replaced atomically', () => {
    apply([
      { vip: '203.0.113.10', family: 'ipv4', port: 80, protocol: 'tcp' },
      { vip: 'fd00:203::10', family: 'ipv6', port: 443, protocol: 'tcp' },
    ]);
    const v4 = lab.exec('n', 'nft', ['list', 'table', 'ip', 'portlb']);
    assert.match(v4, /type nat hook postrouting priority srcnat/);
    assert.match(v4, /ct original ip daddr 203\.0\.113\.10 ct original proto-dst 80 masquerade/);
    assert.match(
      lab.exec('n', 'nft', ['list', 'table', 'ip6', 'portlb']),
      /ct original ip6 daddr fd00:203::10 ct original proto-dst 443 masquerade/,
    );
    apply([{ vip: '203.0.113.11', family: 'ipv4', port: 53, protocol: 'udp' }]);
    const after = lab.exec('n', 'nft', ['list', 'table', 'ip', 'portlb']);
    assert.doesNotMatch(after, /203\.0\.113\.10/);
    assert.match(
      after,
      /meta l4proto udp ct original ip daddr 203\.0\.113\.11 ct original proto-dst 53 masquerade/,
    );
    assert.match(
      lab.exec('n', 'nft', ['list', 'ruleset']),
      /table inet someone_else/,
      'other tables untouched',
    );
  });
});
