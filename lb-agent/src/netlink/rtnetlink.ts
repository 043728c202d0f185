// Just enough rtnetlink (linux/rtnetlink.h, if_link.h, if_addr.h) for the VIPs: find or
// create a dummy link and bring it up; list, add and delete local routes through it (the
// VIPs) and its addresses (where 0.1.0 put the VIPs).
import { PortlbError } from '../errors.ts';
import { type Family, ipFromKernelBytes, writeKernelAddress } from '../net/ip.ts';
import { type Pause, TimeSlicer } from '../util/slicer.ts';
import { KernelError, NETLINK_ROUTE, NetlinkSocket, type NlRequest } from './socket.ts';
import {
  AttrIndex,
  NetlinkMalformed,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REPLACE,
  type NlWriter,
} from './wire.ts';

export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_GETLINK = 18;
export const RTM_NEWADDR = 20;
export const RTM_DELADDR = 21;
export const RTM_GETADDR = 22;
export const IFLA_IFNAME = 3;
export const IFLA_LINKINFO = 18;
export const IFLA_INFO_KIND = 1;
export const IFA_ADDRESS = 1;
export const IFA_LOCAL = 2;
export const IFA_FLAGS = 8;
export const IFA_F_NODAD = 0x02;
export const IFF_UP = 0x1;
export const RTM_NEWROUTE = 24;
export const RTM_DELROUTE = 25;
export const RTM_GETROUTE = 26;
export const RTA_DST = 1;
export const RTA_OIF = 4;
export const RTA_TABLE = 15;
export const RT_TABLE_LOCAL = 255;
export const RTN_LOCAL = 2;
export const RT_SCOPE_HOST = 254;
export const RT_SCOPE_NOWHERE = 255;
/**
 * The routing protocol that marks portlb's VIP routes (`ip route show table local proto
 * 240`). rtnetlink.h leaves the numbers above RTPROT_STATIC to routing daemons and names
 * none 240; neither does iproute2's rt_protos.
 */
export const RTPROT_PORTLB = 240;
const RTMSG_LEN = 12;
const AF_UNSPEC = 0;
const AF_INET = 2;
const AF_INET6 = 10;
const IFADDRMSG_LEN = 8;
/** Each dumped route's and address's attributes, parsed in place (10,000 VIP routes a full pass). */
const routeAttrs = new AttrIndex(RTA_TABLE + 1);
const addrAttrs = new AttrIndex(IFA_FLAGS + 1);
const RT_SCOPE_UNIVERSE = 0;

const familyOf = (af: number): Family | undefined =>
  af === AF_INET ? 'ipv4' : af === AF_INET6 ? 'ipv6' : undefined;

/** An address as an attribute: 4 or 16 bytes in network order. */
function attrAddress(w: NlWriter, type: number, a: LinkAddress): void {
  const len = a.family === 'ipv4' ? 4 : 16;
  w.attrInPlace(type, len, (b, o) => {
    const tmp = Buffer.alloc(16);
    writeKernelAddress(tmp, 0, a.address, a.family);
    tmp.copy(b, o, 0, len);
  });
}

export class LinkError extends PortlbError<'LINK_NOT_FOUND' | 'LINK_ERROR'> {}

export interface LinkAddress {
  address: string;
  family: Family;
  prefix: number;
}

export class RtNetlink implements Disposable {
  private readonly socket: NetlinkSocket;

  constructor() {
    this.socket = new NetlinkSocket(NETLINK_ROUTE);
  }

  /** The interface index of `name`, or undefined. */
  linkIndex(name: string): number | undefined {
    try {
      const [reply] = this.socket.request(
        {
          type: RTM_GETLINK,
          body: (w) => {
            w.u8(AF_UNSPEC).u8(0).u16(0).i32(0).u32(0).u32(0);
            w.attrString(IFLA_IFNAME, name);
          },
        },
        `get link ${name}`,
      );
      return reply ? reply.payload.readInt32LE(4) : undefined;
    } catch (err) {
      if (err instanceof KernelError && (err.code === 'ENODEV' || err.code === 'ENOENT')) return undefined;
      throw err;
    }
  }

  /** Creates a dummy interface (idempotent) and brings it up; returns its index. */
  ensureDummy(name: string): number {
    let index = this.linkIndex(name);
    if (index === undefined) {
      try {
        this.socket.request(
          {
            type: RTM_NEWLINK,
            flags: NLM_F_CREATE | NLM_F_EXCL,
            body: (w) => {
              w.u8(AF_UNSPEC).u8(0).u16(0).i32(0).u32(0).u32(0);
              w.attrString(IFLA_IFNAME, name);
              w.nest(IFLA_LINKINFO, () => w.attrString(IFLA_INFO_KIND, 'dummy'));
            },
          },
          `create dummy link ${name}`,
        );
      } catch (err) {
        if (!(err instanceof KernelError && err.code === 'EEXIST')) {
          throw new LinkError(
            'LINK_ERROR',
            `cannot create dummy interface ${name}: ${(err as Error).message} (is the dummy module available?)`,
            { cause: err },
          );
        }
      }
      index = this.linkIndex(name);
      if (index === undefined)
        throw new LinkError('LINK_NOT_FOUND', `interface ${name} vanished after creation`);
    }
    const idx = index;
    this.socket.request(
      {
        type: RTM_NEWLINK,
        body: (w) => {
          w.u8(AF_UNSPEC).u8(0).u16(0).i32(idx).u32(IFF_UP).u32(IFF_UP);
        },
      },
      `set ${name} up`,
    );
    return idx;
  }

  /** Deletes an interface (and with it its addresses); false when there was none. */
  deleteLink(name: string): boolean {
    const index = this.linkIndex(name);
    if (index === undefined) return false;
    this.socket.request(
      {
        type: RTM_DELLINK,
        body: (w) => {
          w.u8(AF_UNSPEC).u8(0).u16(0).i32(index).u32(0).u32(0);
        },
      },
      `delete link ${name}`,
    );
    return true;
  }

  /**
   * A dump decoded message by message (`decode` keeps what it returns), each read in place
   * (`p` from `at`, its header of `headerLength` bytes there); at 10,000 VIPs the dump and
   * its decoding go in slices (`pause`, a TimeSlicer's by default).
   */
  private async dumpOf(
    type: number,
    header: (w: NlWriter) => void,
    headerLength: number,
    context: string,
    decode: (p: Buffer, at: number, end: number, messageType: number) => LinkAddress | undefined,
    pause?: Pause,
  ): Promise<LinkAddress[]> {
    const slicer = new TimeSlicer();
    pause ??= () => slicer.pause();
    const out: LinkAddress[] = [];
    const replies = await this.socket.dump({ type, body: header }, context, pause);
    for (const r of replies) {
      await pause();
      if (r.end - r.start < headerLength)
        throw new NetlinkMalformed('NETLINK_MALFORMED', `${context}: a message of ${r.end - r.start} bytes`);
      const found = decode(r.data, r.start, r.end, r.type);
      if (found) out.push(found);
    }
    return out;
  }

  /** The addresses of a link. */
  addresses(index: number, pause?: Pause): Promise<LinkAddress[]> {
    return this.dumpOf(
      RTM_GETADDR,
      (w) => w.u8(AF_UNSPEC).u8(0).u8(0).u8(0).u32(0),
      IFADDRMSG_LEN,
      'list addresses',
      (p, at, end, type) => {
        // ifaddrmsg: family, prefixlen, flags, scope, index.
        const family = familyOf(p.readUInt8(at));
        if (type !== RTM_NEWADDR || p.readUInt32LE(at + 4) !== index || !family) return undefined;
        const a = addrAttrs.parse(p, at + IFADDRMSG_LEN, end);
        const attr = a.has(IFA_LOCAL) ? IFA_LOCAL : IFA_ADDRESS;
        if (!a.has(attr)) return undefined;
        const address = ipFromKernelBytes(p, family, a.offset(attr), a.length(attr));
        return { address, family, prefix: p.readUInt8(at + 1) };
      },
      pause,
    );
  }

  /** The destinations of portlb's local routes (table local, RTPROT_PORTLB) through a link, both families. */
  localRoutes(index: number, pause?: Pause): Promise<LinkAddress[]> {
    return this.dumpOf(
      RTM_GETROUTE,
      (w) => w.u8(AF_UNSPEC).u8(0).u8(0).u8(0).u8(0).u8(0).u8(0).u8(0).u32(0),
      RTMSG_LEN,
      'list local routes',
      (p, at, end, type) => {
        // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
        const family = familyOf(p.readUInt8(at));
        if (
          type !== RTM_NEWROUTE ||
          p.readUInt8(at + 5) !== RTPROT_PORTLB ||
          p.readUInt8(at + 7) !== RTN_LOCAL ||
          !family
        )
          return undefined;
        const a = routeAttrs.parse(p, at + RTMSG_LEN, end);
        const table = a.u32(RTA_TABLE) ?? p.readUInt8(at + 4);
        if (table !== RT_TABLE_LOCAL || a.u32(RTA_OIF) !== index || !a.has(RTA_DST)) return undefined;
        const address = ipFromKernelBytes(p, family, a.offset(RTA_DST), a.length(RTA_DST));
        return { address, family, prefix: p.readUInt8(at + 1) };
      },
      pause,
    );
  }

  private routeRequest(type: number, flags: number, index: number, a: LinkAddress) {
    return {
      type,
      flags,
      body: (w: NlWriter) => {
        w.u8(a.family === 'ipv4' ? AF_INET : AF_INET6)
          .u8(a.prefix)
          .u8(0)
          .u8(0)
          .u8(RT_TABLE_LOCAL)
          .u8(RTPROT_PORTLB)
          // A delete matches any scope (as `ip route del` asks); the protocol makes it ours only.
          .u8(type === RTM_DELROUTE ? RT_SCOPE_NOWHERE : RT_SCOPE_HOST)
          .u8(RTN_LOCAL)
          .u32(0);
        attrAddress(w, RTA_DST, a);
        w.attrU32(RTA_OIF, index);
      },
    };
  }

  /**
   * Adds or removes local routes of portlb through a link in one batch; returns per-route
   * errors. An add beside the kernel's own local route of an address (same destination)
   * makes a second route, not a replacement: deleting either leaves the other.
   */
  changeLocalRoutes(
    index: number,
    add: LinkAddress[],
    remove: LinkAddress[],
  ): Promise<(KernelError | undefined)[]> {
    return this.change('route', add, remove, (a, adding) =>
      adding
        ? this.routeRequest(RTM_NEWROUTE, NLM_F_CREATE, index, a)
        : this.routeRequest(RTM_DELROUTE, 0, index, a),
    );
  }

  /** Adds and removes in one batch of requests; per-object errors, in the order given. */
  private change(
    what: string,
    add: LinkAddress[],
    remove: LinkAddress[],
    request: (a: LinkAddress, adding: boolean) => NlRequest,
  ): Promise<(KernelError | undefined)[]> {
    const requests = [...add.map((a) => request(a, true)), ...remove.map((a) => request(a, false))];
    const all = [
      ...add.map((a) => `add ${what} ${a.address}`),
      ...remove.map((a) => `delete ${what} ${a.address}`),
    ];
    return this.socket.execute(requests, (i) => all[i]!);
  }

  private addressRequest(type: number, flags: number, index: number, a: LinkAddress) {
    return {
      type,
      flags,
      body: (w: NlWriter) => {
        w.u8(a.family === 'ipv4' ? AF_INET : AF_INET6)
          .u8(a.prefix)
          .u8(a.family === 'ipv6' ? IFA_F_NODAD : 0)
          .u8(RT_SCOPE_UNIVERSE)
          .u32(index);
        attrAddress(w, IFA_LOCAL, a);
        attrAddress(w, IFA_ADDRESS, a);
        if (a.family === 'ipv6') w.attrU32(IFA_FLAGS, IFA_F_NODAD);
      },
    };
  }

  /** Adds or removes many addresses in one batch; returns per-address errors. */
  changeAddresses(
    index: number,
    add: LinkAddress[],
    remove: LinkAddress[],
  ): Promise<(KernelError | undefined)[]> {
    return this.change('address', add, remove, (a, adding) =>
      adding
        ? this.addressRequest(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, index, a)
        : this.addressRequest(RTM_DELADDR, 0, index, a),
    );
  }

  close(): void {
    this.socket.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
