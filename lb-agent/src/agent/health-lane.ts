// The agent's side of the health checks: the checker with the real probes, and what a
// result means to the operator: a log line when a backend changes state or its check
// starts or stops being unable to run (never per probe), metrics, an Event on the
// Service, and a sync pass so the new weight reaches the kernel.
import type { Logger } from 'pino';
import type { HealthTarget } from '../core/types.ts';
import { HealthChecker, type HealthTransition } from '../health/checker.ts';
import { type Prober, probe } from '../health/probe.ts';
import type { Clock } from '../util/clock.ts';
import type { AgentMetrics } from './metrics.ts';

export interface HealthLaneOptions {
  clock: Clock;
  logger: Logger;
  metrics: AgentMetrics;
  nodeName: string;
  /** A backend changed state: the next pass must apply its weight. */
  changed: () => void;
  /** An Event on the Service (Kubernetes mode). */
  event?: (service: string, type: 'Normal' | 'Warning', reason: string, message: string) => void;
  prober?: Prober;
  concurrency?: number;
}

const name = (t: HealthTarget) => `${t.family === 'ipv6' ? `[${t.address}]` : t.address}:${t.port}`;

export class HealthLane {
  readonly checker: HealthChecker;
  private readonly o: HealthLaneOptions;
  /** Targets whose check cannot run from here (logged once when it starts and when it ends). */
  private readonly erroring = new Set<string>();

  constructor(options: HealthLaneOptions) {
    this.o = options;
    this.checker = new HealthChecker({
      prober: options.prober ?? probe,
      clock: options.clock,
      concurrency: options.concurrency,
      onTransition: (t) => this.transition(t),
      onProbe: (target, result) => {
        options.metrics.healthChecks.inc({ result: result.outcome });
        options.logger.debug(
          { service: target.service, backend: name(target), outcome: result.outcome, detail: result.detail },
          'health probe',
        );
        const key = `${target.service}|${target.address}|${target.port}`;
        if (result.outcome === 'error' && !this.erroring.has(key)) {
          this.erroring.add(key);
          options.logger.warn(
            { service: target.service, backend: name(target), detail: result.detail },
            'health check cannot run from this node (not counted against the backend): check routes and permissions',
          );
        } else if (result.outcome !== 'error' && this.erroring.delete(key)) {
          options.logger.info({ service: target.service, backend: name(target) }, 'health check runs again');
        }
      },
    });
  }

  private transition(t: HealthTransition): void {
    const { logger, metrics, nodeName } = this.o;
    metrics.healthTransitions.inc({ to: t.to });
    const backend = name(t.target);
    if (t.to === 'down') {
      logger.warn(
        { service: t.target.service, backend, detail: t.detail },
        'backend failed its health check: weight 0',
      );
      this.o.event?.(
        t.target.service,
        'Warning',
        'BackendUnhealthy',
        `node ${nodeName}: backend ${backend} failed its health check (${t.detail}); no new connections from this node`,
      );
    } else if (t.to === 'up') {
      // A new backend passing is the normal case (10,000 of them at a start): debug only.
      logger[t.from === 'pending' ? 'debug' : 'info'](
        { service: t.target.service, backend, detail: t.detail, from: t.from },
        'backend passes its health check',
      );
      if (t.from === 'down')
        this.o.event?.(
          t.target.service,
          'Normal',
          'BackendHealthy',
          `node ${nodeName}: backend ${backend} passes its health check again`,
        );
    }
    this.o.changed();
  }

  /** Per-service healthy/total gauges, from the checker's state (at scrape time). */
  refreshMetrics(): void {
    this.o.metrics.setBackendHealth(this.checker.summary());
  }

  close(): void {
    this.checker.close();
  }
}
