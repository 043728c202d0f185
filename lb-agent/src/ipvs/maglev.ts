// A model of the kernel's Maglev scheduler (ip_vs_mh): the same hash, permutation,
// populate walk and lookup, so that tests (and operators) can predict the backend the
// kernel picks for a flow, and check that two destination lists build the same table.
//
// What the kernel does, in our words:
// - Every hash is the kernel's hsiphash (on 64-bit kernels SipHash-1-3 with 64-bit
//   words, truncated to 32 bits) of one little-endian u32: offset + port + address
//   (IPv6: the four 32-bit words XORed), under two fixed keys built into the module.
// - Each destination gets a starting slot (hash1 % M) and a stride (hash2 % (M-1) + 1).
// - Populate walks the destinations in the service's list order, round after round; each
//   claims its next free slot, `turns` times in a row (its last non-zero weight over the
//   weights' gcd). The list order therefore shapes the table: the kernel puts every
//   newly added destination at the head of the list.
// - A flow's slot is hash1(client address, client port if mh-port) % M. With mh-fallback
//   an unavailable (weight 0) destination's flows are re-hashed with growing offsets
//   until an available one is found.
// M is fixed when the module is built (CONFIG_IP_VS_MH_TAB_INDEX, 12 -> 4093 in Debian).
import { isIPv6 } from 'node:net';
import { ipToBigInt } from '../net/ip.ts';

/** Table sizes by CONFIG_IP_VS_MH_TAB_INDEX - 8 (the module's list of primes). */
export const MH_PRIMES = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071] as const;
/** Debian's kernels (and the default): CONFIG_IP_VS_MH_TAB_INDEX = 12. */
export const MH_TABLE_SIZE = 4093;

/** The module's two fixed keys (both words of each key are the same number). */
const KEY1 = [2654435761n, 2654435761n] as const;
const KEY2 = [2654446892n, 2654446892n] as const;
const MASK = (1n << 64n) - 1n;
const rol = (x: bigint, b: bigint) => ((x << b) | (x >> (64n - b))) & MASK;

/** The kernel's hsiphash on a 64-bit kernel: SipHash-1-3 over 64-bit words, low 32 bits. */
export function hsiphash(data: Uint8Array, key: readonly [bigint, bigint]): number {
  let v0 = 0x736f6d6570736575n ^ key[0];
  let v1 = 0x646f72616e646f6dn ^ key[1];
  let v2 = 0x6c7967656e657261n ^ key[0];
  let v3 = 0x7465646279746573n ^ key[1];
  const round = () => {
    v0 = (v0 + v1) & MASK;
    v1 = rol(v1, 13n) ^ v0;
    v0 = rol(v0, 32n);
    v2 = (v2 + v3) & MASK;
    v3 = rol(v3, 16n) ^ v2;
    v0 = (v0 + v3) & MASK;
    v3 = rol(v3, 21n) ^ v0;
    v2 = (v2 + v1) & MASK;
    v1 = rol(v1, 17n) ^ v2;
    v2 = rol(v2, 32n);
  };
  const word = (at: number, n: number) => {
    let w = 0n;
    for (let i = n - 1; i >= 0; i--) w = (w << 8n) | BigInt(data[at + i]!);
    return w;
  };
  const full = data.length - (data.length % 8);
  for (let at = 0; at < full; at += 8) {
    const m = word(at, 8);
    v3 ^= m;
    round();
    v0 ^= m;
  }
  // The last word: the remaining bytes, and the length in its top byte.
  const b = (BigInt(data.length & 0xff) << 56n) | word(full, data.length - full);
  v3 ^= b;
  round();
  v0 ^= b;
  v2 ^= 0xffn;
  round();
  round();
  round();
  return Number((v0 ^ v1 ^ v2 ^ v3) & 0xffffffffn);
}

const u32le = (v: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  return b;
};

/** The 32-bit address word the kernel hashes (IPv6: its four words XORed). */
function addressWord(address: string): number {
  let v = ipToBigInt(address);
  if (!isIPv6(address)) return Number(v);
  let folded = 0n;
  for (let i = 0; i < 4; i++, v >>= 32n) folded ^= v & 0xffffffffn;
  return Number(folded);
}

/**
 * ip_vs_mh_hashkey. The kernel folds an IPv6 address in network byte order and converts
 * the fold with ntohl, which equals folding the host-order words.
 */
export function mhHash(address: string, port: number, key: 'hash1' | 'hash2', offset = 0): number {
  const v = (offset + port + addressWord(address)) >>> 0;
  return hsiphash(u32le(v), key === 'hash1' ? KEY1 : KEY2);
}

/** A destination as the scheduler sees it, in the kernel's list order. */
export interface MhDestination {
  address: string;
  port: number;
  /** The current weight (0 = unavailable: only lookups care). */
  weight: number;
  /** The last non-zero weight (what populate uses); defaults to weight. */
  lastWeight?: number;
}

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));
const fls = (x: number): number => (x === 0 ? 0 : 32 - Math.clz32(x));

/** ip_vs_mh_populate: slot -> index into `dests` (-1 when empty), for a list in kernel order. */
export function mhTable(dests: readonly MhDestination[], size: number = MH_TABLE_SIZE): Int32Array {
  const table = new Int32Array(size).fill(-1);
  const last = dests.map((d) => d.lastWeight ?? d.weight);
  const g = last.filter((w) => w > 0).reduce((a, w) => (a > 0 ? gcd(w, a) : w), 0);
  if (g < 1) return table;
  const tabBits = Math.floor((MH_PRIMES.indexOf(size as (typeof MH_PRIMES)[number]) + 8) / 2);
  const shift = Math.max(0, fls(Math.floor(Math.max(...last) / g)) - tabBits);
  const setup = dests.map((d, i) => {
    const offset = mhHash(d.address, d.port, 'hash1') % size;
    const skip = (mhHash(d.address, d.port, 'hash2') % (size - 1)) + 1;
    const lw = last[i]!;
    return { perm: offset, skip, turns: Math.floor(lw / g) >> shift || (lw !== 0 ? 1 : 0) };
  });
  const used = new Uint8Array(size);
  let n = 0;
  while (n < size) {
    for (let i = 0; i < setup.length; i++) {
      const ds = setup[i]!;
      for (let t = 0; t < ds.turns; t++) {
        while (used[ds.perm]) {
          ds.perm += ds.skip;
          if (ds.perm >= size) ds.perm -= size;
        }
        used[ds.perm] = 1;
        table[ds.perm] = i;
        if (++n === size) return table;
      }
    }
  }
  return table;
}

/**
 * The destination (index into `dests`) the kernel schedules a new flow from this client
 * to, or undefined when none is available. `port` is the client's port when the service
 * has mh-port, else 0.
 */
export function mhLookup(
  table: Int32Array,
  dests: readonly MhDestination[],
  client: { address: string; port: number },
  options: { fallback: boolean } = { fallback: true },
): number | undefined {
  const size = table.length;
  const first = mhHash(client.address, client.port, 'hash1') % size;
  const i = table[first]!;
  if (i < 0) return undefined;
  if (dests[i]!.weight > 0) return i;
  if (!options.fallback) return undefined;
  for (let offset = 0; offset < size; offset++) {
    const roffset = (offset + first) % size;
    const j = table[mhHash(client.address, client.port, 'hash1', roffset) % size]!;
    if (j < 0) return undefined;
    if (dests[j]!.weight > 0) return j;
  }
  return undefined;
}
