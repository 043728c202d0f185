import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { feed } from './feed.ts';

// A command that exits without reading its stdin (iptables -C, a crashing restore) makes
// the write fail with EPIPE: that must come back as this call's error, never as an
// uncaught exception that takes the agent down (measured: it did, under load in UML).
test('feed: a command that exits without reading its input is an error of the call, not of the process', async () => {
  const big = 'x'.repeat(1 << 20);
  await assert.rejects(feed('sh', ['-c', 'exit 3'], big), /exited 3/);
  await assert.rejects(feed('true', [], big), /did not read its input/);
  await feed('true', [], '');
  await feed('sh', ['-c', 'cat >/dev/null'], big);
});

test('feed: a large input arrives whole, in order, with characters across the pieces it is written in intact', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'portlb-feed-'));
  try {
    // Characters of 1, 2, 3 and 4 bytes of UTF-8 (the last a surrogate pair), over many pieces.
    const input = 'a\u00e9\u20ac\u{1f600}'.repeat(100_000);
    await feed('sh', ['-c', `cat > ${dir}/out`], input);
    assert.equal(readFileSync(path.join(dir, 'out'), 'utf8'), input);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
