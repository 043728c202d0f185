// What the operator must hear about a Service (skipped, withheld, a warning), told when it
// starts or changes and when it ends: a converged system logs nothing pass after pass.

export interface Notice {
  service: string;
  /** Kind of notice plus its reason, e.g. `skipped:PortConflict`. */
  kind: string;
  message: string;
}

export interface NoticeChanges {
  appeared: Notice[];
  cleared: { service: string; kind: string }[];
}

const keyOf = (n: { service: string; kind: string }) => `${n.service}\u0000${n.kind}`;

export class NoticeBoard {
  private current = new Map<string, Notice>();

  /** Replaces the board with this pass's notices; returns what changed since the last one. */
  update(notices: readonly Notice[]): NoticeChanges {
    const next = new Map<string, Notice>();
    const appeared: Notice[] = [];
    for (const n of notices) {
      const key = keyOf(n);
      if (next.has(key)) continue;
      next.set(key, n);
      if (this.current.get(key)?.message !== n.message) appeared.push(n);
    }
    const cleared = [...this.current.entries()]
      .filter(([key]) => !next.has(key))
      .map(([, n]) => ({ service: n.service, kind: n.kind }));
    this.current = next;
    return { appeared, cleared };
  }

  get size(): number {
    return this.current.size;
  }
}
