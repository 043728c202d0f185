// Informers that survive. The client library's ListWatch stops for good on any error
// other than 410 (and reports stop() itself as an error); this wrapper restarts it with
// backoff, keeps the last known objects meanwhile, and says when it has synced.
import {
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  ListWatch,
  Watch,
} from '@kubernetes/client-node';
import { describeError } from '../errors.ts';
import { backoffDelay, type Clock, systemClock } from '../util/clock.ts';
import { type Logger, silentLogger } from '../util/log.ts';

export interface InformerOptions<T extends KubernetesObject> {
  name: string;
  kubeconfig: KubeConfig;
  /** Watch path, e.g. /api/v1/services. */
  path: string;
  list: () => Promise<KubernetesListObject<T>>;
  fieldSelector?: string;
  onChange: () => void;
  clock?: Clock;
  logger?: Logger;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
}

export class SupervisedInformer<T extends KubernetesObject> {
  private readonly opts: InformerOptions<T>;
  private readonly clock: Clock;
  private readonly log: Logger;
  private informer: ListWatch<T> | undefined;
  private listed = false;
  private healthy = false;
  private stopping = false;
  private attempt = 0;
  private restartTimer: AbortController | undefined;
  restarts = 0;
  lastError: string | undefined;

  constructor(opts: InformerOptions<T>) {
    this.opts = opts;
    this.clock = opts.clock ?? systemClock;
    this.log = (opts.logger ?? silentLogger).child({ informer: opts.name });
  }

  /** True once a first list succeeded: from then on the cache is a real view. */
  synced(): boolean {
    return this.listed;
  }

  /** False while the watch is broken and being restarted (the cache keeps the last view). */
  connected(): boolean {
    return this.healthy;
  }

  list(): readonly T[] {
    return this.informer?.list() ?? [];
  }

  start(): void {
    if (this.informer) return;
    const listFn = async () => {
      const result = await this.opts.list();
      // The label selector applies to watches only; ours select nothing, so no filtering here.
      this.listed = true;
      this.healthy = true;
      this.attempt = 0;
      return result;
    };
    const informer = new ListWatch<T>(
      this.opts.path,
      new Watch(this.opts.kubeconfig),
      listFn,
      false,
      undefined,
      this.opts.fieldSelector,
    );
    const changed = () => this.opts.onChange();
    informer.on('add', changed);
    informer.on('update', changed);
    informer.on('delete', changed);
    informer.on('connect', () => {
      if (this.listed) this.healthy = true;
    });
    informer.on('error', (err) => this.onError(err));
    this.informer = informer;
    void informer.start();
  }

  private onError(err: unknown): void {
    if (this.stopping) return; // stop() reports itself as an error
    this.healthy = false;
    this.lastError = describeError(err);
    const delay = backoffDelay(
      this.attempt++,
      this.opts.backoffInitialMs ?? 500,
      this.opts.backoffMaxMs ?? 30_000,
    );
    this.log.warn(
      { err: this.lastError, retryInMs: delay },
      'watch failed; keeping the last known objects and restarting',
    );
    this.restartTimer?.abort();
    const timer = new AbortController();
    this.restartTimer = timer;
    this.clock
      .sleep(delay, timer.signal)
      .then(() => {
        if (this.stopping || !this.informer) return;
        this.restarts++;
        void this.informer.start();
      })
      .catch(() => {});
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.restartTimer?.abort();
    await this.informer?.stop();
  }
}
