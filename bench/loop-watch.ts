// Loaded into the agent with --import by `bench agent --loop-watch` (and --profile): records
// each late turn of the event loop (a timer that fired more than LATE_MS after it was due)
// on the monotonic clock, the CPU profile's own, with how much of it the main thread ran
// and how much it waited for a CPU (the kernel's schedstat: in UML one CPU is shared with
// the API server and the benchmark, and with the agent's own helper threads), and writes
// them to PORTLB_LOOP_WATCH_FILE at exit.
import { closeSync, openSync, readSync, writeFileSync } from 'node:fs';

const file = process.env.PORTLB_LOOP_WATCH_FILE;
if (!file) throw new Error('loop-watch: PORTLB_LOOP_WATCH_FILE is not set');
const TICK_MS = 10;
const LATE_MS = 40;
const nowUs = () => Number(process.hrtime.bigint() / 1000n);
// "time on the CPU (ns) time waiting for one (ns) timeslices" of the main thread: one read each tick.
const schedstat = openSync('/proc/thread-self/schedstat', 'r');
const buf = Buffer.alloc(128);
const sched = () => {
  const n = readSync(schedstat, buf, 0, buf.length, 0);
  const [run, wait] = buf.toString('latin1', 0, n).split(' ');
  return { runUs: Number(run) / 1000, waitUs: Number(wait) / 1000 };
};
/** Each late turn: when the timer was due and when it fired, and the main thread's share since the tick before. */
const late: { dueUs: number; firedUs: number; runMs: number; waitMs: number }[] = [];
let due = nowUs() + TICK_MS * 1000;
let before = sched();
setInterval(() => {
  const fired = nowUs();
  const now = sched();
  if (fired - due > LATE_MS * 1000)
    late.push({
      dueUs: due,
      firedUs: fired,
      runMs: (now.runUs - before.runUs) / 1000,
      waitMs: (now.waitUs - before.waitUs) / 1000,
    });
  before = now;
  due = fired + TICK_MS * 1000;
}, TICK_MS).unref();
process.on('exit', () => {
  closeSync(schedstat);
  writeFileSync(file, JSON.stringify(late));
});
