// The two sources of desired state (DESIGN.md decision 12). Both produce ServiceIntents
// for the same computeDesired.
import { type FSWatcher, watch } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { AgentConfig, Pool } from '../config/agent-config.ts';
import { blockInsidePools, type PoolLike, PoolRegistry } from '../config/ownership.ts';
import { ConfigError, parseYamlText } from '../config/validate.ts';
import { computeDesired, DesiredMemo, type DesiredState } from '../core/desired.ts';
import type { Endpoint, HealthView, NodeInfo, ServiceIntent } from '../core/types.ts';
import { describeError } from '../errors.ts';
import { parseServicesFile, type ServicesFile } from '../ipvs/services-file.ts';
import { destinationId } from '../ipvs/types.ts';
import type { Clock } from '../util/clock.ts';
import { type Logger, silentLogger } from '../util/log.ts';
import type { AgentMetrics } from './metrics.ts';
import type { DesiredSource } from './reconciler.ts';

/** A services file as intents: one intent per address service; fwmark ones are for `ipvs apply`. */
export function intentsFromFile(file: ServicesFile, source: string): ServiceIntent[] {
  const problems: string[] = [];
  const intents: ServiceIntent[] = [];
  for (const def of file.services) {
    const key = def.service.key;
    const at = `services[${def.index}]`;
    if (key.kind !== 'address') {
      problems.push(
        `${at}: fwmark services are for \`portlb ipvs apply\`; the agent announces VIPs (use vip and port)`,
      );
      continue;
    }
    const all = [...def.destinations, ...def.notReady];
    const forwards = new Set(all.map((d) => d.forward));
    if (forwards.size > 1)
      problems.push(
        `${at}.backends: the agent needs one forwarding method per service (got ${[...forwards].join(', ')})`,
      );
    if (all.some((d) => d.upperThreshold || d.lowerThreshold || (d.tunnelType && d.tunnelType !== 'ipip'))) {
      problems.push(`${at}.backends: thresholds and gue/gre tunnels are for \`portlb ipvs apply\` only`);
    }
    const ready = new Set(def.destinations.map(destinationId));
    const endpoints: Endpoint[] = all.map((d) => ({
      address: d.address,
      family: d.family,
      port: d.port,
      ready: ready.has(destinationId(d)),
      serving: ready.has(destinationId(d)),
      terminating: false,
      nodeName: undefined,
    }));
    intents.push({
      id: `file:${def.name ?? def.index}`,
      vips: [key.address],
      ports: [{ name: '', protocol: key.protocol, port: key.port, endpoints }],
      scheduler: def.service.scheduler,
      schedulerFlags: def.service.schedulerFlags,
      forwarding: ([...forwards][0] ?? 'nat') as ServiceIntent['forwarding'],
      persistence: def.service.persistence,
      trafficPolicy: 'Cluster',
      weights: new Map(all.map((d) => [`${d.address}|${d.port}`, d.weight])),
      announce: def.announce,
      warnings: [],
      ...(def.healthCheck ? { healthCheck: def.healthCheck } : {}),
    });
  }
  if (problems.length) throw new ConfigError('CONFIG_INVALID', source, problems);
  return intents;
}

export interface StandaloneSourceOptions {
  file: string;
  config: AgentConfig;
  nodeName: string;
  clock: Clock;
  logger?: Logger;
  metrics?: AgentMetrics;
  /** How often the file is checked besides change notifications (bind mounts miss them). */
  pollMs?: number;
}

/** The services file, reloaded on change; a bad new version is refused and the running one kept. */
export class StandaloneSource implements DesiredSource {
  readonly kind = 'standalone' as const;
  private readonly o: StandaloneSourceOptions;
  private readonly log: Logger;
  private current: { text: string; file: ServicesFile; intents: ServiceIntent[] } | undefined;
  private watcher: FSWatcher | undefined;
  private readonly stopping = new AbortController();
  private memo = new DesiredMemo();
  private error: string | undefined;
  private changed: (() => void) | undefined;
  /** The configuration's pools: what the agent owns (a configuration reload may change them). */
  readonly pools: PoolRegistry;

  constructor(o: StandaloneSourceOptions) {
    this.o = o;
    this.log = o.logger ?? silentLogger;
    this.pools = new PoolRegistry(o.config.pools);
  }

  /**
   * New pools from a reloaded configuration: refused (ConfigError) when the running
   * services file's pools no longer lie inside them.
   */
  setPools(pools: readonly Pool[], source: string): void {
    if (this.current) checkFilePools(this.current.file, { pools }, `${source}: ${this.o.file}`);
    if (!this.pools.set(pools)) return;
    this.memo = new DesiredMemo();
    // A file refused for reaching outside the old pools may fit the new ones.
    if (this.error && this.changed) void this.reload(this.changed);
  }

  /** Reads and validates the file; throws ConfigError (used at start, before anything is applied). */
  async load(): Promise<boolean> {
    const text = await readFile(this.o.file, 'utf8').catch((err) => {
      throw new ConfigError(
        'CONFIG_UNREADABLE',
        this.o.file,
        [`cannot read the file: ${(err as Error).message}`],
        { cause: err },
      );
    });
    // The running text again (typically: a bad edit reverted): nothing to apply, and
    // nothing wrong any more.
    if (this.current?.text === text) {
      this.error = undefined;
      return false;
    }
    const file = parseServicesFile(parseYamlText(text, this.o.file), this.o.file);
    checkFilePools(file, this.pools, this.o.file);
    const intents = intentsFromFile(file, this.o.file);
    this.current = { text, file, intents };
    this.error = undefined;
    return true;
  }

  private async reload(changed: () => void): Promise<void> {
    try {
      if (await this.load()) {
        this.log.info(
          { file: this.o.file, services: this.current?.intents.length },
          'services file reloaded',
        );
        changed();
      }
    } catch (err) {
      const message = describeError(err);
      if (message !== this.error) {
        this.log.error(
          { file: this.o.file, err: message },
          'services file rejected; the running state is kept',
        );
        this.o.metrics?.configReloadErrors.inc({ file: 'services' });
      }
      this.error = message;
    }
  }

  start(changed: () => void): void {
    this.changed = changed;
    // Watch the directory, not the file: editors, `mv` and ConfigMap updates replace the
    // file (a new inode), which a file watch stops seeing. Any event there triggers a
    // debounced re-read; an unchanged file is a no-op.
    let timer: NodeJS.Timeout | undefined;
    try {
      this.watcher = watch(path.dirname(this.o.file), () => {
        clearTimeout(timer);
        timer = setTimeout(() => void this.reload(changed), 200);
      });
      this.watcher.on('error', () => {});
    } catch {
      // Polling below covers it.
    }
    void (async () => {
      while (!this.stopping.signal.aborted) {
        try {
          await this.o.clock.sleep(this.o.pollMs ?? 2000, this.stopping.signal);
        } catch {
          return;
        }
        await this.reload(changed);
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    this.watcher?.close();
  }

  synced(): boolean {
    return this.current !== undefined;
  }

  healthy(): boolean {
    return this.error === undefined;
  }

  lastError(): string | undefined {
    return this.error;
  }

  async desired(health?: HealthView): Promise<DesiredState> {
    const node: NodeInfo = { name: this.o.nodeName, excluded: false, ready: true };
    return computeDesired(
      { services: this.current?.intents ?? [], health },
      node,
      { owns: this.pools.owns },
      this.memo,
    );
  }
}

/**
 * A services file's pools must lie inside the agent's: the file describes services, the
 * agent's configuration bounds what it owns (and may delete).
 */
export function checkFilePools(
  file: ServicesFile,
  config: { pools: readonly PoolLike[] },
  source: string,
): void {
  const outside = file.pools.filter((b) => !blockInsidePools(config.pools, b));
  if (outside.length) {
    throw new ConfigError(
      'CONFIG_INVALID',
      source,
      outside.map(
        (b) =>
          `pools: "${b.text}" is not inside the agent's pools (${config.pools.flatMap((p) => p.blocks.map((x) => x.text)).join(', ') || 'none'}): the agent's configuration bounds what it owns; add it there first`,
      ),
    );
  }
}
