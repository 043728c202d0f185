// The agent's other kernel boundaries, on the real kernel: the VIP dummy interface over
// rtnetlink, and SNAT rules through legacy iptables (this kernel has no nftables ip
// family, so auto-detection must pick legacy iptables).
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { detectSnat, type IptablesLegacySnat } from '../../lb-agent/src/agent/snat.ts';
import { LinkAddressManager } from '../../lb-agent/src/agent/vips.ts';
import { requireKernelHarness, sh } from '../harness/kernel.ts';

requireKernelHarness();

describe('agent data plane boundaries (kernel)', () => {
  after(() => {
    sh('ip link del pltestvip 2>/dev/null || true');
  });

  test('VIP interface: created as a dummy, owned addresses synced, foreign ones kept', async () => {
    const m = new LinkAddressManager('pltestvip');
    const owns = (a: string) => a.startsWith('203.0.113.') || a.startsWith('fd00:203::');
    try {
      const first = await m.sync(['203.0.113.10', 'fd00:203::10'], owns);
      assert.deepEqual(first.added.sort(), ['203.0.113.10', 'fd00:203::10']);
      assert.match(sh('ip -d link show pltestvip'), /dummy/);
      assert.match(sh('ip link show pltestvip'), /UP/);
      assert.match(sh('ip -4 addr show dev pltestvip'), /inet 203\.0\.113\.10\/32/);
      assert.match(sh('ip -6 addr show dev pltestvip'), /inet6 fd00:203::10\/128/);
      sh('ip addr add 192.168.77.1/32 dev pltestvip'); // someone else's address
      const second = await m.sync(['203.0.113.11'], owns);
      assert.deepEqual(second.added, ['203.0.113.11']);
      assert.deepEqual(second.removed.sort(), ['203.0.113.10', 'fd00:203::10']);
      // (the kernel's own IPv6 link-local address on the link is not ours either)
      assert.deepEqual((await m.list()).filter((a) => !a.startsWith('fe80:')).sort(), [
        '192.168.77.1',
        '203.0.113.11',
      ]);
      const none = await m.sync(['203.0.113.11'], owns);
      assert.deepEqual([none.added, none.removed, none.failed], [[], [], []], 'converged: no change');
      // Deleted by hand: recreated on the next pass.
      sh('ip link del pltestvip');
      assert.deepEqual((await m.sync(['203.0.113.11'], owns)).added, ['203.0.113.11']);
    } finally {
      m.close();
    }
  });

  test('SNAT: auto-detection picks legacy iptables here; the chain is replaced as a whole', async () => {
    const snat = await detectSnat('auto');
    assert.equal(snat.kind, 'iptables-legacy');
    const legacy = snat as IptablesLegacySnat;
    try {
      assert.equal(
        await legacy.apply([
          { vip: '203.0.113.10', family: 'ipv4', port: 80, protocol: 'tcp' },
          { vip: '203.0.113.10', family: 'ipv4', port: 53, protocol: 'udp' },
        ]),
        true,
      );
      const rules = sh('iptables-legacy -t nat -S PORTLB-SNAT');
      assert.match(
        rules,
        /-m ipvs --vproto 6 --vaddr 203\.0\.113\.10(\/32)? --vport 80 --vmethod MASQ .* -j MASQUERADE/,
      );
      assert.match(rules, /--vproto 17 .* --vport 53/);
      assert.match(sh('iptables-legacy -t nat -S POSTROUTING'), /-j PORTLB-SNAT/);
      assert.equal(
        await legacy.apply([
          { vip: '203.0.113.10', family: 'ipv4', port: 80, protocol: 'tcp' },
          { vip: '203.0.113.10', family: 'ipv4', port: 53, protocol: 'udp' },
        ]),
        false,
        'unchanged: no write',
      );
      await legacy.apply([{ vip: '203.0.113.12', family: 'ipv4', port: 443, protocol: 'tcp' }]);
      const after = sh('iptables-legacy -t nat -S PORTLB-SNAT');
      assert.doesNotMatch(after, /203\.0\.113\.10/);
      assert.match(after, /203\.0\.113\.12/);
      assert.equal(
        sh('iptables-legacy -t nat -S POSTROUTING').match(/PORTLB-SNAT/g)?.length,
        1,
        'one jump, not one per apply',
      );
    } finally {
      await legacy.remove();
    }
    assert.doesNotMatch(sh('iptables-legacy -t nat -S'), /PORTLB/);
  });
});
