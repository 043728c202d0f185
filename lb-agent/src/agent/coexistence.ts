// Another IPVS user deleting portlb's services (kube-proxy in IPVS mode does, unless its
// --ipvs-exclude-cidrs covers portlb's pools): services this node had programmed, missing
// at the next read-back, in more than one read-back within a window. One disappearance
// is a person with ipvsadm; a pattern is a controller.
import type { Clock } from '../util/clock.ts';

export interface Suspicion {
  /** Services found missing within the window. */
  count: number;
  /** Read-backs that found some missing. */
  passes: number;
  example: string;
}

export class VanishDetector {
  private readonly clock: Clock;
  private readonly windowMs: number;
  private readonly minPasses: number;
  private events: { at: number; ids: string[] }[] = [];

  constructor(clock: Clock, options: { windowMs?: number; minPasses?: number } = {}) {
    this.clock = clock;
    this.windowMs = options.windowMs ?? 10 * 60_000;
    this.minPasses = options.minPasses ?? 2;
  }

  /** Records one pass's vanished services; a suspicion while the pattern holds. */
  observe(vanished: readonly string[]): Suspicion | undefined {
    const now = this.clock.monotonic();
    this.events = this.events.filter((e) => now - e.at <= this.windowMs);
    if (vanished.length) this.events.push({ at: now, ids: [...vanished] });
    if (this.events.length < this.minPasses) return undefined;
    return {
      count: this.events.reduce((n, e) => n + e.ids.length, 0),
      passes: this.events.length,
      example: this.events.at(-1)!.ids[0]!,
    };
  }

  /** Nothing vanished within the window. */
  quiet(): boolean {
    return this.events.length === 0;
  }
}
