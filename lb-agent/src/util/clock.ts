// Time, injected: retry, backoff, drain and supervision logic take a Clock so tests can
// drive them without sleeping. Two kinds of time: the wall clock, for what people and the
// API server read (timestamps), and a monotonic clock, for every interval, deadline,
// drain and lease, so that a clock step (NTP, a VM resumed) changes none of them.

export interface Clock {
  /** Wall-clock milliseconds since the epoch: timestamps only, never intervals. */
  now(): number;
  /** Monotonic milliseconds from an arbitrary origin: intervals, deadlines, durations. */
  monotonic(): number;
  /** Resolves after `ms` of monotonic time, or rejects with the signal's reason when aborted. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/**
 * An AbortSignal that fires after `ms`. AbortSignal.timeout itself throws on fractions of a
 * millisecond, which deadlines computed from the monotonic clock always have.
 */
export function deadlineSignal(ms: number): AbortSignal {
  return AbortSignal.timeout(Math.max(1, Math.ceil(ms)));
}

/** A monotonic instant as wall-clock time (for showing when something started). */
export function wallTimeOf(clock: Clock, monotonicAt: number): number {
  return clock.now() - (clock.monotonic() - monotonicAt);
}

export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  sleep: (ms, signal) =>
    new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};

/** A clock that moves only when told to; its wall clock can also jump on its own. */
export class ManualClock implements Clock {
  private time: number;
  private wallOffset = 0;
  private sleepers: { at: number; resolve: () => void; reject: (e: unknown) => void }[] = [];

  constructor(start = 1_700_000_000_000) {
    this.time = start;
  }

  now(): number {
    return this.time + this.wallOffset;
  }

  monotonic(): number {
    return this.time;
  }

  /** Steps the wall clock only (as NTP or a resumed VM does); monotonic time is unaffected. */
  jumpWall(ms: number): void {
    this.wallOffset += ms;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const entry = { at: this.time + ms, resolve, reject };
      this.sleepers.push(entry);
      signal?.addEventListener(
        'abort',
        () => {
          this.sleepers = this.sleepers.filter((s) => s !== entry);
          reject(signal.reason);
        },
        { once: true },
      );
    });
  }

  /** Moves time forward, waking every sleeper whose time has come (in order). */
  async advance(ms: number): Promise<void> {
    const target = this.time + ms;
    for (;;) {
      const next = this.sleepers.filter((s) => s.at <= target).sort((a, b) => a.at - b.at)[0];
      if (!next) break;
      this.time = Math.max(this.time, next.at);
      this.sleepers = this.sleepers.filter((s) => s !== next);
      next.resolve();
      // Let the woken code run (and maybe sleep again) before the next one.
      for (let i = 0; i < 10; i++) await Promise.resolve();
      await new Promise((r) => setImmediate(r));
    }
    this.time = target;
  }

  get pendingSleeps(): number {
    return this.sleepers.length;
  }
}

/** Exponential backoff with jitter: attempt 0 -> ~initial, doubling up to max. */
export function backoffDelay(
  attempt: number,
  initialMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  const base = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  return Math.round(base / 2 + (random() * base) / 2);
}
