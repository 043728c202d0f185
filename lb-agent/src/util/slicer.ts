import { setImmediate as yieldToEventLoop } from 'node:timers/promises';

/**
 * Long synchronous work (decoding a large netlink dump, one service after another) cut
 * into slices: `pause()` yields to the event loop once `budgetMs` has run since the last
 * yield, so timers, sockets and probes keep running meanwhile. A scheduling budget, not
 * a deadline: nothing depends on when the work resumes. `Infinity` never yields.
 */
export class TimeSlicer {
  private readonly budgetMs: number;
  private readonly now: () => number;
  private last: number;
  yields = 0;

  constructor(budgetMs = 8, now: () => number = () => performance.now()) {
    this.budgetMs = budgetMs;
    this.now = now;
    this.last = now();
  }

  async pause(): Promise<void> {
    if (this.now() - this.last < this.budgetMs) return;
    await yieldToEventLoop();
    this.yields++;
    this.last = this.now();
  }
}
