// What the operator must hear about a Service or VIP (skipped, a warning, not announced),
// told when it starts or changes and when it ends: a converged system logs nothing pass
// after pass.

export interface Notice {
  what: 'skipped' | 'warning' | 'withheld';
  /** The Service (namespace/name) or, for `withheld`, the VIP. */
  subject: string;
  /** A stable code; warnings have none and are told apart by their message. */
  reason: string | undefined;
  message: string;
}

const keyOf = (n: Notice) => `${n.what}\u0000${n.subject}\u0000${n.reason ?? n.message}`;

export class NoticeBoard {
  private current = new Map<string, Notice>();

  /** Replaces the board with this pass's notices; returns what changed since the last one. */
  update(notices: readonly Notice[]): { appeared: Notice[]; cleared: Notice[] } {
    const next = new Map(notices.map((n) => [keyOf(n), n]));
    const appeared = [...next]
      .filter(([key, n]) => this.current.get(key)?.message !== n.message)
      .map(([, n]) => n);
    const cleared = [...this.current].filter(([key]) => !next.has(key)).map(([, n]) => n);
    this.current = next;
    return { appeared, cleared };
  }
}
