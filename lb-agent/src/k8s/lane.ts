// The API lane (DESIGN.md decision 15): every write to the API server (Service status,
// Events) runs here, with bounded concurrency and a deadline on each call, never inside
// the data plane's pass. Work has a key: a newer submission with the key of a queued one
// replaces it (the latest status of a Service wins), and the queue is bounded (Events are
// dropped first, and counted, when the API server cannot keep up).
import { describeError } from '../errors.ts';
import { deadlineSignal } from '../util/clock.ts';
import { type Logger, silentLogger } from '../util/log.ts';

export interface LaneWork {
  key: string;
  what: string;
  /** Droppable work (an Event) goes first when the queue is full; a status write is not. */
  droppable: boolean;
  run: (signal: AbortSignal) => Promise<void>;
}

export interface ApiLaneOptions {
  concurrency?: number;
  /** Deadline of each call. */
  deadlineMs?: number;
  maxQueue?: number;
  logger?: Logger;
}

export class ApiLane {
  private readonly queue = new Map<string, LaneWork>();
  private readonly running = new Set<string>();
  private readonly concurrency: number;
  private readonly deadlineMs: number;
  private readonly maxQueue: number;
  private readonly log: Logger;
  private readonly stopper = new AbortController();
  private idleWaiters: (() => void)[] = [];
  readonly stats = { done: 0, failed: 0, timedOut: 0, dropped: 0 };

  constructor(o: ApiLaneOptions = {}) {
    this.concurrency = o.concurrency ?? 4;
    this.deadlineMs = o.deadlineMs ?? 10_000;
    this.maxQueue = o.maxQueue ?? 2000;
    this.log = o.logger ?? silentLogger;
  }

  /** Queues work; returns at once (the caller never waits for the API server). */
  submit(work: LaneWork): void {
    if (this.stopper.signal.aborted) return;
    this.queue.delete(work.key);
    if (this.queue.size >= this.maxQueue) {
      const victim = first(this.queue.values(), (w) => w.droppable) ?? (work.droppable ? work : undefined);
      if (victim) {
        this.queue.delete(victim.key);
        this.stats.dropped++;
        if (victim === work) return;
      }
    }
    this.queue.set(work.key, work);
    this.pump();
  }

  get pending(): number {
    return this.queue.size + this.running.size;
  }

  /** Resolves when nothing is queued or running (tests). */
  idle(): Promise<void> {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  stop(): void {
    this.stopper.abort();
    this.queue.clear();
  }

  private pump(): void {
    while (this.running.size < this.concurrency) {
      // The first queued work whose key is not running (one call per key at a time).
      const next = first(this.queue.values(), (w) => !this.running.has(w.key));
      if (!next) break;
      this.queue.delete(next.key);
      this.running.add(next.key);
      const signal = AbortSignal.any([this.stopper.signal, deadlineSignal(this.deadlineMs)]);
      next
        .run(signal)
        .then(
          () => {
            this.stats.done++;
          },
          (err) => {
            this.stats.failed++;
            if (signal.aborted && !this.stopper.signal.aborted) this.stats.timedOut++;
            this.log.debug({ err: describeError(err), work: next.what }, 'API call failed');
          },
        )
        .finally(() => {
          this.running.delete(next.key);
          this.pump();
          if (this.pending === 0) for (const w of this.idleWaiters.splice(0)) w();
        });
    }
  }
}

/**
 * The first match, without copying the queue: a first pass at 10,000 Services submits an
 * Event each, and a copy of the full queue (2,000) per submission held the event loop.
 */
function first(works: Iterable<LaneWork>, match: (w: LaneWork) => boolean): LaneWork | undefined {
  for (const w of works) if (match(w)) return w;
  return undefined;
}
