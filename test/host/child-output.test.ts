// The harness reads a child's result when its output closes, not when it exits.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { lastJsonLine } from '../harness/child-output.ts';

test("a child's last JSON line is read even when its output outlives its exit", async () => {
  // The child exits at once; a process it started writes the result on the same output
  // 300 ms later. Reading at 'exit' finds nothing; reading at 'close' finds the result.
  const grandchild = `setTimeout(() => process.stdout.write(JSON.stringify({ ok: 1 }) + '\\n'), 300)`;
  const child = spawn(
    process.execPath,
    [
      '-e',
      `require('child_process').spawn(process.execPath, ['-e', ${JSON.stringify(grandchild)}], { stdio: ['ignore', 'inherit', 'inherit'], detached: true }).unref(); process.stdout.write('started\\n');`,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let exitedFirst = false;
  child.on('exit', () => {
    exitedFirst = true;
  });
  assert.deepEqual(await lastJsonLine<{ ok: number }>(child, 'child'), { ok: 1 });
  assert.ok(exitedFirst, 'the child had exited before its output closed');
});
