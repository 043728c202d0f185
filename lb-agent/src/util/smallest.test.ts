import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { FUZZ_RUNS } from './fuzz.ts';
import { Smallest } from './smallest.ts';

test('keeps the limit smallest, sorted, as a full sort would (ties, fewer than the limit, a limit of 0)', () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 0, max: 50 }), { maxLength: 300 }),
      fc.nat(120),
      (items, limit) => {
        const s = new Smallest<number>(limit, (a, b) => a - b);
        for (const x of items) s.add(x);
        assert.equal(s.count, items.length);
        assert.deepEqual(s.sorted(), [...items].sort((a, b) => a - b).slice(0, limit));
      },
    ),
    { numRuns: FUZZ_RUNS },
  );
});
