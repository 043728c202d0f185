// An in-memory BgpSpeaker with the adapter's semantics: the same validation (same
// errors, nothing applied on bad input), SPEAKER_UNAVAILABLE while "down" with desired
// state kept, and re-provisioning from desired state when it comes back.
import { EventEmitter } from 'node:events';
import { canonicalIp } from '../net/ip.ts';
import { BgpError } from './errors.ts';
import { normalizeAdvertisement, sameAdvertisement } from './gobgp-codec.ts';
import type {
  Advertisement,
  BgpGlobal,
  BgpPeerConfig,
  BgpSpeaker,
  PeerStatus,
  SessionState,
  SpeakerEvents,
} from './types.ts';
import { validateAdvertisements, validateGlobal, validatePeers } from './validate.ts';

interface FakeDaemon {
  global?: BgpGlobal;
  peers: BgpPeerConfig[];
  ads: Map<string, Advertisement>;
}

export class FakeBgpSpeaker implements BgpSpeaker {
  private up = true;
  private desiredGlobal: BgpGlobal | undefined;
  private desiredPeers: BgpPeerConfig[] = [];
  private peersDeclared = false;
  private desiredAds: Advertisement[] = [];
  private adsDeclared = false;
  /** What the "daemon" holds; lost when it restarts; shared by speakers attached to it. */
  private readonly box: { daemon: FakeDaemon };
  private get daemon(): FakeDaemon {
    return this.box.daemon;
  }
  private set daemon(d: FakeDaemon) {
    this.box.daemon = d;
  }
  private states = new Map<string, SessionState>();
  private readonly events = new EventEmitter();
  /** Every change that reached the daemon, for tests that count writes. */
  readonly log: string[] = [];
  closed = false;

  constructor(attachTo?: FakeBgpSpeaker) {
    this.box = attachTo ? attachTo.box : { daemon: { peers: [], ads: new Map() } };
    this.events.on('error', () => {});
  }

  connected(): boolean {
    return this.up;
  }

  on<E extends keyof SpeakerEvents>(event: E, listener: SpeakerEvents[E]): () => void {
    this.events.on(event, listener as (...args: unknown[]) => void);
    return () => this.events.off(event, listener as (...args: unknown[]) => void);
  }

  private requireUp(what: string): void {
    if (!this.up)
      throw new BgpError(
        'SPEAKER_UNAVAILABLE',
        `${what}: gobgpd is not connected (fake); kept, and applied when it is back`,
      );
  }

  async setGlobal(global: BgpGlobal): Promise<void> {
    validateGlobal(global);
    this.desiredGlobal = global;
    this.requireUp('set global');
    this.applyGlobal();
  }

  async setPeers(peers: readonly BgpPeerConfig[]): Promise<void> {
    validatePeers(peers);
    this.desiredPeers = peers.map((p) => ({ ...p, address: canonicalIp(p.address)! }));
    this.peersDeclared = true;
    this.requireUp('set peers');
    this.applyPeers();
  }

  async setAdvertisements(ads: readonly Advertisement[]): Promise<void> {
    validateAdvertisements(ads);
    this.desiredAds = ads.map(normalizeAdvertisement);
    this.adsDeclared = true;
    this.requireUp('set advertisements');
    this.applyAds();
  }

  async listPeers(): Promise<PeerStatus[]> {
    this.requireUp('list peers');
    return this.daemon.peers.map((p) => ({
      address: p.address,
      asn: p.asn,
      state: this.states.get(p.address) ?? 'active',
      adminDown: false,
      establishedSince: undefined,
      advertised: this.states.get(p.address) === 'established' ? this.daemon.ads.size : 0,
      received: 0,
      flops: 0,
    }));
  }

  async listAdvertisements(): Promise<Advertisement[]> {
    this.requireUp('list advertisements');
    return [...this.daemon.ads.values()];
  }

  /** Announced prefixes, synchronously, for assertions. */
  announced(): Map<string, Advertisement> {
    return new Map(this.daemon.ads);
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  // ---- test controls --------------------------------------------------------------------

  /** The daemon dies: state lost, calls fail until restart(). */
  crash(): void {
    this.up = false;
    this.daemon = { peers: [], ads: new Map() };
    this.events.emit('connection', false);
  }

  /** The daemon is back, empty; the adapter re-provisions from desired state. */
  restart(): void {
    this.up = true;
    const started = !this.daemon.global && !!this.desiredGlobal;
    this.applyGlobal();
    this.applyPeers();
    if (this.adsDeclared) this.applyAds();
    this.events.emit('connection', true);
    this.events.emit('provisioned', {
      peers: this.desiredPeers.length,
      paths: this.desiredAds.length,
      started,
      durationMs: 0,
    });
  }

  setPeerState(address: string, state: SessionState): void {
    this.states.set(address, state);
    this.events.emit('peer', { address, state });
  }

  private applyGlobal(): void {
    if (this.desiredGlobal && !this.daemon.global) {
      this.daemon.global = this.desiredGlobal;
      this.log.push(`start ${this.desiredGlobal.asn}`);
    }
  }

  private applyPeers(): void {
    // As gobgp-speaker.ts: gobgpd's peers are left alone until the caller declares its own.
    if (!this.daemon.global || !this.peersDeclared) return;
    const before = JSON.stringify(this.daemon.peers);
    this.daemon.peers = [...this.desiredPeers];
    if (JSON.stringify(this.daemon.peers) !== before)
      this.log.push(`peers ${this.daemon.peers.map((p) => p.address).join(',')}`);
  }

  private applyAds(): void {
    if (!this.daemon.global) {
      if (this.desiredAds.length)
        throw new BgpError('SPEAKER_ERROR', 'advertisements need the global BGP configuration first');
      return;
    }
    const want = new Map(this.desiredAds.map((a) => [a.prefix, a]));
    for (const [prefix, ad] of want) {
      const have = this.daemon.ads.get(prefix);
      if (!have || !sameAdvertisement(have, ad)) {
        this.daemon.ads.set(prefix, ad);
        this.log.push(`announce ${prefix}${ad.communities.length ? ` ${ad.communities.join(' ')}` : ''}`);
      }
    }
    for (const prefix of [...this.daemon.ads.keys()]) {
      if (!want.has(prefix)) {
        this.daemon.ads.delete(prefix);
        this.log.push(`withdraw ${prefix}`);
      }
    }
  }
}
