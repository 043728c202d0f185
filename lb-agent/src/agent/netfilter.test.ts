import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CachedNetfilter, type NetfilterRules, type ScriptOf } from './netfilter.ts';

/** A backend whose writes finish when the test says (as a slow iptables-restore would). */
class GatedNetfilter extends CachedNetfilter {
  readonly kind = 'gated';
  writes: NetfilterRules[] = [];
  gates: (() => void)[] = [];
  fail = false;
  protected write(rules: NetfilterRules): Promise<void> {
    this.writes.push(rules);
    if (this.fail) return Promise.reject(Object.assign(new Error('exit 2'), { stderr: 'ipset: busy' }));
    return new Promise((resolve) => this.gates.push(resolve));
  }
}

const rules = (vip: string): NetfilterRules => ({
  snat: [],
  filter: [{ vip, family: 'ipv4', port: 80, protocol: 'tcp' }],
  notrack: [],
});
const tick = () => new Promise((r) => setImmediate(r));

describe('netfilter manager: apply and repair', () => {
  test('unchanged rules return at once even while a repair writes; a change waits for it', async () => {
    const nf = new GatedNetfilter();
    assert.equal(await nf.repair(), false, 'nothing applied yet: nothing to repair');
    const first = nf.apply(rules('203.0.113.1'));
    await tick();
    nf.gates.shift()!();
    assert.equal(await first, true);

    const repair = nf.repair();
    await tick();
    assert.equal(nf.writes.length, 2, 'the repair is writing');
    // A pass with the same rules must not wait behind the slow rewrite.
    assert.equal(await nf.apply(rules('203.0.113.1')), false);

    let changed = false;
    const change = nf.apply(rules('203.0.113.2')).then((v) => {
      changed = v;
    });
    await tick();
    assert.equal(nf.writes.length, 2, 'the change has not started writing beside the repair');
    nf.gates.shift()!();
    assert.equal(await repair, true);
    await tick();
    assert.equal(nf.writes.length, 3);
    nf.gates.shift()!();
    await change;
    assert.equal(changed, true);
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
    assert.equal(await first, true);
    assert.equal(await nf.apply(set(r('203.0.113.1', 80), r('203.0.113.2', 80))), false, 'new objects');
    assert.equal(await nf.apply(set(r('203.0.113.2', 80), r('203.0.113.1', 80))), false, 'another order');
    const changed = nf.apply(set(r('203.0.113.2', 80), r('203.0.113.1', 81)));
    await tick();
    assert.equal(nf.writes.length, 2, 'a changed port is written');
    nf.gates.shift()!();
    assert.equal(await changed, true);
    assert.equal(await nf.apply(set(r('203.0.113.1', 81), r('203.0.113.2', 80))), false);
  });

  test('the repair writes the scripts of the applied rules again without building them again', async () => {
    const builds: string[] = [];
    const written: string[] = [];
    class ScriptNetfilter extends CachedNetfilter {
      readonly kind = 'script';
      fail = false;
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
    assert.equal(await nf.apply(two('203.0.113.2', '203.0.113.1')), false);
    await nf.repair();
    assert.equal(builds.length, 1);
    await nf.apply(two('203.0.113.1', '203.0.113.3'));
    assert.deepEqual(builds.slice(1), ['203.0.113.1,203.0.113.3'], 'new rules: built anew');
    // A failed write leaves nothing applied: the next apply builds and writes again.
    nf.fail = true;
    await assert.rejects(nf.apply(two('203.0.113.1', '203.0.113.4')));
    nf.fail = false;
    assert.equal(await nf.repair(), false);
    await nf.apply(two('203.0.113.1', '203.0.113.4'));
    assert.deepEqual(builds.slice(2), ['203.0.113.1,203.0.113.4', '203.0.113.1,203.0.113.4']);
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
    assert.equal(await again, true, 'not taken as applied after the failure');
  });
});
