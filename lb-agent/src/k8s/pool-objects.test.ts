import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseAgentConfig } from '../config/agent-config.ts';
import { acceptedCondition, type LeanConfigObject, leanConfigObject } from './config-objects.ts';
import { resolvePools } from './pool-objects.ts';

const filePools = parseAgentConfig(
  { pools: [{ name: 'default', addresses: ['203.0.113.0/28'] }] },
  'test',
).pools;

const obj = (name: string, spec: unknown, o: { uid?: string; generation?: number; at?: string } = {}) =>
  leanConfigObject({
    metadata: {
      name,
      uid: o.uid ?? `uid-${name}`,
      generation: o.generation ?? 1,
      creationTimestamp: o.at ?? '2026-12-02T00:00:00Z',
    },
    spec,
  });

const names = (pools: { name: string; blocks: { text: string }[] }[]) =>
  pools.map((p) => `${p.name}=${p.blocks.map((b) => b.text).join(',')}`);

describe('resolvePools', () => {
  test('objects add pools after the file’s, checked by the file’s rules', () => {
    const r = resolvePools(
      filePools,
      [obj('public', { addresses: ['198.51.100.0/29', '2001:db8::/125'], autoAssign: false })],
      new Map(),
    );
    assert.deepEqual(names(r.values), ['default=203.0.113.0/28', 'public=198.51.100.0/29,2001:db8::/125']);
    assert.equal(r.values[1]!.autoAssign, false);
    assert.deepEqual(
      r.verdicts.map((v) => [v.name, v.accepted, v.reason]),
      [['public', true, 'Accepted']],
    );
  });

  test('refused with the field and the value: a bad block, an overlap, a name taken; the others stay', () => {
    const r = resolvePools(
      filePools,
      [
        obj('bad', { addresses: ['198.51.100.0/33'] }),
        obj('overlap', { addresses: ['203.0.113.8/29'] }),
        obj('default', { addresses: ['192.0.2.0/29'] }),
        obj('typo', { addresses: ['192.0.2.64/29'], autoassign: true }),
        obj('good', { addresses: ['192.0.2.128/29'] }),
      ],
      new Map(),
    );
    assert.deepEqual(names(r.values), ['default=203.0.113.0/28', 'good=192.0.2.128/29']);
    const why = Object.fromEntries(r.verdicts.map((v) => [v.name, `${v.reason}: ${v.message}`]));
    assert.match(why.bad!, /^Invalid: spec\.addresses\[0\]: .*198\.51\.100\.0\/33/);
    assert.match(
      why.overlap!,
      /^Conflict: spec\.addresses\[0\]: "203\.0\.113\.8\/29" overlaps "203\.0\.113\.0\/28" of pool default/,
    );
    assert.match(why.default!, /^Conflict: spec\.name: duplicate pool name "default"/);
    assert.match(why.typo!, /^Invalid: .*autoassign/);
    assert.equal(r.verdicts.find((v) => v.name === 'good')!.accepted, true);
  });

  test('the first created stays: a later object that overlaps it is refused, whatever the names', () => {
    const r = resolvePools(
      [],
      [
        obj('a-late', { addresses: ['192.0.2.0/28'] }, { at: '2026-12-02T00:00:02Z' }),
        obj('z-early', { addresses: ['192.0.2.8/29'] }, { at: '2026-12-02T00:00:01Z' }),
      ],
      new Map(),
    );
    assert.deepEqual(names(r.values), ['z-early=192.0.2.8/29']);
  });

  test('a valid pool made invalid keeps its last valid spec in force, and says so; fixed, the new spec applies', () => {
    const first = resolvePools(filePools, [obj('public', { addresses: ['198.51.100.0/29'] })], new Map());
    const broken = resolvePools(
      filePools,
      [obj('public', { addresses: ['198.51.100.0/99'] }, { generation: 2 })],
      first.lastValid,
    );
    assert.deepEqual(names(broken.values), ['default=203.0.113.0/28', 'public=198.51.100.0/29']);
    const v = broken.verdicts[0]!;
    assert.equal(v.accepted, false);
    assert.equal(v.kept, true);
    assert.match(v.message, /the last valid spec \(generation 1\) stays in force$/);
    const fixed = resolvePools(
      filePools,
      [obj('public', { addresses: ['198.51.100.8/29'] }, { generation: 3 })],
      broken.lastValid,
    );
    assert.deepEqual(names(fixed.values), ['default=203.0.113.0/28', 'public=198.51.100.8/29']);
    // Deleted: gone, and nothing is kept for it.
    const gone = resolvePools(filePools, [], fixed.lastValid);
    assert.deepEqual(names(gone.values), ['default=203.0.113.0/28']);
    assert.equal(gone.lastValid.size, 0);
  });

  test('the Accepted condition is written only when it differs; its transition time moves only with its status', () => {
    const o = obj('public', { addresses: ['198.51.100.0/29'] });
    const [v] = resolvePools([], [o], new Map()).verdicts;
    const patch = acceptedCondition(o, v!, '2026-12-02T01:00:00Z');
    const c = patch.status.conditions[0];
    assert.deepEqual(
      [c.type, c.status, c.reason, c.observedGeneration, c.lastTransitionTime],
      ['Accepted', 'True', 'Accepted', 1, '2026-12-02T01:00:00Z'],
    );
    const written: LeanConfigObject = leanConfigObject({
      metadata: { name: 'public', uid: 'uid-public', generation: 1 },
      spec: o.spec,
      status: patch.status,
    });
    assert.equal(acceptedCondition(written, v!, '2026-12-02T02:00:00Z'), undefined);
    const again = acceptedCondition(written, { ...v!, generation: 2 }, '2026-12-02T02:00:00Z');
    assert.equal(
      again.status.conditions[0].lastTransitionTime,
      '2026-12-02T01:00:00Z',
      'still True: same time',
    );
  });
});
