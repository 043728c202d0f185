import assert from 'node:assert/strict';
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
