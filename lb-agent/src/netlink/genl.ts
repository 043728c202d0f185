// Generic Netlink: the genlmsghdr that follows the netlink header, and family lookup
// through the nlctrl controller (linux/genetlink.h).
import { KernelError, NetlinkError, type NetlinkSocket, type NlRequest } from './socket.ts';
import { type NlWriter, parseAttrs, readU16 } from './wire.ts';

export const GENL_HDRLEN = 4;
export const GENL_ID_CTRL = 0x10;
export const CTRL_CMD_GETFAMILY = 3;
export const CTRL_ATTR_FAMILY_ID = 1;
export const CTRL_ATTR_FAMILY_NAME = 2;

export function writeGenlHeader(w: NlWriter, cmd: number, version: number): void {
  w.u8(cmd).u8(version).u16(0);
}

/** A generic netlink request to `family` with command `cmd`; `attrs` writes the attributes. */
export function genlRequest(
  family: number,
  cmd: number,
  version: number,
  attrs: (w: NlWriter) => void,
  flags = 0,
): NlRequest {
  return {
    type: family,
    flags,
    body: (w) => {
      writeGenlHeader(w, cmd, version);
      attrs(w);
    },
  };
}

/** The numeric id the kernel assigned to a generic netlink family, or undefined when absent. */
export function resolveFamily(socket: NetlinkSocket, name: string): number | undefined {
  try {
    const replies = socket.request(
      genlRequest(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1, (w) => w.attrString(CTRL_ATTR_FAMILY_NAME, name)),
      `resolve generic netlink family ${name}`,
    );
    for (const reply of replies) {
      const id = readU16(parseAttrs(reply.payload, GENL_HDRLEN)[CTRL_ATTR_FAMILY_ID]);
      if (id !== undefined) return id;
    }
    throw new NetlinkError('NETLINK_PROTOCOL', `nlctrl answered without a family id for ${name}`);
  } catch (err) {
    if (err instanceof KernelError && err.code === 'ENOENT') return undefined;
    throw err;
  }
}
