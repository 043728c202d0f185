import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CachedNetfilter, type NetfilterRules, type ScriptOf } from './netfilter.ts';

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
    assert.equal(await repair, 'a flushed chain');
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
      protected async missing(): Promise<string | undefined> {
        return 'a flushed set';
      }
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
    assert.equal(await again, true, 'not taken as applied after the failure');
  });
});
