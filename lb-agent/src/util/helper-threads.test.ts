import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { niceHelperThreads } from './helper-threads.ts';

/** A thread's nice value, from /proc (field 19 of its stat). */
function threadNice(tid: number): number {
  const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
}

const named = (name: string) =>
  readdirSync('/proc/self/task')
    .map(Number)
    .filter((tid) => readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim() === name);

test("V8's helper threads are niced; the event loop's thread is not", () => {
  const workers = named('V8Worker');
  assert.ok(workers.length > 0, 'Node runs V8Worker threads');
  const before = threadNice(process.pid);
  const niced = niceHelperThreads(10);
  assert.deepEqual([...niced].sort(), [...workers].sort());
  for (const tid of workers) assert.equal(threadNice(tid), 10, `V8Worker ${tid}`);
  assert.equal(threadNice(process.pid), before, 'the main thread keeps its priority');
  assert.deepEqual(niceHelperThreads(10, ['no-such-thread']), []);
});
