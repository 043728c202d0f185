// List and watch of one resource into a cache of lean objects (objects.ts): a paginated
// list, then a watch from its resourceVersion with bookmarks; 410 Gone (as a status or
// an ERROR event) relists; any other failure restarts with backoff while the cache keeps
// the last known objects. Each object is transformed as it arrives: the raw JSON is
// released at once.
import { describeError } from '../errors.ts';
import { backoffDelay, type Clock, deadlineSignal } from '../util/clock.ts';
import { type Logger, silentLogger } from '../util/log.ts';
import { type Json, KubeApiError, type KubeClient } from './client.ts';

export interface ReflectorOptions<T> {
  name: string;
  client: KubeClient;
  /** Collection path, e.g. /api/v1/services. */
  path: string;
  fieldSelector?: string;
  labelSelector?: string;
  transform: (raw: Json) => T;
  key: (item: T) => string;
  /** After every change: one watch event's object before and after it, or nothing after a (re)list. */
  onChange: (change?: { before: T | undefined; after: T | undefined }) => void;
  clock: Clock;
  logger?: Logger;
  pageSize?: number;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** Deadline of one list page. */
  listTimeoutMs?: number;
}

class Gone extends Error {}

export class Reflector<T> {
  private readonly o: ReflectorOptions<T>;
  private readonly log: Logger;
  private readonly store = new Map<string, T>();
  private listed = false;
  private watching = false;
  private stopper = new AbortController();
  private loop: Promise<void> | undefined;
  lastError: string | undefined;
  restarts = 0;
  relists = 0;

  constructor(o: ReflectorOptions<T>) {
    this.o = o;
    this.log = (o.logger ?? silentLogger).child({ informer: o.name });
  }

  /** True once a first list completed: from then on the cache is a real view. */
  synced(): boolean {
    return this.listed;
  }

  /** The watch is open (false while restarting; the cache keeps the last view). */
  connected(): boolean {
    return this.watching;
  }

  list(): T[] {
    return [...this.store.values()];
  }

  get(key: string): T | undefined {
    return this.store.get(key);
  }

  get size(): number {
    return this.store.size;
  }

  start(): void {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopper.abort();
    await this.loop?.catch(() => {});
  }

  private async run(): Promise<void> {
    const signal = this.stopper.signal;
    let attempt = 0;
    let rv: string | undefined;
    while (!signal.aborted) {
      try {
        if (rv === undefined) {
          rv = await this.relist(signal);
          attempt = 0;
        }
        rv = await this.watch(rv, signal, () => {
          attempt = 0;
        });
      } catch (err) {
        this.watching = false;
        if (signal.aborted) break;
        if (err instanceof Gone || (err instanceof KubeApiError && err.status === 410)) {
          this.log.info('resourceVersion too old (410): relisting');
          rv = undefined;
          continue;
        }
        this.lastError = describeError(err);
        const delay = backoffDelay(attempt++, this.o.backoffInitialMs ?? 500, this.o.backoffMaxMs ?? 30_000);
        this.log.warn(
          { err: this.lastError, retryInMs: delay },
          'watch failed; keeping the last known objects and restarting',
        );
        this.restarts++;
        await this.o.clock.sleep(delay, signal).catch(() => {});
      }
    }
    this.watching = false;
  }

  /** A full list in pages; replaces the cache; returns the list's resourceVersion. */
  private async relist(signal: AbortSignal): Promise<string> {
    const fresh = new Map<string, T>();
    let next: string | undefined;
    let rv = '';
    do {
      const page = await this.o.client.request('GET', this.o.path, {
        query: {
          limit: this.o.pageSize ?? 500,
          continue: next,
          fieldSelector: this.o.fieldSelector,
          labelSelector: this.o.labelSelector,
        },
        signal: AbortSignal.any([signal, deadlineSignal(this.o.listTimeoutMs ?? 60_000)]),
      });
      for (const raw of (page?.items ?? []) as Json[]) {
        const item = this.o.transform(raw);
        fresh.set(this.o.key(item), item);
      }
      next = page?.metadata?.continue || undefined;
      rv = String(page?.metadata?.resourceVersion ?? '');
    } while (next);
    this.store.clear();
    for (const [k, v] of fresh) this.store.set(k, v);
    this.listed = true;
    this.relists++;
    this.lastError = undefined;
    this.o.onChange();
    return rv;
  }

  /** Follows changes from `rv` until the server ends the watch; returns the last resourceVersion seen. */
  private async watch(rv: string, signal: AbortSignal, opened: () => void): Promise<string> {
    // The server ends a watch after timeoutSeconds; a spread keeps replicas from
    // reconnecting in step. A watch with no byte for longer than that is dead.
    const timeoutSeconds = 300 + Math.floor(Math.random() * 300);
    const idle = new AbortController();
    let idleTimer = setTimeout(() => idle.abort(), (timeoutSeconds + 60) * 1000);
    const watchSignal = AbortSignal.any([signal, idle.signal]);
    let last = rv;
    try {
      for await (const ev of this.o.client.watch(
        this.o.path,
        {
          resourceVersion: rv,
          allowWatchBookmarks: true,
          timeoutSeconds,
          fieldSelector: this.o.fieldSelector,
          labelSelector: this.o.labelSelector,
        },
        watchSignal,
        () => {
          this.watching = true;
          this.lastError = undefined;
          opened();
        },
      )) {
        clearTimeout(idleTimer);
        idleTimer = setTimeout(() => idle.abort(), (timeoutSeconds + 60) * 1000);
        if (ev.type === 'ERROR') {
          if (ev.object?.code === 410) throw new Gone('410');
          throw new KubeApiError(
            ev.object?.code ?? 500,
            ev.object?.reason ?? '',
            `watch: ${ev.object?.message ?? 'error event'}`,
          );
        }
        const nextRv = ev.object?.metadata?.resourceVersion;
        if (typeof nextRv === 'string' && nextRv) last = nextRv;
        if (ev.type === 'BOOKMARK') continue;
        const item = this.o.transform(ev.object);
        const key = this.o.key(item);
        this.log.trace({ type: ev.type, key, resourceVersion: nextRv }, 'watch event');
        const before = this.store.get(key);
        if (ev.type === 'DELETED') this.store.delete(key);
        else this.store.set(key, item);
        this.o.onChange({ before, after: ev.type === 'DELETED' ? undefined : item });
      }
    } finally {
      clearTimeout(idleTimer);
    }
    if (idle.signal.aborted && !signal.aborted) throw new Error('watch went silent');
    return last;
  }
}
