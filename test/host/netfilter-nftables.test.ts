// portlb's nftables rules on this host's kernel (which has the nftables ip family), in
// network namespaces of the test's own: SNAT by a set of NAT services and a mark bit, with
// real connections forwarded to a backend;
// the VIP filter letting through only service ports (and ICMP), checked with real
// connections to a listener bound to every address; replaced as a whole; nothing else in
// the ruleset touched.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  type NetfilterRules,
  nftDeltaScript,
  nftMissing,
  nftScript,
  type PortRule,
  rulesDelta,
  rulesKey,
} from '../../lb-agent/src/agent/netfilter.ts';
import { NetnsLab } from '../harness/netns.ts';

const VIP = '203.0.113.10';

describe('netfilter through nftables (host kernel, own namespaces)', () => {
  const lab = new NetnsLab(`pln${process.pid % 10000}`);
  before(async () => {
    lab.addNamespace('n');
    lab.addNamespace('c');
    lab.addNamespace('b');
    lab.link('n', 'n-c', ['192.0.2.1/24'], 'c', 'c-n', ['192.0.2.2/24']);
    lab.link('n', 'n-b', ['192.0.3.1/24'], 'b', 'b-n', ['192.0.3.2/24']);
    lab.exec('b', 'ip', ['route', 'add', 'default', 'via', '192.0.3.1']);
    lab.exec('n', 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    // A backend that answers with the address it sees the connection from.
    lab.spawn('b', 'backend', process.execPath, [
      '-e',
      `require('net').createServer((s) => s.end('from ' + s.remoteAddress + '\\n')).listen(8080, '0.0.0.0')`,
    ]);
    lab.exec('n', 'ip', ['addr', 'add', `${VIP}/32`, 'dev', 'lo']);
    lab.exec('c', 'ip', ['route', 'add', `${VIP}/32`, 'via', '192.0.2.1']);
    lab.exec('n', 'nft', ['add', 'table', 'inet', 'someone_else']);
    // Host listeners on every address, as sshd or the kubelet would be.
    for (const port of [80, 2222]) {
      lab.spawn('n', `listener-${port}`, process.execPath, [
        '-e',
        `require('net').createServer((s) => s.end('hello ${port}\\n')).listen(${port}, '0.0.0.0')`,
      ]);
    }
    await new Promise((r) => setTimeout(r, 500));
  });
  after(() => lab.cleanup());

  const apply = (snat: PortRule[], filter: PortRule[], notrack: PortRule[] = []) =>
    lab.exec('n', 'nft', ['-f', '-'], nftScript({ snat, filter, notrack }));
  /** A TCP connect from the client namespace, bounded: the answer, or why not. */
  const connect = (address: string, port: number) => {
    const r = spawnSync(
      'ip',
      [
        'netns',
        'exec',
        lab.ns('c'),
        'bash',
        '-c',
        `timeout 2 bash -c 'exec 3<>/dev/tcp/${address}/${port}; cat <&3'`,
      ],
      { encoding: 'utf8' },
    );
    return r.status === 0 ? r.stdout.trim() : `failed (${r.status})`;
  };
  const web: PortRule = { vip: VIP, family: 'ipv4', port: 80, protocol: 'tcp' };

  test('SNAT: a connection to a NAT service port leaves with the node address, to another port with the client; replaced atomically', () => {
    // IPVS forwards to the backend in LOCAL_IN, after the mark is set; a DNAT after
    // portlb's prerouting chain stands in for it here (the host kernel has no IPVS).
    lab.exec(
      'n',
      'nft',
      ['-f', '-'],
      `table ip emulated_ipvs {\n  chain pre {\n    type nat hook prerouting priority dstnat + 10; policy accept;\n    ip daddr ${VIP} tcp dport { 8000, 8001 } dnat to 192.0.3.2:8080\n  }\n}\n`,
    );
    // Ports of their own: the notrack test below counts conntrack entries of port 80.
    const nat = { ...web, port: 8000 };
    try {
      apply([nat, { vip: 'fd00:203::10', family: 'ipv6', port: 443, protocol: 'tcp' }], []);
      assert.equal(connect(VIP, 8000), 'from 192.0.3.1', 'in the set: masqueraded');
      assert.equal(connect(VIP, 8001), 'from 192.0.2.2', 'not in the set: the client address');
      assert.match(
        lab.exec('n', 'nft', ['list', 'table', 'ip6', 'portlb']),
        /elements = \{ fd00:203::10 \. tcp \. 443 \}/,
      );
      apply([{ ...nat, port: 8001 }], []);
      assert.equal(connect(VIP, 8000), 'from 192.0.2.2', 'taken out of the set: no SNAT');
      assert.equal(connect(VIP, 8001), 'from 192.0.3.1');
      // Another mark bit: the same, with that bit.
      lab.exec('n', 'nft', ['-f', '-'], nftScript({ snat: [nat], filter: [], notrack: [] }, 0x80000));
      assert.match(
        lab.exec('n', 'nft', ['list', 'table', 'ip', 'portlb']),
        /meta mark & 0x00080000 == 0x00080000/,
      );
      assert.equal(connect(VIP, 8000), 'from 192.0.3.1');
      assert.match(
        lab.exec('n', 'nft', ['list', 'ruleset']),
        /table inet someone_else/,
        'other tables untouched',
      );
    } finally {
      lab.exec('n', 'nft', ['delete', 'table', 'ip', 'emulated_ipvs']);
    }
  });

  test("the repair's reading of a listing: intact, then each kind of loss named", () => {
    const dns: PortRule = { vip: VIP, family: 'ipv4', port: 53, protocol: 'udp' };
    const v6: PortRule = { vip: 'fd00:203::10', family: 'ipv6', port: 443, protocol: 'tcp' };
    const rules = { snat: [web, dns], filter: [web, dns, v6], notrack: [dns] };
    lab.exec('n', 'nft', ['-f', '-'], nftScript(rules));
    const listed = (nf = 'ip') => lab.exec('n', 'nft', ['list', 'table', nf, 'portlb']);
    assert.equal(nftMissing(rules, 'ipv4', listed()), undefined);
    assert.equal(nftMissing(rules, 'ipv6', listed('ip6')), undefined);
    const lost = (command: string[], said: RegExp) => {
      lab.exec('n', 'nft', command);
      assert.match(nftMissing(rules, 'ipv4', listed()) ?? 'nothing', said, command.join(' '));
      lab.exec('n', 'nft', ['-f', '-'], nftScript(rules));
    };
    lost(['flush', 'set', 'ip', 'portlb', 'services'], /set services of table ip portlb has 0 of 2 members/);
    lost(
      ['delete', 'element', 'ip', 'portlb', 'untracked', `{ ${VIP} . udp . 53 }`],
      /set untracked .* 0 of 1/,
    );
    lost(['flush', 'chain', 'ip', 'portlb', 'postrouting'], /the SNAT rule of table ip portlb is gone/);
    lost(['flush', 'chain', 'ip', 'portlb', 'snat_mark'], /the SNAT mark's rule of table ip portlb is gone/);
    lost(
      ['flush', 'set', 'ip', 'portlb', 'nat_services'],
      /set nat_services of table ip portlb has 0 of 2 members/,
    );
    lost(['flush', 'chain', 'ip', 'portlb', 'input'], /pass for other addresses of table ip portlb is gone/);
    lost(['flush', 'chain', 'ip', 'portlb', 'prerouting'], /the notrack rule of table ip portlb is gone/);
    lab.exec('n', 'nft', ['flush', 'ruleset']);
    assert.throws(
      () => listed(),
      'a flushed ruleset: the table is gone, the read fails (the repair rewrites)',
    );
    apply([], []);
  });

  test('a change as one transaction leaves what a whole write would; a rule already gone refuses it whole', () => {
    const port = (i: number, p = 80, family: 'ipv4' | 'ipv6' = 'ipv4'): PortRule => ({
      vip: family === 'ipv4' ? `198.51.100.${i}` : `fd00:51::${i}`,
      family,
      port: p,
      protocol: 'tcp',
    });
    const tunnel = port(200, 443);
    const rules = (ids: number[], extra: PortRule[] = []): NetfilterRules => {
      const nat = [...ids.map((i) => port(i)), port(1, 443, 'ipv6'), ...extra];
      return { snat: nat, filter: [...nat, tunnel], notrack: [tunnel] };
    };
    /** A table's listing with each set's elements and the SNAT rules in a stable order. */
    const normalised = (nf: string) =>
      lab
        .exec('n', 'nft', ['list', 'table', nf, 'portlb'])
        .replace(/elements = \{([^}]*)\}/g, (_, e: string) =>
          e
            .split(',')
            .map((x) => x.trim())
            .sort()
            .join(','),
        )
        .split('\n')
        .sort()
        .join('\n');
    const ids = Array.from({ length: 50 }, (_, i) => i + 1);
    const base = rules(ids);
    // One Service gone, one created on a new VIP, a port more on a known VIP, an IPv6 one gone.
    const next = rules(
      ids.filter((i) => i !== 7),
      [port(150, 8080), port(8, 8443)],
    );
    next.snat = next.snat.filter((r) => r.family === 'ipv4' || r.port !== 443);
    next.filter = next.filter.filter((r) => r.family === 'ipv4' || r.port !== 443);
    next.snat.push(port(2, 443, 'ipv6'));
    next.filter.push(port(2, 443, 'ipv6'));
    lab.exec('n', 'nft', ['-f', '-'], nftScript(base));
    const delta = rulesDelta({ rules: base, key: rulesKey(base) }, { rules: next, key: rulesKey(next) });
    assert.ok(delta, 'a small change');
    lab.exec('n', 'nft', ['-f', '-'], nftDeltaScript(delta));
    const changed = [normalised('ip'), normalised('ip6')];
    assert.match(changed[0]!, /198\.51\.100\.150 \. tcp \. 8080/);
    lab.exec('n', 'nft', ['-f', '-'], nftScript(next));
    assert.deepEqual([normalised('ip'), normalised('ip6')], changed, 'the same as a whole write');
    assert.equal(
      nftMissing(next, 'ipv4', lab.exec('n', 'nft', ['list', 'table', 'ip', 'portlb'])),
      undefined,
    );

    // An element the change deletes is gone already: the transaction fails and changes nothing.
    lab.exec('n', 'nft', ['delete', 'element', 'ip', 'portlb', 'vips', '{ 198.51.100.9 }']);
    const before = normalised('ip');
    const after = rules(ids.filter((i) => i !== 7 && i !== 9));
    const refused = rulesDelta({ rules: next, key: rulesKey(next) }, { rules: after, key: rulesKey(after) });
    assert.throws(() => lab.exec('n', 'nft', ['-f', '-'], nftDeltaScript(refused!)));
    assert.equal(normalised('ip'), before, 'nothing of the refused change applied');

    // The agent's class, in the namespace: whole, then the change as such, then refused and whole.
    const module = path.join(import.meta.dirname, '..', '..', 'lb-agent', 'src', 'agent', 'netfilter.ts');
    const steps = [base, next, after].map((r) => Buffer.from(JSON.stringify(r)).toString('base64'));
    const script = `const m = await import(${JSON.stringify(module)}); const { execFileSync } = await import('node:child_process'); const nf = new m.NftNetfilter(); const out = []; for (const s of process.argv.slice(1)) { if (out.length === 2) execFileSync('nft', ['delete', 'element', 'ip', 'portlb', 'vips', '{ 198.51.100.9 }']); out.push(await nf.apply(JSON.parse(Buffer.from(s, 'base64').toString()))); } console.log(out.join(' '));`;
    lab.exec('n', 'nft', ['delete', 'table', 'ip', 'portlb']);
    assert.equal(
      lab.exec('n', process.execPath, ['--input-type=module', '-e', script, ...steps]).trim(),
      'replaced updated replaced',
    );
    assert.equal(
      nftMissing(after, 'ipv4', lab.exec('n', 'nft', ['list', 'table', 'ip', 'portlb'])),
      undefined,
    );
    apply([], []);
  });

  test('the VIP filter: a listener on 0.0.0.0 is unreachable through the VIP, the service port is not', () => {
    apply([], []);
    assert.equal(
      connect(VIP, 2222),
      'hello 2222',
      'without the filter, the host listener answers on the VIP',
    );
    apply([], [web]);
    assert.equal(connect(VIP, 80), 'hello 80', 'the service port passes');
    assert.match(connect(VIP, 2222), /^failed/, 'a host listener does not answer on the VIP');
    assert.equal(connect('192.0.2.1', 2222), 'hello 2222', "the node's own address is not filtered");
    const ping = spawnSync('ip', ['netns', 'exec', lab.ns('c'), 'ping', '-c1', '-W2', VIP]);
    assert.equal(ping.status, 0, 'ICMP passes');
    assert.match(
      lab.exec('n', 'nft', ['list', 'table', 'ip', 'portlb']),
      /counter packets [1-9]\d* bytes \d+ drop/,
    );
    apply([], []);
    assert.equal(connect(VIP, 2222), 'hello 2222', 'rules replaced as a whole');
  });

  test('notrack: traffic to a tunnel/dr service port leaves no conntrack entry; other traffic still does', () => {
    // The client ports of the entries for a VIP port: the earlier tests' connections are
    // tracked too (portlb's SNAT rule makes conntrack run from the first write), so only
    // entries new since `before` count.
    const tracked = (port: number) =>
      new Set(
        lab
          .exec('n', 'cat', ['/proc/net/nf_conntrack'])
          .split('\n')
          // The original direction (the first tuple of a line): a client's packets to the VIP.
          .filter((l) => /dst=(\S+)/.exec(l)?.[1] === VIP && /dport=(\d+)/.exec(l)?.[1] === String(port))
          .map((l) => /sport=(\d+)/.exec(l)?.[1]),
      );
    const fresh = (port: number, before: Set<string | undefined>) =>
      [...tracked(port)].filter((p) => !before.has(p)).length;
    lab.exec('n', 'sysctl', ['-qw', 'net.netfilter.nf_conntrack_tcp_timeout_time_wait=120']);
    // A SNAT rule (of another VIP) makes conntrack run in this namespace, as on a node
    // with nat services.
    apply([{ ...web, vip: '203.0.113.99' }], [web, { ...web, port: 2222 }], [web]);
    assert.match(
      lab.exec('n', 'nft', ['list', 'table', 'ip', 'portlb']),
      /type filter hook prerouting priority raw/,
    );
    const [before80, before2222] = [tracked(80), tracked(2222)];
    assert.equal(connect(VIP, 80), 'hello 80');
    assert.equal(connect(VIP, 2222), 'hello 2222');
    assert.equal(fresh(80, before80), 0, 'the notrack port left no entry');
    assert.ok(
      fresh(2222, before2222) > 0,
      'a port not listed is tracked as before (the check can see entries)',
    );
    apply([], []);
  });
});
