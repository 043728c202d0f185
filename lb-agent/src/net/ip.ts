// IP addresses as the rest of portlb sees them: canonical strings (RFC 5952 for IPv6),
// with conversions to the kernel's byte layout and to integers for pool arithmetic.
import { isIPv4, isIPv6 } from 'node:net';

export type Family = 'ipv4' | 'ipv6';

export function ipFamily(address: string): Family | undefined {
  if (isIPv4(address)) return 'ipv4';
  if (isIPv6(address) && !address.includes('%')) return 'ipv6';
  return undefined;
}

export const familyBits = (family: Family): number => (family === 'ipv4' ? 32 : 128);

export function ipToBigInt(address: string): bigint {
  const family = ipFamily(address);
  if (family === 'ipv4') {
    return address.split('.').reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n);
  }
  if (family !== 'ipv6') throw new TypeError(`not an IP address: ${address}`);
  let text = address;
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hextets.
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    const v4 = ipToBigInt(tail);
    text = `${text.slice(0, lastColon + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const [head = '', rest] = text.split('::') as [string, string | undefined];
  const headParts = head === '' ? [] : head.split(':');
  const restParts = rest === undefined || rest === '' ? [] : rest.split(':');
  const missing = 8 - headParts.length - restParts.length;
  const parts =
    rest === undefined ? headParts : [...headParts, ...new Array(missing).fill('0'), ...restParts];
  return parts.reduce((acc, part) => (acc << 16n) | BigInt(Number.parseInt(part, 16)), 0n);
}

export function bigIntToIp(value: bigint, family: Family): string {
  if (family === 'ipv4') {
    return [24n, 16n, 8n, 0n].map((shift) => ((value >> shift) & 0xffn).toString()).join('.');
  }
  const hextets: number[] = [];
  for (let shift = 112n; shift >= 0n; shift -= 16n) hextets.push(Number((value >> shift) & 0xffffn));
  return formatHextets(hextets);
}

/** RFC 5952: lower case, no leading zeros, the longest run (>= 2) of zero groups as "::". */
function formatHextets(hextets: number[]): string {
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (hextets[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && hextets[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = hextets.map((h) => h.toString(16));
  if (bestStart === -1) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** The canonical spelling of an address, or undefined when it is not one. */
export function canonicalIp(address: string): string | undefined {
  const family = ipFamily(address);
  if (!family) return undefined;
  if (family === 'ipv4') {
    // node accepts only dotted-quad decimal without leading zeros here, already canonical.
    return address;
  }
  return bigIntToIp(ipToBigInt(address), 'ipv6');
}

/** The kernel's union nf_inet_addr: 16 bytes, IPv4 in the first four. */
export function ipToKernelBytes(address: string, family: Family): Buffer {
  const out = Buffer.alloc(16);
  writeKernelAddress(out, 0, address, family);
  return out;
}

/**
 * Writes an address in the kernel's layout into a zeroed 16-byte slot. The IPv4 path
 * parses by hand: it runs once per destination, 100,000 times for a large table.
 */
export function writeKernelAddress(buf: Buffer, offset: number, address: string, family: Family): void {
  if (family === 'ipv4') {
    let octet = 0;
    let at = offset;
    for (let i = 0; i < address.length; i++) {
      const c = address.charCodeAt(i);
      if (c === 46) {
        buf[at++] = octet;
        octet = 0;
      } else octet = octet * 10 + (c - 48);
    }
    buf[at] = octet;
    return;
  }
  const value = ipToBigInt(address);
  buf.writeBigUInt64BE(value >> 64n, offset);
  buf.writeBigUInt64BE(value & 0xffffffffffffffffn, offset + 8);
}

/** Decodes by family, never by length: the kernel sends 16 bytes for IPv4 too. */
/** The address at `at` of `bytes` (`length` of them there: an attribute's, read in place). */
export function ipFromKernelBytes(bytes: Buffer, family: Family, at = 0, length = bytes.length - at): string {
  if (family === 'ipv4') {
    if (length < 4) throw new RangeError(`IPv4 address needs 4 bytes, got ${length}`);
    return `${bytes[at]}.${bytes[at + 1]}.${bytes[at + 2]}.${bytes[at + 3]}`;
  }
  if (length < 16) throw new RangeError(`IPv6 address needs 16 bytes, got ${length}`);
  const hextets: number[] = [];
  for (let i = 0; i < 16; i += 2) hextets.push(bytes.readUInt16BE(at + i));
  return formatHextets(hextets);
}

export interface Cidr {
  family: Family;
  /** The network address (host bits cleared). */
  network: bigint;
  prefix: number;
}

/** Parses "a.b.c.d/len" or "x::/len"; a bare address is a host prefix. Host bits must be zero. */
export function parseCidr(text: string): Cidr | undefined {
  const [addr = '', len, extra] = text.split('/');
  if (extra !== undefined) return undefined;
  const family = ipFamily(addr);
  if (!family) return undefined;
  const bits = familyBits(family);
  const prefix = len === undefined ? bits : /^\d{1,3}$/.test(len) ? Number(len) : Number.NaN;
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > bits) return undefined;
  const value = ipToBigInt(addr);
  const network = value & prefixMask(prefix, family);
  if (network !== value) return undefined;
  return { family, network, prefix };
}

export function prefixMask(prefix: number, family: Family): bigint {
  const bits = BigInt(familyBits(family));
  const all = (1n << bits) - 1n;
  return (all << (bits - BigInt(prefix))) & all;
}

export function cidrContains(cidr: Cidr, address: string): boolean {
  const family = ipFamily(address);
  if (family !== cidr.family) return false;
  return (ipToBigInt(address) & prefixMask(cidr.prefix, family)) === cidr.network;
}

/** Prefix length of a contiguous IPv4 netmask (255.255.255.0 -> 24), undefined otherwise. */
export function ipv4MaskToPrefix(mask: number): number | undefined {
  const inverted = ~mask >>> 0;
  if ((inverted & (inverted + 1)) !== 0) return undefined;
  return 32 - Math.log2(inverted + 1);
}

export function prefixToIpv4Mask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}
