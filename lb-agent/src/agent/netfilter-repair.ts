// The periodic rewrite of portlb's netfilter objects, which undoes an external flush
// (`iptables -F`, a firewall reload). It runs in its own lane, not inside the data plane's
// pass: with legacy iptables and 1,000 VIPs the rewrite took 15-33 s in UML, and every
// change to IPVS waited behind it. A pass whose rules changed still writes them itself,
// in order (before the VIP addresses); NetfilterManager serialises the two writers.
import type { Logger } from 'pino';
import { describeError, errorCode } from '../errors.ts';
import type { Clock } from '../util/clock.ts';
import type { AgentMetrics } from './metrics.ts';
import type { NetfilterManager } from './netfilter.ts';

export interface NetfilterRepairOptions {
  netfilter: NetfilterManager;
  intervalMs: number;
  clock: Clock;
  logger: Logger;
  metrics?: AgentMetrics;
}

export class NetfilterRepair {
  private readonly stop = new AbortController();
  private readonly o: NetfilterRepairOptions;

  constructor(options: NetfilterRepairOptions) {
    this.o = options;
  }

  start(): this {
    void this.loop();
    return this;
  }

  close(): void {
    this.stop.abort();
  }

  private async loop(): Promise<void> {
    const { clock, netfilter, logger } = this.o;
    while (!this.stop.signal.aborted) {
      try {
        await clock.sleep(this.o.intervalMs, this.stop.signal);
      } catch {
        return;
      }
      const t0 = clock.monotonic();
      try {
        const lost = await netfilter.repair();
        // Someone else's doing (a flush, a firewall reload): the operator should know.
        if (lost) {
          this.o.metrics?.netfilterWrites.inc({ kind: 'repaired' });
          logger.warn(
            { lost, durationMs: Math.round(clock.monotonic() - t0) },
            'netfilter rules were changed from outside portlb; rewritten',
          );
        }
      } catch (err) {
        // The rules the pass applied stay what is wanted; the next repair or change tries again.
        this.o.metrics?.errors.inc({ code: errorCode(err), step: 'netfilter' });
        logger.warn({ err: describeError(err) }, 'netfilter repair failed; retried at the next interval');
      }
    }
  }
}
