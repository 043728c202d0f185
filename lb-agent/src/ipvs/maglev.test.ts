import assert from 'node:assert/strict';
import { test } from 'node:test';
import { hsiphash, MH_TABLE_SIZE, type MhDestination, mhLookup, mhTable } from './maglev.ts';

test('hsiphash is the kernel’s 64-bit one (its own test vectors, lengths 0 to 15)', () => {
  // lib/siphash_kunit.c, BITS_PER_LONG == 64: vector n hashes the bytes 0..n-1.
  const key = [0x0706050403020100n, 0x0f0e0d0c0b0a0908n] as const;
  const vectors = [
    0x050fc4dc, 0x7d57ca93, 0x4dc7d44d, 0xe7ddf7fb, 0x88d38328, 0x49533b67, 0xc59f22a7, 0x9bb11140,
    0x8d299a8e, 0x6c063de4, 0x92ff097f, 0xf94dc352, 0x57b4d9a2, 0x1229ffa7, 0xc0f95d34, 0x2a519956,
  ];
  vectors.forEach((expected, n) => {
    const data = Uint8Array.from({ length: n }, (_, i) => i);
    assert.equal(hsiphash(data, key) >>> 0, expected, `length ${n}`);
  });
});

const backends = (n: number, weight = 1): MhDestination[] =>
  Array.from({ length: n }, (_, i) => ({ address: `10.1.${i >> 8}.${i & 255}`, port: 8080, weight }));

test('the table is full, and each backend holds its share of the slots', () => {
  for (const n of [3, 10, 100]) {
    const table = mhTable(backends(n));
    assert.equal(table.length, MH_TABLE_SIZE);
    const counts = new Array(n).fill(0);
    for (const i of table) counts[i]++;
    assert.ok(
      counts.every((c) => c >= Math.floor(MH_TABLE_SIZE / n)),
      `${n}: ${Math.min(...counts)}`,
    );
    assert.ok(
      counts.every((c) => c <= Math.ceil(MH_TABLE_SIZE / n) + 1),
      `${n}: ${Math.max(...counts)}`,
    );
  }
});

test('weights: a backend of weight 2 gets twice the slots; weight 0 (drained) keeps its slots through last_weight', () => {
  const dests = backends(3);
  dests[0]!.weight = 2;
  const counts = [0, 0, 0];
  for (const i of mhTable(dests)) counts[i]!++;
  assert.ok(Math.abs(counts[0]! - 2 * counts[1]!) <= 2, JSON.stringify(counts));
  const drained = backends(3).map((d, i) => (i === 1 ? { ...d, weight: 0, lastWeight: 1 } : d));
  assert.deepEqual(mhTable(drained), mhTable(backends(3)), 'quiescing changes no slot');
});

test('lookup: a flow to a drained backend falls back to an available one; without fallback it finds none', () => {
  const dests = backends(5).map((d, i) => (i === 2 ? { ...d, weight: 0, lastWeight: 1 } : d));
  const table = mhTable(dests);
  let moved = 0;
  for (let port = 1024; port < 3024; port++) {
    const client = { address: '192.0.2.7', port };
    const plain = mhLookup(table, backends(5), client);
    const got = mhLookup(table, dests, client);
    assert.notEqual(got, 2);
    assert.ok(got !== undefined);
    if (plain === 2) {
      moved++;
      assert.equal(mhLookup(table, dests, client, { fallback: false }), undefined);
    } else assert.equal(got, plain, 'other flows stay where they were');
  }
  assert.ok(moved > 300 && moved < 500, `about a fifth of the flows moved (${moved} of 2000)`);
});

test('the list order shapes the table: the same backends in two orders disagree on some flows', () => {
  const a = backends(100);
  const b = [...a].reverse();
  const ta = mhTable(a);
  const tb = mhTable(b);
  let differ = 0;
  for (let s = 0; s < MH_TABLE_SIZE; s++) if (a[ta[s]!]!.address !== b[tb[s]!]!.address) differ++;
  assert.ok(differ > 40, `${differ} of ${MH_TABLE_SIZE} slots differ`);
});
