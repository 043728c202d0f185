// Just enough rtnetlink (linux/rtnetlink.h, if_link.h, if_addr.h) for the VIP interface:
// find or create a dummy link, bring it up, and list, add and delete its addresses.
import { PortlbError } from '../errors.ts';
import { type Family, ipFromKernelBytes, writeKernelAddress } from '../net/ip.ts';
import { TimeSlicer } from '../util/slicer.ts';
import { KernelError, NETLINK_ROUTE, NetlinkSocket } from './socket.ts';
import { NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, type NlWriter, parseAttrs } from './wire.ts';

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
const AF_UNSPEC = 0;
const AF_INET = 2;
const AF_INET6 = 10;
const IFADDRMSG_LEN = 8;
const RT_SCOPE_UNIVERSE = 0;

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
   * The addresses of a link; at 10,000 VIPs the dump and its decoding go in slices
   * (`pause`, a TimeSlicer's by default).
   */
  async addresses(index: number, pause?: () => Promise<void>): Promise<LinkAddress[]> {
    const slicer = new TimeSlicer();
    pause ??= () => slicer.pause();
    const out: LinkAddress[] = [];
    const replies = await this.socket.dump(
      {
        type: RTM_GETADDR,
        body: (w) => {
          w.u8(AF_UNSPEC).u8(0).u8(0).u8(0).u32(0);
        },
      },
      'list addresses',
      pause,
    );
    for (const r of replies) {
      await pause();
      if (r.type !== RTM_NEWADDR) continue;
      const p = r.payload;
      if (p.readUInt32LE(4) !== index) continue;
      const af = p.readUInt8(0);
      const family: Family | undefined = af === AF_INET ? 'ipv4' : af === AF_INET6 ? 'ipv6' : undefined;
      if (!family) continue;
      const a = parseAttrs(p, IFADDRMSG_LEN);
      const bytes = a[IFA_LOCAL] ?? a[IFA_ADDRESS];
      if (!bytes) continue;
      out.push({ address: ipFromKernelBytes(bytes, family), family, prefix: p.readUInt8(1) });
    }
    return out;
  }

  private addressRequest(type: number, flags: number, index: number, a: LinkAddress) {
    const len = a.family === 'ipv4' ? 4 : 16;
    return {
      type,
      flags,
      body: (w: NlWriter) => {
        w.u8(a.family === 'ipv4' ? AF_INET : AF_INET6)
          .u8(a.prefix)
          .u8(a.family === 'ipv6' ? IFA_F_NODAD : 0)
          .u8(RT_SCOPE_UNIVERSE)
          .u32(index);
        const fill = (b: Buffer, o: number) => {
          const tmp = Buffer.alloc(16);
          writeKernelAddress(tmp, 0, a.address, a.family);
          tmp.copy(b, o, 0, len);
        };
        w.attrInPlace(IFA_LOCAL, len, fill);
        w.attrInPlace(IFA_ADDRESS, len, fill);
        if (a.family === 'ipv6') w.attrU32(IFA_FLAGS, IFA_F_NODAD);
      },
    };
  }

  /** Adds or removes many addresses in one batch; returns per-address errors. */
  async changeAddresses(
    index: number,
    add: LinkAddress[],
    remove: LinkAddress[],
  ): Promise<(KernelError | undefined)[]> {
    const requests = [
      ...add.map((a) => this.addressRequest(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, index, a)),
      ...remove.map((a) => this.addressRequest(RTM_DELADDR, 0, index, a)),
    ];
    const all = [...add.map((a) => `add ${a.address}`), ...remove.map((a) => `delete ${a.address}`)];
    return this.socket.execute(requests, (i) => all[i]!);
  }

  close(): void {
    this.socket.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
