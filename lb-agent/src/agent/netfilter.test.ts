import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  CachedNetfilter,
  ipsetDeltaText,
  ipsetRestoreText,
  iptablesRestoreText,
  type NetfilterRules,
  nftDeltaScript,
  nftScript,
  type PortRule,
  type RulesDelta,
  type ScriptOf,
} from './netfilter.ts';

/** A backend whose writes finish when the test says (as a slow iptables-restore would). */
class GatedNetfilter extends CachedNetfilter {
  readonly kind = 'gated';
  writes: NetfilterRules[] = [];
  gates: (() => void)[] = [];
  fail = false;
  /** What the next repair's read finds lost (a rewrite when set; a failed read when an Error). */
  lost: string | Error | undefined = 'a flushed chain';
  protected async missing(): Promise<string | undefined> {
    if (this.lost instanceof Error) throw this.lost;
    return this.lost;
  }
  protected write(rules: NetfilterRules): Promise<void> {
    this.writes.push(rules);
    if (this.fail) return Promise.reject(Object.assign(new Error('exit 2'), { stderr: 'ipset: busy' }));
    return new Promise((resolve) => this.gates.push(resolve));
  }
  deltas: RulesDelta[] = [];
  /** The kernel refuses the next change written as such (its rules are not the applied ones). */
  refuse = false;
  protected async writeDelta(delta: RulesDelta): Promise<void> {
    this.deltas.push(delta);
    if (this.refuse) throw Object.assign(new Error('exit 1'), { stderr: 'iptables-restore: line 2 failed' });
  }
}

const rules = (vip: string): NetfilterRules => ({
  snat: [],
  filter: [{ vip, family: 'ipv4', port: 80, protocol: 'tcp' }],
  notrack: [],
});
const tick = () => new Promise((r) => setImmediate(r));
/** A backend that has written `r` once. */
async function appliedOnce(r: NetfilterRules): Promise<GatedNetfilter> {
  const nf = new GatedNetfilter();
  const first = nf.apply(r);
  await tick();
  nf.gates.shift()!();
  await first;
  return nf;
}

describe('netfilter manager: apply and repair', () => {
  test('unchanged rules return at once even while a repair writes; a change waits for it', async () => {
    const nf = new GatedNetfilter();
    assert.equal(await nf.repair(), undefined, 'nothing applied yet: nothing to repair');
    const first = nf.apply(rules('203.0.113.1'));
    await tick();
    nf.gates.shift()!();
    assert.equal(await first, 'replaced');

    const repair = nf.repair();
    await tick();
    assert.equal(nf.writes.length, 2, 'the repair is writing');
    // A pass with the same rules must not wait behind the slow rewrite.
    assert.equal(await nf.apply(rules('203.0.113.1')), 'unchanged');

    let changed = '';
    const change = nf.apply(rules('203.0.113.2')).then((v) => {
      changed = v;
    });
    await tick();
    assert.equal(nf.writes.length, 2, 'the change has not started writing beside the repair');
    nf.gates.shift()!();
    assert.equal(await repair, 'a flushed chain');
    await tick();
    assert.equal(nf.writes.length, 3);
    nf.gates.shift()!();
    await change;
    assert.equal(changed, 'replaced', 'one rule for another: the whole is no larger');
    assert.deepEqual(
      nf.writes.map((w) => w.filter[0]!.vip),
      ['203.0.113.1', '203.0.113.1', '203.0.113.2'],
    );
  });

  test('the same rules in any order or in other objects write nothing; one port changed writes', async () => {
    const nf = new GatedNetfilter();
    const r = (vip: string, port: number) => ({ vip, family: 'ipv4', port, protocol: 'tcp' }) as const;
    const set = (...l: ReturnType<typeof r>[]): NetfilterRules => ({ snat: l, filter: l, notrack: [] });
    const first = nf.apply(set(r('203.0.113.1', 80), r('203.0.113.2', 80)));
    await tick();
    nf.gates.shift()!();
    assert.equal(await first, 'replaced');
    assert.equal(await nf.apply(set(r('203.0.113.1', 80), r('203.0.113.2', 80))), 'unchanged', 'new objects');
    assert.equal(
      await nf.apply(set(r('203.0.113.2', 80), r('203.0.113.1', 80))),
      'unchanged',
      'another order',
    );
    const changed = nf.apply(set(r('203.0.113.2', 80), r('203.0.113.1', 81)));
    await tick();
    assert.equal(nf.writes.length, 2, 'a changed port is written');
    nf.gates.shift()!();
    assert.equal(await changed, 'replaced');
    assert.equal(await nf.apply(set(r('203.0.113.1', 81), r('203.0.113.2', 80))), 'unchanged');
  });

  test('the repair writes the scripts of the applied rules again without building them again', async () => {
    const builds: string[] = [];
    const written: string[] = [];
    class ScriptNetfilter extends CachedNetfilter {
      readonly kind = 'script';
      fail = false;
      protected async missing(): Promise<string | undefined> {
        return 'a flushed set';
      }
      protected async writeDelta(): Promise<void> {}
      protected async write(r: NetfilterRules, script: ScriptOf): Promise<void> {
        written.push(
          script('filter', () => {
            const text = r.filter
              .map((x) => x.vip)
              .sort()
              .join(',');
            builds.push(text);
            return text;
          }),
        );
        if (this.fail) throw new Error('exit 1');
      }
    }
    const nf = new ScriptNetfilter();
    const two = (a: string, b: string): NetfilterRules => ({
      snat: [],
      filter: [rules(a).filter[0]!, rules(b).filter[0]!],
      notrack: [],
    });
    await nf.apply(two('203.0.113.1', '203.0.113.2'));
    await nf.repair();
    assert.deepEqual(builds, ['203.0.113.1,203.0.113.2'], 'built once');
    assert.deepEqual(written, ['203.0.113.1,203.0.113.2', '203.0.113.1,203.0.113.2']);
    // The same set in another order: nothing written, and its scripts are the same.
    assert.equal(await nf.apply(two('203.0.113.2', '203.0.113.1')), 'unchanged');
    await nf.repair();
    assert.equal(builds.length, 1);
    await nf.apply(two('203.0.113.1', '203.0.113.3'));
    assert.deepEqual(builds.slice(1), ['203.0.113.1,203.0.113.3'], 'new rules: built anew');
    // A failed write leaves nothing applied: the next apply builds and writes again.
    nf.fail = true;
    await assert.rejects(nf.apply(two('203.0.113.1', '203.0.113.4')));
    nf.fail = false;
    assert.equal(await nf.repair(), undefined);
    await nf.apply(two('203.0.113.1', '203.0.113.4'));
    assert.deepEqual(builds.slice(2), ['203.0.113.1,203.0.113.4', '203.0.113.1,203.0.113.4']);
  });

  test('the repair reads first: nothing lost, nothing written; lost or unreadable, rewritten and said', async () => {
    const nf = await appliedOnce(rules('203.0.113.1'));
    nf.lost = undefined;
    assert.equal(await nf.repair(), undefined, 'intact: not rewritten');
    assert.equal(nf.writes.length, 1);
    nf.lost = 'ipset portlb-services4 has 0 of 1 members';
    const repaired = nf.repair();
    await tick();
    nf.gates.shift()!();
    assert.equal(await repaired, 'ipset portlb-services4 has 0 of 1 members');
    assert.equal(nf.writes.length, 2);
    nf.lost = new Error('ipset: command not found\nmore');
    const doubted = nf.repair();
    await tick();
    nf.gates.shift()!();
    assert.equal(
      await doubted,
      'the rules could not be read (ipset: command not found)',
      'unknown is not intact: rewritten',
    );
    assert.equal(nf.writes.length, 3);
  });

  test('a repair asked for while a change is being written repairs the changed rules, not the old ones', async () => {
    const nf = await appliedOnce(rules('203.0.113.1'));
    const change = nf.apply(rules('203.0.113.2'));
    await tick();
    const repair = nf.repair();
    nf.gates.shift()!();
    await change;
    await tick();
    nf.gates.shift()!();
    assert.equal(await repair, 'a flushed chain');
    assert.deepEqual(
      nf.writes.map((w) => w.filter[0]!.vip),
      ['203.0.113.1', '203.0.113.2', '203.0.113.2'],
    );
  });

  test('a failed write names the backend and the rules, and the next apply writes again', async () => {
    const nf = new GatedNetfilter();
    nf.fail = true;
    await assert.rejects(
      nf.apply(rules('203.0.113.1')),
      /gated: could not apply 0 SNAT, 1 filter and 0 notrack rules: ipset: busy/,
    );
    nf.fail = false;
    const again = nf.apply(rules('203.0.113.1'));
    await tick();
    nf.gates.shift()!();
    assert.equal(await again, 'replaced', 'not taken as applied after the failure');
  });

  const port = (vip: string, p: number, family: 'ipv4' | 'ipv6' = 'ipv4'): PortRule => ({
    vip,
    family,
    port: p,
    protocol: 'tcp',
  });
  /** Ten NAT services on ten VIPs, and a tunnel one (untracked) beside. */
  const many = (extra: PortRule[] = [], without = ''): NetfilterRules => {
    const nat = Array.from({ length: 10 }, (_, i) => port(`203.0.113.${i + 1}`, 80)).filter(
      (r) => r.vip !== without,
    );
    const tunnel = port('203.0.113.100', 443);
    return { snat: [...nat, ...extra], filter: [...nat, tunnel, ...extra], notrack: [tunnel] };
  };

  test('a small change is written as what it adds and removes, not as everything', async () => {
    const nf = await appliedOnce(many());
    const added = port('203.0.113.50', 8080);
    assert.equal(await nf.apply(many([added], '203.0.113.3')), 'updated');
    assert.equal(nf.writes.length, 1, 'nothing written whole after the first write');
    const [delta] = nf.deltas;
    assert.deepEqual(delta, {
      snat: { added: [added], removed: [port('203.0.113.3', 80)] },
      filter: { added: [added], removed: [port('203.0.113.3', 80)] },
      notrack: { added: [], removed: [] },
      vips: {
        added: [{ vip: '203.0.113.50', family: 'ipv4' }],
        removed: [{ vip: '203.0.113.3', family: 'ipv4' }],
      },
    });
    // The same rules again: nothing; a port more on a known VIP: no VIP joins.
    assert.equal(await nf.apply(many([added], '203.0.113.3')), 'unchanged');
    assert.equal(await nf.apply(many([added, port('203.0.113.50', 8081)], '203.0.113.3')), 'updated');
    assert.deepEqual(nf.deltas[1]!.vips, { added: [], removed: [] });
    // The repair (something lost) rewrites the rules now applied, as a whole.
    const repair = nf.repair();
    await tick();
    nf.gates.shift()!();
    await repair;
    assert.equal(nf.writes.length, 2);
    assert.deepEqual(nf.writes[1]!.filter.at(-1), port('203.0.113.50', 8081));
  });

  test('a change the kernel refuses, a large change, a family used first: written as a whole', async () => {
    const nf = await appliedOnce(many());
    nf.refuse = true;
    const refused = nf.apply(many([], '203.0.113.3'));
    await tick();
    nf.gates.shift()!();
    assert.equal(await refused, 'replaced', 'refused as a change: its rules were not the applied ones');
    assert.equal(nf.deltas.length, 1);
    assert.equal(nf.writes.length, 2);
    nf.refuse = false;
    // Every rule changed: writing the change is no cheaper.
    const large = nf.apply({
      snat: [port('198.51.100.1', 80)],
      filter: [port('198.51.100.1', 80)],
      notrack: [],
    });
    await tick();
    nf.gates.shift()!();
    assert.equal(await large, 'replaced');
    // The first IPv6 rule: that family's sets and chains are made by a whole write.
    const v6 = nf.apply({
      snat: [port('198.51.100.1', 80)],
      filter: [port('198.51.100.1', 80), port('2001:db8::1', 80, 'ipv6')],
      notrack: [],
    });
    await tick();
    nf.gates.shift()!();
    assert.equal(await v6, 'replaced');
    assert.equal(nf.deltas.length, 1);
  });
});

describe('netfilter changes as scripts', () => {
  const r = (vip: string, p: number, family: 'ipv4' | 'ipv6' = 'ipv4'): PortRule => ({
    vip,
    family,
    port: p,
    protocol: 'tcp',
  });
  const delta: RulesDelta = {
    snat: { added: [r('203.0.113.5', 80)], removed: [r('203.0.113.3', 80), r('2001:db8::3', 443, 'ipv6')] },
    filter: { added: [r('203.0.113.5', 80)], removed: [r('203.0.113.3', 80), r('2001:db8::3', 443, 'ipv6')] },
    notrack: { added: [r('203.0.113.6', 443)], removed: [] },
    vips: {
      added: [{ vip: '203.0.113.5', family: 'ipv4' }],
      removed: [
        { vip: '203.0.113.3', family: 'ipv4' },
        { vip: '2001:db8::3', family: 'ipv6' },
      ],
    },
  };

  test('ipset, whole: a set created only when missing, a leftover destroyed first, all with the large cap', () => {
    const rules: NetfilterRules = { snat: [], filter: [r('203.0.113.5', 80)], notrack: [] };
    const fresh = ipsetRestoreText(rules, 'ipv4');
    assert.match(fresh, /^create portlb-vips4 hash:ip family inet maxelem 1048576$/m);
    assert.match(fresh, /^create portlb-vips4-next hash:ip family inet maxelem 1048576$/m);
    const over = ipsetRestoreText(
      rules,
      'ipv4',
      new Set(['portlb-vips4', 'portlb-vips4-next', 'portlb-services4']),
    );
    assert.doesNotMatch(over, /^create portlb-vips4 /m);
    assert.doesNotMatch(over, /^create portlb-services4 /m);
    assert.match(over, /^create portlb-notrack4 /m);
    assert.match(over, /^destroy portlb-vips4-next\ncreate portlb-vips4-next /m);
    assert.match(
      over,
      /^add portlb-services4-next 203\.0\.113\.5,6:80\nswap portlb-services4-next portlb-services4\ndestroy portlb-services4-next$/m,
    );
  });

  test('ipset: ports in before their VIP joins, a VIP out before its ports go; per family', () => {
    // Protocols by number: a name costs ipset a read of /etc/protocols per member (six
    // system calls; 70,000 members at 10,000 Services took tens of seconds in UML).
    assert.equal(
      ipsetDeltaText(delta, 'ipv4'),
      [
        'add portlb-services4 203.0.113.5,6:80 -exist',
        'add portlb-notrack4 203.0.113.6,6:443 -exist',
        'add portlb-snat4 203.0.113.5,6:80 -exist',
        'add portlb-vips4 203.0.113.5 -exist',
        'del portlb-vips4 203.0.113.3 -exist',
        'del portlb-services4 203.0.113.3,6:80 -exist',
        'del portlb-snat4 203.0.113.3,6:80 -exist',
        '',
      ].join('\n'),
    );
    assert.equal(
      ipsetDeltaText(delta, 'ipv6'),
      'del portlb-vips6 2001:db8::3 -exist\ndel portlb-services6 2001:db8::3,6:443 -exist\ndel portlb-snat6 2001:db8::3,6:443 -exist\n',
    );
    const udp = { vip: '203.0.113.7', family: 'ipv4', port: 53, protocol: 'udp' } as const;
    const sctp = { vip: '203.0.113.7', family: 'ipv4', port: 3868, protocol: 'sctp' } as const;
    assert.match(
      ipsetDeltaText(
        {
          snat: { added: [], removed: [] },
          filter: { added: [udp, sctp], removed: [] },
          notrack: { added: [], removed: [] },
          vips: { added: [], removed: [] },
        },
        'ipv4',
      ),
      /^add portlb-services4 203\.0\.113\.7,17:53 -exist\nadd portlb-services4 203\.0\.113\.7,132:3868 -exist\n/,
    );
  });

  test('iptables: SNAT by a set and a mark bit, the same rules for any number of Services', () => {
    const one = iptablesRestoreText({ snat: [r('203.0.113.5', 80)], filter: [], notrack: [] }, 'ipv4');
    const many = iptablesRestoreText(
      { snat: Array.from({ length: 50 }, (_, i) => r(`203.0.113.${i + 1}`, 80)), filter: [], notrack: [] },
      'ipv4',
    );
    assert.equal(one, many, 'the set holds the Services, not the rules');
    assert.match(
      one,
      /^\*nat\n:PORTLB-SNAT - \[0:0\]\n:PORTLB-SNAT-MARK - \[0:0\]\n-A PORTLB-SNAT-MARK -m set --match-set portlb-snat4 dst,dst -j MARK --or-mark 0x1000\n-A PORTLB-SNAT -m mark ! --mark 0x1000\/0x1000 -j RETURN\n-A PORTLB-SNAT -j MARK --xor-mark 0x1000\n-A PORTLB-SNAT -m ipvs --ipvs --vmethod masq -m comment --comment "portlb: SNAT for NAT-mode services" -j MASQUERADE\nCOMMIT\n/,
    );
    const v6 = iptablesRestoreText({ snat: [], filter: [], notrack: [] }, 'ipv6', 0x80000);
    assert.match(v6, /--match-set portlb-snat6 dst,dst -j MARK --or-mark 0x80000$/m);
    assert.match(v6, /-m mark ! --mark 0x80000\/0x80000 -j RETURN$/m);
    const sets = ipsetRestoreText({ snat: [r('203.0.113.5', 80)], filter: [], notrack: [] }, 'ipv4');
    assert.match(sets, /^create portlb-snat4 hash:ip,port family inet maxelem 1048576$/m);
    assert.match(sets, /^add portlb-snat4-next 203\.0\.113\.5,6:80\nswap portlb-snat4-next portlb-snat4$/m);
  });

  test('nft: SNAT by a set and a mark bit; a change is one transaction of elements', () => {
    const whole = nftScript({ snat: [r('203.0.113.5', 80)], filter: [], notrack: [] }, 0x1000);
    assert.match(
      whole,
      /set nat_services \{ type ipv4_addr \. inet_proto \. inet_service; elements = \{ 203\.0\.113\.5 \. tcp \. 80 \} \}/,
    );
    assert.match(
      whole,
      /type nat hook prerouting priority dstnat; policy accept;\n {4}ip daddr \. meta l4proto \. th dport @nat_services meta mark set meta mark \| 0x1000\n/,
    );
    assert.match(
      whole,
      /meta mark & 0x1000 == 0x1000 meta mark set meta mark & 0xffffefff masquerade comment "portlb: SNAT for NAT-mode services"/,
    );
    assert.equal(
      nftDeltaScript(delta),
      [
        'add element ip portlb services { 203.0.113.5 . tcp . 80 }',
        'add element ip portlb untracked { 203.0.113.6 . tcp . 443 }',
        'add element ip portlb nat_services { 203.0.113.5 . tcp . 80 }',
        'add element ip portlb vips { 203.0.113.5 }',
        'delete element ip portlb vips { 203.0.113.3 }',
        'delete element ip portlb services { 203.0.113.3 . tcp . 80 }',
        'delete element ip portlb nat_services { 203.0.113.3 . tcp . 80 }',
        'delete element ip6 portlb vips { 2001:db8::3 }',
        'delete element ip6 portlb services { 2001:db8::3 . tcp . 443 }',
        'delete element ip6 portlb nat_services { 2001:db8::3 . tcp . 443 }',
        '',
      ].join('\n'),
    );
  });
});
