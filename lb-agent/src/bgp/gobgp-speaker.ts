// BgpSpeaker over a co-located gobgpd (GoBGP 3.10) on a unix socket.
//
// Desired state (global config, peers, advertisements) lives here; gobgpd keeps nothing
// across its own restarts. A supervisor watches the speaker (WatchEvent stream plus a
// periodic GetBgp probe), reconnects with backoff, and after every (re)connect
// re-provisions everything from desired state. Route changes are incremental AddPath /
// DeletePath only: never a config rewrite, never a peer reset.
import { EventEmitter } from 'node:events';
import { canonicalIp } from '../net/ip.ts';
import { backoffDelay, type Clock, systemClock } from '../util/clock.ts';
import { type Logger, silentLogger } from '../util/log.ts';
import { BgpError } from './errors.ts';
import { GobgpApi, type Wire } from './gobgp-api.ts';
import {
  FAMILY_WIRE,
  globalToWire,
  isLocalPath,
  normalizeAdvertisement,
  POLICY,
  type PolicyWant,
  pathFromWire,
  pathToWire,
  peerConfigFromWire,
  peerStatusFromWire,
  peerToWire,
  policySummary,
  policyToWire,
  sameAdvertisement,
  samePeerConfig,
  sessionStateFromWire,
  wantedPolicySummary,
} from './gobgp-codec.ts';
import type {
  Advertisement,
  BgpGlobal,
  BgpPeerConfig,
  BgpSpeaker,
  Family,
  PeerStatus,
  SpeakerEvents,
} from './types.ts';
import { validateAdvertisements, validateGlobal, validatePeers } from './validate.ts';

export interface GobgpSpeakerOptions {
  /** unix:///path/to/gobgp.sock */
  target: string;
  clock?: Clock;
  logger?: Logger;
  callTimeoutMs?: number;
  reconnectInitialMs?: number;
  reconnectMaxMs?: number;
  /** How often a GetBgp probe checks the speaker while the event stream is quiet. */
  healthIntervalMs?: number;
}

export class GobgpSpeaker implements BgpSpeaker {
  private readonly api: GobgpApi;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly opts: Required<Omit<GobgpSpeakerOptions, 'clock' | 'logger' | 'target'>>;
  private desiredGlobal: BgpGlobal | undefined;
  private desiredPeers: BgpPeerConfig[] = [];
  private desiredAds = new Map<string, Advertisement>();
  /**
   * Until the caller has said what to announce, the paths gobgpd holds are left alone: a
   * restarted agent adopts them instead of withdrawing everything before its first pass.
   */
  private adsDeclared = false;
  /**
   * The same for peers (and the policies that name them): until the caller has said who
   * they are, gobgpd's are left alone. An agent that learns its peers late (from
   * PortlbBgpPeer objects) would otherwise delete them on connect, resetting sessions.
   */
  private peersDeclared = false;
  /** What gobgpd announces, as read back at the last provision and patched since. */
  private announced = new Map<string, Advertisement>();
  private isConnected = false;
  private chain: Promise<unknown> = Promise.resolve();
  private readonly events = new EventEmitter();
  private readonly stop = new AbortController();
  private loop: Promise<void> | undefined;
  /** Changes sent to gobgpd (StartBgp, peer and path writes): zero when adopting a converged speaker. */
  writes = 0;

  constructor(options: GobgpSpeakerOptions) {
    this.api = new GobgpApi({ target: options.target, timeoutMs: options.callTimeoutMs ?? 5000 });
    this.clock = options.clock ?? systemClock;
    this.log = options.logger ?? silentLogger;
    this.opts = {
      callTimeoutMs: options.callTimeoutMs ?? 5000,
      reconnectInitialMs: options.reconnectInitialMs ?? 200,
      reconnectMaxMs: options.reconnectMaxMs ?? 2000,
      healthIntervalMs: options.healthIntervalMs ?? 2000,
    };
    // Errors are reported through the 'error' event; never let one crash the process.
    this.events.on('error', () => {});
  }

  /** Starts supervising the speaker (connect, provision, watch, reconnect). */
  start(): this {
    this.loop ??= this.supervise();
    return this;
  }

  connected(): boolean {
    return this.isConnected;
  }

  on<E extends keyof SpeakerEvents>(event: E, listener: SpeakerEvents[E]): () => void {
    this.events.on(event, listener as (...args: unknown[]) => void);
    return () => this.events.off(event, listener as (...args: unknown[]) => void);
  }

  // ---- declarative API ------------------------------------------------------------------

  async setGlobal(global: BgpGlobal): Promise<void> {
    validateGlobal(global);
    this.desiredGlobal = {
      ...global,
      routerId: global.routerId,
      listenAddresses: [...global.listenAddresses],
    };
    await this.serialized('set global', async () => {
      await this.syncGlobal();
    });
  }

  async setPeers(peers: readonly BgpPeerConfig[]): Promise<void> {
    validatePeers(peers);
    this.desiredPeers = peers.map((p) => ({ ...p, address: canonicalIp(p.address)! }));
    this.peersDeclared = true;
    await this.serialized('set peers', async () => {
      // The policy names the eBGP peers: in place before a new one is added.
      await this.syncPolicies();
      await this.syncPeers();
    });
  }

  async setAdvertisements(ads: readonly Advertisement[]): Promise<void> {
    validateAdvertisements(ads);
    this.desiredAds = new Map(ads.map((a) => normalizeAdvertisement(a)).map((a) => [a.prefix, a]));
    // The first declaration reads back what gobgpd holds (adopted until now).
    const first = !this.adsDeclared;
    this.adsDeclared = true;
    await this.serialized('set advertisements', () => this.syncPaths(first));
  }

  async listPeers(): Promise<PeerStatus[]> {
    return (await this.api.list('ListPeer', {})).map((r) => peerStatusFromWire(r.peer ?? {}));
  }

  async listAdvertisements(): Promise<Advertisement[]> {
    return [...(await this.readPaths()).values()];
  }

  async close(): Promise<void> {
    this.stop.abort(new Error('speaker closed'));
    await this.loop?.catch(() => {});
    this.api.close();
  }

  // ---- reconciliation -------------------------------------------------------------------

  private write(method: string, request: Wire): Promise<Wire> {
    this.writes++;
    return this.api.unary(method, request);
  }

  /** Runs one RPC sequence at a time; fails fast (desired state kept) while disconnected. */
  private serialized(what: string, fn: () => Promise<void>): Promise<void> {
    const run = this.chain.then(async () => {
      if (!this.isConnected) {
        throw new BgpError(
          'SPEAKER_UNAVAILABLE',
          `${what}: gobgpd is not connected (${this.api.target}); kept, and applied when it is back`,
        );
      }
      await fn();
    });
    this.chain = run.catch(() => {});
    return run;
  }

  private async syncGlobal(): Promise<boolean> {
    const want = this.desiredGlobal;
    if (!want) return false;
    const { global } = await this.api.unary('GetBgp', {});
    if (!global?.asn) {
      // Only when not started: a second StartBgp wipes the RIB while routes stay announced.
      await this.write('StartBgp', { global: globalToWire(want) });
      this.announced.clear();
      this.log.info({ asn: want.asn, routerId: want.routerId }, 'started BGP on the speaker');
      return true;
    }
    if (global.asn !== want.asn || global.router_id !== want.routerId) {
      throw new BgpError(
        'ASN_MISMATCH',
        `gobgpd runs AS ${global.asn} router-id ${global.router_id}, but AS ${want.asn} router-id ${want.routerId} is configured: restart the speaker to change them`,
      );
    }
    return false;
  }

  private policyWant(): PolicyWant | undefined {
    const g = this.desiredGlobal;
    if (!g || !this.peersDeclared) return undefined;
    return {
      ownAsn: g.asn,
      ebgpPeers: this.desiredPeers.filter((p) => p.asn !== g.asn).map((p) => p.address),
    };
  }

  /** Import nothing, export only our own paths (gobgp-codec.ts, routing policy). */
  private async syncPolicies(): Promise<void> {
    const want = this.policyWant();
    if (!want) return;
    const [exp] = await this.api.list('ListPolicyAssignment', { name: 'global', direction: 'EXPORT' });
    const [imp] = await this.api.list('ListPolicyAssignment', { name: 'global', direction: 'IMPORT' });
    const sets = await this.api.list('ListDefinedSet', { defined_type: 'NEIGHBOR', name: '' });
    const ebgp = sets.map((s) => s.defined_set).find((d) => d?.name === POLICY.ebgpPeers);
    if (policySummary(exp?.assignment, imp?.assignment, ebgp) === wantedPolicySummary(want)) return;
    const { definitions, assignments } = policyToWire(want);
    await this.write('SetPolicies', definitions);
    for (const assignment of assignments) await this.write('SetPolicyAssignment', { assignment });
    this.log.info(
      { ebgpPeers: want.ebgpPeers.length },
      'routing policy set: import nothing, export only our own paths',
    );
  }

  private async syncPeers(): Promise<void> {
    if (!this.desiredGlobal || !this.peersDeclared) return;
    const listed = await this.api.list('ListPeer', {});
    const actual = new Map(listed.map((r) => peerConfigFromWire(r.peer ?? {})).map((p) => [p.address, p]));
    const problems: string[] = [];
    const attempt = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        problems.push(`${what}: ${(err as Error).message}`);
      }
    };
    for (const p of this.desiredPeers) {
      const have = actual.get(p.address);
      if (!have) {
        await attempt(`add peer ${p.address}`, () => this.write('AddPeer', { peer: peerToWire(p) }));
        this.log.info({ peer: p.address, asn: p.asn }, 'added BGP peer');
      } else if (!samePeerConfig(have, p)) {
        await attempt(`update peer ${p.address}`, () => this.write('UpdatePeer', { peer: peerToWire(p) }));
        this.log.info({ peer: p.address, asn: p.asn }, 'updated BGP peer');
      }
    }
    const wanted = new Set(this.desiredPeers.map((p) => p.address));
    for (const address of actual.keys()) {
      if (wanted.has(address)) continue;
      await attempt(`delete peer ${address}`, () => this.write('DeletePeer', { address }));
      this.log.info({ peer: address }, 'deleted BGP peer');
    }
    if (problems.length) throw new BgpError('SPEAKER_ERROR', problems.join('; '), { problems });
  }

  /** Our own paths as gobgpd holds them, by prefix. */
  private async readPaths(): Promise<Map<string, Advertisement>> {
    const out = new Map<string, Advertisement>();
    for (const family of ['ipv4', 'ipv6'] as Family[]) {
      const dests = await this.api.list('ListPath', { table_type: 'GLOBAL', family: FAMILY_WIRE[family] });
      for (const { destination } of dests) {
        for (const path of (destination?.paths ?? []) as Wire[]) {
          if (isLocalPath(path)) out.set(destination.prefix, pathFromWire(path, destination.prefix));
        }
      }
    }
    return out;
  }

  private async syncPaths(readBack: boolean): Promise<void> {
    const global = this.desiredGlobal;
    if (!global) {
      if (this.desiredAds.size)
        throw new BgpError('SPEAKER_ERROR', 'advertisements need the global BGP configuration first');
      return;
    }
    if (readBack) this.announced = await this.readPaths();
    const problems: string[] = [];
    for (const [prefix, ad] of this.desiredAds) {
      const have = this.announced.get(prefix);
      if (have && sameAdvertisement(have, ad)) continue;
      try {
        // AddPath on a prefix we already announce replaces the path: an attribute change
        // (e.g. the graceful-shutdown community) is one AddPath, never a withdraw first.
        await this.write('AddPath', { table_type: 'GLOBAL', path: pathToWire(ad, global.asn) });
        this.announced.set(prefix, ad);
      } catch (err) {
        problems.push(`announce ${prefix}: ${(err as Error).message}`);
      }
    }
    for (const [prefix, have] of [...this.announced]) {
      if (this.desiredAds.has(prefix)) continue;
      try {
        const path = pathToWire(have, global.asn);
        await this.write('DeletePath', { table_type: 'GLOBAL', family: path.family, path });
        this.announced.delete(prefix);
      } catch (err) {
        problems.push(`withdraw ${prefix}: ${(err as Error).message}`);
      }
    }
    if (problems.length) throw new BgpError('SPEAKER_ERROR', problems.join('; '), { problems });
  }

  /** Everything, from desired state: after a (re)connect, gobgpd may have lost it all. */
  private async provision(): Promise<void> {
    const t0 = performance.now();
    const started = await this.syncGlobal();
    if (!this.desiredGlobal) return;
    await this.syncPolicies();
    await this.syncPeers();
    if (this.adsDeclared) await this.syncPaths(true);
    else this.announced = await this.readPaths();
    const summary = {
      peers: this.desiredPeers.length,
      paths: this.desiredAds.size,
      started,
      durationMs: Math.round((performance.now() - t0) * 100) / 100,
    };
    this.log.info(summary, 'speaker provisioned from desired state');
    this.events.emit('provisioned', summary);
  }

  // ---- supervision ----------------------------------------------------------------------

  private setConnected(value: boolean): void {
    if (this.isConnected === value) return;
    this.isConnected = value;
    this.log[value ? 'info' : 'warn'](
      { target: this.api.target },
      value ? 'speaker connected' : 'speaker lost',
    );
    this.events.emit('connection', value);
  }

  private async supervise(): Promise<void> {
    const signal = this.stop.signal;
    let attempt = 0;
    while (!signal.aborted) {
      try {
        await this.api.waitForReady(this.opts.callTimeoutMs);
        // Inside the chain: callers queued meanwhile run after provisioning, and see it connected.
        const provisioned = this.chain.then(async () => {
          await this.provision();
          this.setConnected(true);
        });
        this.chain = provisioned.catch(() => {});
        await provisioned;
        attempt = 0;
        await this.watchUntilLost(signal);
      } catch (err) {
        if (!signal.aborted) {
          this.log.warn(
            { err: (err as Error).message },
            'speaker unavailable or provisioning failed; retrying',
          );
          this.events.emit('error', err);
        }
      }
      this.setConnected(false);
      if (signal.aborted) break;
      await this.clock
        .sleep(backoffDelay(attempt++, this.opts.reconnectInitialMs, this.opts.reconnectMaxMs), signal)
        .catch(() => {});
    }
  }

  /** Follows peer events until the speaker goes away (stream ends, or a probe fails). */
  private watchUntilLost(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const probe = new AbortController();
      const stream = this.api.stream('WatchEvent', { peer: {} });
      let finished = false;
      const finish = (why: string) => {
        if (finished) return;
        finished = true;
        this.log.debug({ why }, 'speaker watch ended');
        probe.abort();
        stream.removeAllListeners('data');
        stream.on('error', () => {});
        stream.cancel();
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = () => finish('closed');
      signal.addEventListener('abort', onAbort, { once: true });
      stream.on('data', (ev: Wire) => {
        const peer = ev.peer?.peer;
        if (!peer) return;
        const address = canonicalIp(peer.conf?.neighbor_address ?? peer.state?.neighbor_address) ?? '';
        this.events.emit('peer', { address, state: sessionStateFromWire(peer.state?.session_state) });
      });
      stream.on('error', (err: Error) => finish(`stream error: ${err.message}`));
      stream.on('end', () => finish('stream ended'));
      void (async () => {
        while (!finished) {
          try {
            await this.clock.sleep(this.opts.healthIntervalMs, probe.signal);
          } catch {
            return;
          }
          try {
            const { global } = await this.api.unary('GetBgp', {});
            // Started by us but now blank: gobgpd restarted between two probes.
            if (this.desiredGlobal && !global?.asn) finish('speaker restarted');
          } catch (err) {
            finish(`probe failed: ${(err as Error).message}`);
          }
        }
      })();
    });
  }
}
