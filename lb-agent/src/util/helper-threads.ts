// The agent's process has one thread that matters for latency, the event loop's, and V8's
// helper threads ("V8Worker": concurrent marking, sweeping, the parallel phases of the
// scavenger). On a node with few CPUs they compete with the event loop: in UML (one CPU)
// most of a late turn of a 10,000-service agent was its main thread waiting for the CPU
// while they ran (bench/README.md). Niced, they still run whenever the loop is idle or
// waits for them, and the loop comes first. Off by default (PORTLB_GC_HELPER_NICE opts in):
// measured at 10,000 Services, the collector's pauses were a third as long, but the process
// held 25-50 MB more (48-88 MB at 1,000), outside V8's heap. Raising a thread's nice value
// needs no privilege.
import { readdirSync, readFileSync } from 'node:fs';
import { setPriority } from 'node:os';

export const HELPER_THREAD_NAMES: readonly string[] = ['V8Worker'];
/** 0: as Node starts them (10 lets the event loop win the CPU: CFS weight 110 against 1024). */
export const DEFAULT_HELPER_NICE = 0;

/** Sets the nice value of this process's threads named in `names` (Linux); returns their ids. */
export function niceHelperThreads(nice: number, names = HELPER_THREAD_NAMES): number[] {
  const done: number[] = [];
  let tasks: string[];
  try {
    tasks = readdirSync('/proc/self/task');
  } catch {
    return done; // not Linux, or no /proc: nothing to do
  }
  for (const task of tasks) {
    const tid = Number(task);
    try {
      const comm = readFileSync(`/proc/self/task/${task}/comm`, 'utf8').trim();
      if (!names.includes(comm)) continue;
      setPriority(tid, nice);
      done.push(tid);
    } catch {
      // The thread ended meanwhile, or the value is refused: the next thread.
    }
  }
  return done;
}
