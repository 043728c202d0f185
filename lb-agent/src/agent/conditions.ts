// Conditions of this node that an operator must hear about beyond one Service (another
// IPVS user deleting portlb's services, an API server dropping ipMode, a rejected
// services file): set while true, cleared when not, logged once on each change, shown by
// `portlb status`.
import type { Logger } from '../util/log.ts';

export interface Condition {
  severity: 'warning' | 'error';
  /** A stable code. */
  reason: string;
  message: string;
}

export class Conditions {
  private readonly current = new Map<string, Condition>();
  private readonly log: Logger;
  /** Called on every change (Events, metrics). */
  onChange: ((key: string, condition: Condition | undefined) => void) | undefined;

  constructor(log: Logger) {
    this.log = log;
  }

  set(key: string, c: Condition): void {
    const prev = this.current.get(key);
    if (prev && prev.reason === c.reason && prev.message === c.message) return;
    this.current.set(key, c);
    this.log[c.severity === 'error' ? 'error' : 'warn']({ condition: key, reason: c.reason }, c.message);
    this.onChange?.(key, c);
  }

  clear(key: string): void {
    const prev = this.current.get(key);
    if (!prev) return;
    this.current.delete(key);
    this.log.info({ condition: key, reason: prev.reason }, 'condition cleared');
    this.onChange?.(key, undefined);
  }

  get(key: string): Condition | undefined {
    return this.current.get(key);
  }

  list(): { what: string; subject: string; reason: string | undefined; message: string }[] {
    return [...this.current].map(([key, c]) => ({
      what: c.severity,
      subject: key,
      reason: c.reason,
      message: c.message,
    }));
  }
}
