// The legacy backend's ipset script on this host's kernel (ipset works here; legacy
// iptables with IPVS is tested in UML), in a network namespace of the test's own: sets
// made by an older version are taken over, a leftover of a failed write is cleared, and
// more members than ipset's default cap (65,536) fit.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  ipsetRestoreText,
  type NetfilterRules,
  type PortRule,
  SET_MAXELEM,
  SETS,
} from '../../lb-agent/src/agent/netfilter.ts';
import { NetnsLab } from '../harness/netns.ts';

describe('netfilter ipsets (host kernel, own namespace)', () => {
  const lab = new NetnsLab(`pli${process.pid % 10000}`);
  before(() => {
    lab.addNamespace('n');
  });
  after(() => lab.cleanup());

  const existing = () => new Set(lab.exec('n', 'ipset', ['list', '-n']).split('\n').filter(Boolean));
  const header = (set: string) => {
    const listed = lab.exec('n', 'ipset', ['list', '-t', set]);
    return {
      entries: Number(/Number of entries: (\d+)/.exec(listed)?.[1]),
      maxelem: Number(/maxelem (\d+)/.exec(listed)?.[1]),
    };
  };

  test('10,000 VIPs with seven ports each: past the default cap, over sets an older version made', () => {
    // What an older version left: sets with the default cap, and half a write's leftover.
    for (const [set, type] of [
      [SETS.ipv4.vips, 'hash:ip'],
      [SETS.ipv4.services, 'hash:ip,port'],
      [SETS.ipv4.notrack, 'hash:ip,port'],
      [`${SETS.ipv4.vips}-next`, 'hash:ip'],
    ] as const)
      lab.exec('n', 'ipset', ['create', set, type, 'family', 'inet']);
    assert.equal(header(SETS.ipv4.services).maxelem, 65_536);
    const filter: PortRule[] = [];
    for (let i = 0; i < 10_000; i++)
      for (let p = 0; p < 7; p++)
        filter.push({
          vip: `10.${96 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
          family: 'ipv4',
          port: 8000 + p,
          protocol: 'tcp',
        });
    const rules: NetfilterRules = { snat: [], filter, notrack: filter.slice(0, 100) };
    lab.exec('n', 'ipset', ['restore'], ipsetRestoreText(rules, 'ipv4', existing()));
    assert.deepEqual(header(SETS.ipv4.services), { entries: 70_000, maxelem: SET_MAXELEM });
    assert.deepEqual(header(SETS.ipv4.vips), { entries: 10_000, maxelem: SET_MAXELEM });
    assert.equal(header(SETS.ipv4.notrack).entries, 100);
    assert.deepEqual(
      [...existing()].sort(),
      [SETS.ipv4.notrack, SETS.ipv4.services, SETS.ipv4.snat, SETS.ipv4.vips],
      'no leftover',
    );
    // Written again over its own sets (as a repair does): the same.
    const fewer: NetfilterRules = { snat: [], filter: filter.slice(7), notrack: [] };
    lab.exec('n', 'ipset', ['restore'], ipsetRestoreText(fewer, 'ipv4', existing()));
    assert.deepEqual(header(SETS.ipv4.services), { entries: 69_993, maxelem: SET_MAXELEM });
    assert.equal(header(SETS.ipv4.notrack).entries, 0);
  });
});
