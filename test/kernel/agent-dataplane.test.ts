// The agent's other kernel boundaries, on the real kernel: the VIPs' local routes over
// rtnetlink, and SNAT rules through legacy iptables (this kernel has no nftables ip
// family, so auto-detection must pick legacy iptables).
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import {
  detectNetfilter,
  type NetfilterRules,
  netfilterCleaners,
  type PortRule,
} from '../../lb-agent/src/agent/netfilter.ts';
import { LocalRouteManager } from '../../lb-agent/src/agent/vips.ts';
import { RtNetlink } from '../../lb-agent/src/netlink/rtnetlink.ts';
import { requireKernelHarness, sh } from '../harness/kernel.ts';

requireKernelHarness();

describe('agent data plane boundaries (kernel)', () => {
  after(() => {
    sh('ip link del pltestvip 2>/dev/null || true');
  });

  test("VIPs: local routes of portlb through a dummy interface, synced (portlb's outside the pools too), foreign routes and addresses kept", async () => {
    const m = new LocalRouteManager('pltestvip');
    const owns = (a: string) => a.startsWith('203.0.113.') || a.startsWith('fd00:203::');
    const routes = (family: '-4' | '-6') => sh(`ip ${family} route show table local proto 240`);
    try {
      const first = await m.sync(['203.0.113.10', 'fd00:203::10'], owns);
      assert.deepEqual(first.added.sort(), ['203.0.113.10', 'fd00:203::10']);
      assert.match(sh('ip -d link show pltestvip'), /dummy/);
      assert.match(sh('ip link show pltestvip'), /UP/);
      assert.match(routes('-4'), /^local 203\.0\.113\.10 dev pltestvip scope host/m);
      assert.match(routes('-6'), /^local fd00:203::10 dev pltestvip/m);
      assert.doesNotMatch(sh('ip addr show dev pltestvip'), /203\.0\.113|fd00:203/, 'no address: a route');
      // The kernel takes the VIP as its own: a local destination, for either family.
      assert.match(sh('ip -4 route get 203.0.113.10'), /^local 203\.0\.113\.10 /);
      assert.match(sh('ip -6 route get fd00:203::10'), /^local fd00:203::10 /);
      sh('ip addr add 192.168.77.1/32 dev pltestvip'); // someone else's address
      sh('ip route add local 203.0.113.50 dev pltestvip table local'); // someone else's route (proto boot)
      // portlb's, outside the pools (its pool was removed): left, the host would answer on it.
      sh('ip route add local 198.51.100.7 dev pltestvip table local proto 240');
      const second = await m.sync(['203.0.113.11'], owns);
      assert.deepEqual(second.added, ['203.0.113.11']);
      assert.deepEqual(second.removed.sort(), ['198.51.100.7', '203.0.113.10', 'fd00:203::10']);
      assert.doesNotMatch(sh('ip -4 route show table local'), /198\.51\.100\.7/, 'no longer local');
      assert.deepEqual(await m.list(), ['203.0.113.11'], 'only routes of protocol 240 are listed');
      assert.match(
        sh('ip -4 route show table local'),
        /local 203\.0\.113\.50 dev pltestvip/,
        'the foreign route stays',
      );
      assert.match(
        sh('ip -4 addr show dev pltestvip'),
        /inet 192\.168\.77\.1\/32/,
        'the foreign address stays',
      );
      const none = await m.sync(['203.0.113.11'], owns);
      assert.deepEqual(
        [none.added, none.removed, none.moved, none.failed],
        [[], [], [], []],
        'converged: no change',
      );
      // Deleted by hand: recreated on the next pass.
      sh('ip link del pltestvip');
      assert.deepEqual((await m.sync(['203.0.113.11'], owns)).added, ['203.0.113.11']);
      // An incremental pass diffs against what the last sync left, without dumping the
      // routes (10,000 at 10k services): a route removed by hand comes back at the next
      // full pass (reread), like an IPVS service deleted by hand.
      sh('ip route del local 203.0.113.11 dev pltestvip table local proto 240');
      const incremental = await m.sync(['203.0.113.11', '203.0.113.12'], owns, { reread: false });
      assert.deepEqual(incremental.added, ['203.0.113.12'], 'only the new VIP: the kernel was not read');
      const full = await m.sync(['203.0.113.11', '203.0.113.12'], owns, { reread: true });
      assert.deepEqual(full.added, ['203.0.113.11'], 'the full pass reads and restores it');
    } finally {
      m.close();
    }
  });

  test('VIPs an earlier version put on the interface as addresses: a route added first, then the address deleted; the VIP stays local throughout', async () => {
    sh('ip link del pltestvip 2>/dev/null || true');
    sh('ip link add pltestvip type dummy && ip link set pltestvip up');
    // As 0.1 left them: wanted VIPs, one no longer wanted, someone else's address.
    sh('ip addr add 203.0.113.20/32 dev pltestvip');
    sh('ip addr add 203.0.113.21/32 dev pltestvip');
    sh('ip -6 addr add fd00:203::20/128 dev pltestvip nodad');
    sh('ip addr add 192.168.77.2/32 dev pltestvip');
    const m = new LocalRouteManager('pltestvip');
    const owns = (a: string) => a.startsWith('203.0.113.') || a.startsWith('fd00:203::');
    try {
      const r = await m.sync(['203.0.113.20', 'fd00:203::20'], owns);
      assert.deepEqual(r.failed, []);
      assert.deepEqual(r.added.sort(), ['203.0.113.20', 'fd00:203::20']);
      assert.deepEqual(r.moved.sort(), ['203.0.113.20', '203.0.113.21', 'fd00:203::20']);
      const addresses = sh('ip addr show dev pltestvip');
      assert.doesNotMatch(addresses, /203\.0\.113\.2[01]|fd00:203::20/, 'the addresses are gone');
      assert.match(addresses, /192\.168\.77\.2\/32/, 'the foreign address stays');
      // The kernel's route of the deleted address went with it; portlb's stayed.
      assert.match(sh('ip -4 route get 203.0.113.20'), /^local 203\.0\.113\.20 /);
      assert.match(sh('ip -6 route get fd00:203::20'), /^local fd00:203::20 /);
      assert.doesNotMatch(
        sh('ip -4 route show table local'),
        /203\.0\.113\.21/,
        'the unwanted VIP is no longer local',
      );
      assert.deepEqual((await m.list()).sort(), ['203.0.113.20', 'fd00:203::20']);
      const again = await m.sync(['203.0.113.20', 'fd00:203::20'], owns);
      assert.deepEqual([again.added, again.removed, again.moved, again.failed], [[], [], [], []]);
    } finally {
      m.close();
    }
  });

  test('a dump that pauses shares its socket: a request and a second dump asked for meanwhile get their answers, the dump all its replies', async () => {
    const rt = new RtNetlink();
    try {
      const index = rt.ensureDummy('pltestdump');
      // 3,000 addresses: replies in many datagrams, so the dump pauses many times.
      const many = Array.from({ length: 3000 }, (_, i) => ({
        address: `203.0.${100 + (i >> 8)}.${i & 255}`,
        family: 'ipv4' as const,
        prefix: 32,
      }));
      const failed = (await rt.changeAddresses(index, many, [])).filter(Boolean);
      assert.deepEqual(failed, []);
      let pauses = 0;
      let looked: number | undefined;
      let second: Promise<string[]> | undefined;
      const first = await rt.addresses(index, async () => {
        // At its first pause: a request on the same socket (it reads the socket for its
        // answer, past the dump's next replies), and another dump (which waits its turn).
        if (pauses++ === 0) {
          looked = rt.linkIndex('pltestdump');
          second = rt.addresses(index).then((l) => l.map((a) => a.address));
        }
        await new Promise((resolve) => setImmediate(resolve));
      });
      assert.ok(pauses > 10, `${pauses} pauses`);
      assert.equal(looked, index, 'the request was answered');
      const ours = (l: string[]) => l.filter((a) => a.startsWith('203.0.')).sort();
      const expected = many.map((a) => a.address).sort();
      assert.deepEqual(
        ours(first.map((a) => a.address)),
        expected,
        'every address once: none lost to the request that read the socket meanwhile',
      );
      assert.deepEqual(ours(await second!), expected);
      // A write to the table during a paused dump: the kernel marks the dump interrupted, and
      // it fails as such (never a silently partial list); the write is answered.
      let during: Promise<unknown> | undefined;
      await assert.rejects(
        rt.addresses(index, async () => {
          during ??= rt.changeAddresses(index, [{ address: '203.0.99.1', family: 'ipv4', prefix: 32 }], []);
          await new Promise((resolve) => setImmediate(resolve));
        }),
        { code: 'NETLINK_DUMP_INTERRUPTED' },
      );
      assert.deepEqual(await during, [undefined]);
      assert.deepEqual(
        ours((await rt.addresses(index)).map((a) => a.address)),
        [...expected, '203.0.99.1'].sort(),
      );
    } finally {
      rt.deleteLink('pltestdump');
      rt.close();
    }
  });

  test('netfilter: auto-detection picks legacy iptables with ipset here; chains and sets replaced as a whole', async () => {
    const nf = await detectNetfilter('auto');
    assert.equal(nf.kind, 'iptables-legacy');
    const web: PortRule = { vip: '203.0.113.10', family: 'ipv4', port: 80, protocol: 'tcp' };
    const dns: PortRule = { vip: '203.0.113.10', family: 'ipv4', port: 53, protocol: 'udp' };
    const dsr: PortRule = { vip: '203.0.113.13', family: 'ipv4', port: 443, protocol: 'tcp' };
    try {
      assert.equal(await nf.apply({ snat: [web, dns], filter: [web, dns, dsr], notrack: [dsr] }), 'replaced');
      assert.match(
        sh('iptables-legacy -t raw -S PORTLB-NOTRACK'),
        /-m set --match-set portlb-notrack4 dst,dst .* -j CT --notrack/,
      );
      assert.match(sh('iptables-legacy -t raw -S PREROUTING'), /-j PORTLB-NOTRACK/);
      assert.match(sh('ipset list portlb-notrack4'), /203\.0\.113\.13,tcp:443/);
      // SNAT: the NAT services in a set, a mark bit on their first packet, one MASQUERADE.
      assert.match(sh('ipset list portlb-snat4'), /203\.0\.113\.10,tcp:80/);
      assert.match(sh('ipset list portlb-snat4'), /203\.0\.113\.10,udp:53/);
      assert.match(
        sh('iptables-legacy -t nat -S PORTLB-SNAT-MARK'),
        /-A PORTLB-SNAT-MARK -m set --match-set portlb-snat4 dst,dst -j MARK --set-xmark 0x1000\/0x1000/,
      );
      const rules = sh('iptables-legacy -t nat -S PORTLB-SNAT');
      assert.match(rules, /-A PORTLB-SNAT -m mark ! --mark 0x1000\/0x1000 -j RETURN/);
      assert.match(rules, /-A PORTLB-SNAT -j MARK --set-xmark 0x1000\/0x0/);
      assert.match(rules, /-A PORTLB-SNAT -m ipvs (--ipvs )?--vmethod MASQ .* -j MASQUERADE/);
      assert.match(sh('iptables-legacy -t nat -S POSTROUTING'), /-j PORTLB-SNAT/);
      assert.match(sh('iptables-legacy -t nat -S PREROUTING'), /-j PORTLB-SNAT-MARK/);
      assert.match(
        sh('iptables-legacy -t filter -S INPUT'),
        /-A INPUT -m comment --comment "portlb VIP filter" -j PORTLB-FILTER/,
      );
      assert.match(sh('ipset list portlb-services4'), /203\.0\.113\.10,tcp:80/);
      assert.match(sh('ipset list portlb-services4'), /203\.0\.113\.10,udp:53/);
      assert.equal(
        await nf.apply({ snat: [web, dns], filter: [web, dns, dsr], notrack: [dsr] }),
        'unchanged',
        'unchanged: no write',
      );
      const other: PortRule = { vip: '203.0.113.12', family: 'ipv4', port: 443, protocol: 'tcp' };
      await nf.apply({ snat: [other], filter: [other], notrack: [] });
      const after = sh('ipset list portlb-snat4');
      assert.doesNotMatch(after, /203\.0\.113\.10/);
      assert.match(after, /203\.0\.113\.12/);
      assert.doesNotMatch(sh('ipset list portlb-vips4'), /203\.0\.113\.10/);
      assert.equal(
        sh('iptables-legacy -t nat -S POSTROUTING').match(/PORTLB-SNAT/g)?.length,
        1,
        'one jump, not one per apply',
      );
      assert.equal(sh('iptables-legacy -t filter -S INPUT').match(/PORTLB-FILTER/g)?.length, 1);
      assert.equal(sh('iptables-legacy -t nat -S PREROUTING').match(/PORTLB-SNAT-MARK/g)?.length, 1);

      // The periodic repair reads first: intact, nothing rewritten; each kind of loss found
      // and rewritten (the listings it reads are the kernel's own).
      assert.equal(await nf.repair(), undefined, 'intact: nothing lost');
      const lost = async (damage: string, said: RegExp) => {
        sh(damage);
        assert.match((await nf.repair()) ?? 'nothing', said, damage);
        assert.equal(await nf.repair(), undefined, `${damage}: rewritten, intact again`);
      };
      await lost('ipset flush portlb-services4', /ipset portlb-services4 has 0 of 1 members/);
      assert.match(sh('ipset list portlb-services4'), /203\.0\.113\.12,tcp:443/);
      await lost('iptables-legacy -t raw -F PORTLB-NOTRACK', /PORTLB-NOTRACK \(raw table\) has 0 of 1 rules/);
      await lost('iptables-legacy -t nat -F PORTLB-SNAT', /PORTLB-SNAT \(nat table\) has 0 of 3 rules/);
      assert.match(sh('iptables-legacy -t nat -S PORTLB-SNAT'), /MASQUERADE/);
      await lost('ipset flush portlb-snat4', /ipset portlb-snat4 has 0 of 1 members/);
      assert.match(sh('ipset list portlb-snat4'), /203\.0\.113\.12,tcp:443/);
      await lost(
        'iptables-legacy -t nat -D PREROUTING -m comment --comment "portlb SNAT mark" -j PORTLB-SNAT-MARK',
        /the jump from PREROUTING to PORTLB-SNAT-MARK \(nat table\) is gone/,
      );
      await lost(
        'iptables-legacy -t filter -D INPUT -m comment --comment "portlb VIP filter" -j PORTLB-FILTER',
        /the jump from INPUT to PORTLB-FILTER \(filter table\) is gone/,
      );
      assert.match(sh('iptables-legacy -t filter -S INPUT'), /-j PORTLB-FILTER/);
    } finally {
      for (const c of netfilterCleaners()) if (await c.present()) await c.remove();
    }
    assert.doesNotMatch(
      sh('iptables-legacy -t nat -S; iptables-legacy -t filter -S; iptables-legacy -t raw -S'),
      /PORTLB/,
    );
    assert.doesNotMatch(sh('ipset list -n'), /portlb/);
  });

  test('netfilter (legacy): a change is written as such and leaves what a whole write would; refused, written whole', async () => {
    const port = (i: number, p = 80): PortRule => ({
      vip: `203.0.114.${i}`,
      family: 'ipv4',
      port: p,
      protocol: 'tcp',
    });
    const tunnel = port(200, 443);
    const rules = (ids: number[], extra: PortRule[] = []): NetfilterRules => {
      const nat = [...ids.map((i) => port(i)), ...extra];
      return { snat: nat, filter: [...nat, tunnel], notrack: [tunnel] };
    };
    const members = (set: string) =>
      sh(`ipset list ${set}`).split('Members:\n')[1]!.split('\n').filter(Boolean).sort();
    const kernel = () => ({
      vips: members('portlb-vips4'),
      services: members('portlb-services4'),
      notrack: members('portlb-notrack4'),
      snat: members('portlb-snat4'),
      rules: sh('iptables-legacy -t nat -S PORTLB-SNAT; iptables-legacy -t nat -S PORTLB-SNAT-MARK'),
    });
    const cleanup = async () => {
      for (const c of netfilterCleaners()) if (await c.present()) await c.remove();
    };
    const ids = Array.from({ length: 100 }, (_, i) => i + 1);
    try {
      const nf = await detectNetfilter('auto');
      assert.equal(await nf.apply(rules(ids)), 'replaced', 'the first write is whole');
      // One Service gone, one created on a new VIP, one port more on a known VIP.
      const next = rules(
        ids.filter((i) => i !== 7),
        [port(150, 8080), port(8, 8443)],
      );
      assert.equal(await nf.apply(next), 'updated');
      const changed = kernel();
      assert.equal(changed.snat.length, 101);
      assert.ok(changed.vips.includes('203.0.114.150') && !changed.vips.includes('203.0.114.7'));
      assert.ok(changed.services.includes('203.0.114.8,tcp:8443'));
      // The same rules written whole from nothing leave the same kernel state.
      await cleanup();
      assert.equal(await (await detectNetfilter('auto')).apply(next), 'replaced');
      assert.deepEqual(kernel(), changed);

      // Someone destroyed a set the next change writes to: the kernel refuses the change
      // (ipset restore finds no set); it is written whole, and the rules are complete.
      const refused = await detectNetfilter('auto');
      assert.equal(await refused.apply(next), 'replaced');
      sh('iptables-legacy -t nat -F PORTLB-SNAT-MARK; ipset destroy portlb-snat4');
      const after = rules(
        ids.filter((i) => i !== 7 && i !== 9),
        [port(150, 8080), port(8, 8443)],
      );
      assert.equal(await refused.apply(after), 'replaced');
      assert.equal(kernel().snat.length, 100);
      assert.match(kernel().rules, /--match-set portlb-snat4/);
      assert.equal(await refused.repair(), undefined, 'complete: nothing for the repair');
    } finally {
      await cleanup();
    }
  });

  test('the VIP filter: a host listener on 0.0.0.0 does not answer on a VIP, the service port does', async () => {
    sh('ip netns add plf-n; ip netns add plf-c');
    try {
      sh('ip link add plf-n0 netns plf-n type veth peer name plf-c0 netns plf-c');
      sh(
        'ip -n plf-n addr add 192.0.2.1/24 dev plf-n0; ip -n plf-n link set plf-n0 up; ip -n plf-n link set lo up',
      );
      sh(
        'ip -n plf-c addr add 192.0.2.2/24 dev plf-c0; ip -n plf-c link set plf-c0 up; ip -n plf-c link set lo up',
      );
      sh('ip -n plf-n addr add 203.0.113.10/32 dev lo; ip -n plf-c route add 203.0.113.10/32 via 192.0.2.1');
      const listener = `require('net').createServer((s) => s.end('hello ' + s.localPort + '\\n')).listen(process.argv[1], '0.0.0.0')`;
      sh(
        `for p in 80 2222; do ip netns exec plf-n ${process.execPath} -e "${listener}" $p >/dev/null 2>&1 & done`,
      );
      const connect = (port: number) => {
        try {
          return sh(
            `ip netns exec plf-c timeout 3 bash -c 'exec 3<>/dev/tcp/203.0.113.10/${port}; cat <&3'`,
          ).trim();
        } catch {
          return 'failed';
        }
      };
      // Node starts slowly in the guest when the machine is busy: wait for both listeners
      // rather than sleeping a fixed time.
      const listening = (port: number) => {
        const deadline = Date.now() + 30_000;
        while (connect(port) !== `hello ${port}`) {
          if (Date.now() > deadline) return false;
          sh('sleep 0.2');
        }
        return true;
      };
      assert.ok(listening(80), 'the service listener answers before the filter');
      assert.ok(listening(2222), 'without the filter the host listener answers on the VIP');
      const web: PortRule = { vip: '203.0.113.10', family: 'ipv4', port: 80, protocol: 'tcp' };
      // The agent writes its rules in its own network namespace: so does this.
      const rules = Buffer.from(JSON.stringify({ snat: [], filter: [web], notrack: [] })).toString('base64');
      const module = path.resolve(
        import.meta.dirname,
        '..',
        '..',
        'lb-agent',
        'src',
        'agent',
        'netfilter.ts',
      );
      sh(
        `RULES=${rules} ip netns exec plf-n ${process.execPath} --input-type=module -e "const m = await import('${module}'); await new m.LegacyNetfilter().apply(JSON.parse(Buffer.from(process.env.RULES, 'base64').toString()))"`,
      );
      assert.equal(connect(80), 'hello 80');
      assert.equal(connect(2222), 'failed', 'filtered');
      assert.equal(
        sh('ip netns exec plf-c ping -c1 -W2 203.0.113.10 >/dev/null && echo ok').trim(),
        'ok',
        'ICMP passes',
      );
    } finally {
      sh('pkill -f "listen(process.argv" || true; ip netns del plf-n; ip netns del plf-c');
    }
  });
});
