// The BGP side of the agent in its own terms. GoBGP's protos never leave the adapter
// (gobgp-speaker.ts); the agent, the fake and the tests speak only these types.
import type { Family } from '../net/ip.ts';

export type { Family };

export interface BgpGlobal {
  asn: number;
  routerId: string;
  /** TCP port gobgpd listens on for BGP; -1 for none (it then only connects out). */
  listenPort: number;
  /** Addresses to listen on when listenPort is not -1 (empty: all). */
  listenAddresses: string[];
}

export interface GracefulRestartConfig {
  /** Seconds the router keeps our routes after we vanish without a Cease. */
  restartTime: number;
}

export interface BgpPeerConfig {
  address: string;
  asn: number;
  /** Router's BGP port (default 179). */
  port: number;
  /** TCP MD5 password (RFC 2385). A secret: never logged, never returned by listings. */
  password: string | undefined;
  /** Seconds; 0 or at least 3 (RFC 4271). */
  holdTime: number;
  keepaliveInterval: number;
  /** TTL for eBGP sessions across routers; undefined for directly connected. */
  ebgpMultihopTtl: number | undefined;
  gracefulRestart: GracefulRestartConfig | undefined;
  families: Family[];
  localAddress: string | undefined;
  /** Only accept connections, never dial. */
  passive: boolean;
  description: string | undefined;
}

export type Origin = 'igp' | 'egp' | 'incomplete';

/** One prefix we announce (a VIP /32 or /128), with its path attributes. */
export interface Advertisement {
  /** "203.0.113.10/32" */
  prefix: string;
  /** undefined: "my address on the session" (what an LB replica wants). */
  nextHop: string | undefined;
  origin: Origin;
  /** Standard communities as "asn:value", sorted. */
  communities: string[];
  localPref: number | undefined;
  med: number | undefined;
  /** Our own ASN prepended this many extra times (a lower preference any router honours). */
  asPathPrepend: number;
}

/** An advertisement with what an LB replica wants unless told otherwise: next hop = its
 * session address, origin IGP, no communities, no extra AS-path length. */
export const advertisement = (prefix: string, extra: Partial<Advertisement> = {}): Advertisement => ({
  prefix,
  nextHop: undefined,
  origin: 'igp',
  communities: [],
  localPref: undefined,
  med: undefined,
  asPathPrepend: 0,
  ...extra,
});

export type SessionState =
  | 'unknown'
  | 'idle'
  | 'connect'
  | 'active'
  | 'opensent'
  | 'openconfirm'
  | 'established';

export interface PeerStatus {
  address: string;
  asn: number;
  state: SessionState;
  adminDown: boolean;
  /** Session uptime start (ms since epoch) when established. */
  establishedSince: number | undefined;
  /** Prefixes we advertise to this peer / accepted from it. */
  advertised: number;
  received: number;
  flops: number;
}

export interface SpeakerEvents {
  /** A peer's session state changed. */
  peer: (status: { address: string; state: SessionState }) => void;
  /** The speaker (gobgpd) became reachable, or was lost. */
  connection: (connected: boolean) => void;
  /** After a (re)connect, global config, peers and paths were provisioned from desired state. */
  provisioned: (summary: { peers: number; paths: number; started: boolean; durationMs: number }) => void;
  /** A background reconcile failed (it will be retried). */
  error: (err: Error) => void;
}

/**
 * A BGP speaker driven declaratively: the caller states what should be true, the speaker
 * makes it so and keeps it so across its own restarts.
 */
export interface BgpSpeaker {
  /** Global config (ASN, router id, listener). Starts BGP when the speaker has not. */
  setGlobal(global: BgpGlobal): Promise<void>;
  /** After it resolves, exactly these peers are configured (added, updated, deleted). */
  setPeers(peers: readonly BgpPeerConfig[]): Promise<void>;
  /** After it resolves, exactly these prefixes are announced, with these attributes. */
  setAdvertisements(ads: readonly Advertisement[]): Promise<void>;
  listPeers(): Promise<PeerStatus[]>;
  /** What the speaker announces now (read back from it). */
  listAdvertisements(): Promise<Advertisement[]>;
  connected(): boolean;
  on<E extends keyof SpeakerEvents>(event: E, listener: SpeakerEvents[E]): () => void;
  close(): Promise<void>;
}

/** RFC 8326: routers lower the preference of paths carrying it. */
export const GRACEFUL_SHUTDOWN = '65535:0';
