import { setImmediate as yieldToEventLoop } from 'node:timers/promises';

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
  yields = 0;

  constructor(budgetMs = 8, now: () => number = () => performance.now()) {
    this.budgetMs = budgetMs;
    this.now = now;
    this.last = now();
  }

  async pause(): Promise<void> {
    if (++this.items % this.stride !== 0) return;
    const elapsed = this.now() - this.last;
    if (elapsed < this.budgetMs) {
      // Items cheaper than thought: read the clock less often, still about four times per budget.
      if (elapsed < this.budgetMs / 8) this.stride *= 2;
      return;
    }
    this.stride = Math.max(1, Math.floor(this.items / 4));
    this.items = 0;
    await yieldToEventLoop();
    this.yields++;
    this.last = this.now();
  }
}
