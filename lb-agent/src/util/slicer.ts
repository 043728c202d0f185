import { setTimeout as sleep, setImmediate as yieldToEventLoop } from 'node:timers/promises';

/** What long work awaits between items: a TimeSlicer's pause (undefined: go on at once). */
export type Pause = () => Promise<void> | undefined;

/**
 * Long synchronous work (decoding a large netlink dump, one service after another) cut
 * into slices: `pause()` yields to the event loop once `budgetMs` has run since the last
 * yield, so timers, sockets and probes keep running meanwhile. A scheduling budget, not
 * a deadline: nothing depends on when the work resumes. `Infinity` never yields.
 *
 * The clock is read about four times per budget, not at every item: where reading it is
 * a system call (UML has no vDSO), one read per decoded service cost as much as the
 * decoding. How many items make a quarter budget is learnt from the last slice.
 */
export class TimeSlicer {
  private readonly budgetMs: number;
  private readonly now: () => number;
  private last: number;
  /** Items since the last yield, and how many pass between two reads of the clock. */
  private items = 0;
  private stride = 1;
  /** After each slice, rest this many times as long as it worked (0: just yield). */
  private readonly rest: number;
  yields = 0;

  constructor(budgetMs = 8, now: () => number = () => performance.now(), rest = 0) {
    this.budgetMs = budgetMs;
    this.now = now;
    this.last = now();
    this.rest = rest;
  }

  /**
   * Not async: until the budget runs out there is nothing to wait for, and an async
   * function's promise per item (100,000 per read-back at 10,000 services) was garbage
   * the collector paid for. `await` it all the same.
   */
  pause(): Promise<void> | undefined {
    if (++this.items % this.stride !== 0) return undefined;
    const elapsed = this.now() - this.last;
    if (elapsed < this.budgetMs) {
      // Items cheaper than thought: read the clock less often, still about four times per budget.
      if (elapsed < this.budgetMs / 8) this.stride *= 2;
      return undefined;
    }
    return this.yieldNow();
  }

  /**
   * Yields if the budget has run out, reading the clock now: between steps of different
   * kinds (whose cost the item count does not tell), and after awaits that did not reach
   * the event loop (an await of a settled promise is not a yield). The items after it are
   * a new kind: their cost is learned again (the stride learned on 10,000 map lookups let
   * the metrics' encoded chunks that followed them run 20-50 ms on the host without a
   * look at the clock).
   */
  async check(): Promise<void> {
    this.stride = 1;
    this.items = 0;
    if (this.now() - this.last >= this.budgetMs) await this.yieldNow();
  }

  private async yieldNow(): Promise<void> {
    this.stride = Math.max(1, Math.floor(this.items / 4));
    this.items = 0;
    // Background work (the resync's read-back) leaves the CPU to the rest between slices:
    // on a busy node a change's pass then waits for at most one slice, not a queue of them.
    if (this.rest > 0) await sleep(Math.max(1, (this.now() - this.last) * this.rest));
    else await yieldToEventLoop();
    this.yields++;
    this.last = this.now();
  }
}
