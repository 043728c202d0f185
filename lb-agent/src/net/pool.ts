// Address blocks ("10.0.0.0/24", "10.0.0.10-10.0.0.20", "fd00::/120", "192.0.2.7") as
// inclusive integer ranges: ownership checks and VIP allocation both use them.
import { type Family, familyBits, ipFamily, ipToBigInt, parseCidr } from './ip.ts';

export interface AddressBlock {
  /** The text it was parsed from, for messages. */
  text: string;
  family: Family;
  first: bigint;
  last: bigint;
}

/** Parses one block; returns an error message (naming the problem) instead of throwing. */
export function parseAddressBlock(text: string): AddressBlock | string {
  const trimmed = text.trim();
  if (trimmed.includes('-')) {
    const [a = '', b = '', extra] = trimmed.split('-').map((s) => s.trim());
    if (extra !== undefined) return `"${text}" is not a range (expected first-last)`;
    const fa = ipFamily(a);
    const fb = ipFamily(b);
    if (!fa || !fb) return `"${text}" is not a range of IP addresses`;
    if (fa !== fb) return `"${text}" mixes IPv4 and IPv6`;
    const first = ipToBigInt(a);
    const last = ipToBigInt(b);
    if (first > last) return `"${text}": the first address is after the last`;
    return { text: trimmed, family: fa, first, last };
  }
  const cidr = parseCidr(trimmed);
  if (!cidr) {
    const [addr = ''] = trimmed.split('/');
    if (ipFamily(addr) && parseCidr(`${addr}/${familyBits(ipFamily(addr)!)}`)) {
      return `"${text}" has host bits set or a bad prefix length (write the network address, e.g. ${addr.replace(/\d+$/, '0')}/24)`;
    }
    return `"${text}" is not a CIDR, a range or an IP address`;
  }
  const size = 1n << BigInt(familyBits(cidr.family) - cidr.prefix);
  return { text: trimmed, family: cidr.family, first: cidr.network, last: cidr.network + size - 1n };
}

export function blockContains(block: AddressBlock, address: string): boolean {
  if (ipFamily(address) !== block.family) return false;
  const v = ipToBigInt(address);
  return v >= block.first && v <= block.last;
}

export function blockSize(block: AddressBlock): bigint {
  return block.last - block.first + 1n;
}

export function blocksOverlap(a: AddressBlock, b: AddressBlock): boolean {
  return a.family === b.family && a.first <= b.last && b.first <= a.last;
}
