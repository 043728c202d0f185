import { GENL_HDRLEN, genlRequest, resolveFamily, writeGenlHeader } from '../netlink/genl.ts';
import {
  KernelError,
  NETLINK_GENERIC,
  NetlinkSocket,
  type NlBatch,
  type NlRequest,
  type SocketOptions,
} from '../netlink/socket.ts';
import type { NlMessage, NlWriter } from '../netlink/wire.ts';
import { AttrIndex, parseAttrs } from '../netlink/wire.ts';
import { TimeSlicer } from '../util/slicer.ts';
import { IpvsClientBase, type ListOptions, type ServiceListing } from './client.ts';
import {
  decodeDestination,
  decodeInfo,
  decodeService,
  decodeTimeouts,
  writeDestination,
  writeService,
  writeServiceKey,
  writeTimeouts,
} from './codec.ts';
import * as K from './constants.ts';
import { describeOperation, IpvsError, ipvsErrorFor } from './errors.ts';
import { ProcSysctls, type SysctlStore } from './sysctl.ts';
import type {
  IpvsInfo,
  IpvsOperation,
  IpvsSysctls,
  IpvsTimeouts,
  RealServerState,
  ServiceKey,
} from './types.ts';

export interface NetlinkIpvsOptions {
  socket?: SocketOptions;
  sysctls?: SysctlStore;
}

/** A reply's command attributes, parsed in place for each decode (synchronous, one at a time). */
const cmdAttrs = new AttrIndex(K.IPVS_CMD_ATTR_TIMEOUT_UDP + 1);

const COMMANDS: Record<IpvsOperation['op'], number> = {
  'add-service': K.IPVS_CMD_NEW_SERVICE,
  'update-service': K.IPVS_CMD_SET_SERVICE,
  'delete-service': K.IPVS_CMD_DEL_SERVICE,
  'add-destination': K.IPVS_CMD_NEW_DEST,
  'update-destination': K.IPVS_CMD_SET_DEST,
  'delete-destination': K.IPVS_CMD_DEL_DEST,
};

function writeOperation(w: NlWriter, op: IpvsOperation): void {
  switch (op.op) {
    case 'add-service':
    case 'update-service':
      writeService(w, op.service);
      break;
    case 'delete-service':
      writeServiceKey(w, op.key);
      break;
    case 'add-destination':
    case 'update-destination':
      writeServiceKey(w, op.key);
      writeDestination(w, op.destination, true);
      break;
    case 'delete-destination':
      writeServiceKey(w, op.key);
      writeDestination(w, op.destination, false);
      break;
  }
}

/** IpvsClient over Generic Netlink (family "IPVS"), in the caller's network namespace. */
export class NetlinkIpvsClient extends IpvsClientBase {
  private readonly socket: NetlinkSocket;
  /** Whole-table reads' own socket (ListOptions.bulk), opened on first use. */
  private bulkSocket: NetlinkSocket | undefined;
  private readonly socketOptions: NetlinkIpvsOptions['socket'];
  private readonly family: number;
  private readonly sysctls: SysctlStore;

  private constructor(
    socket: NetlinkSocket,
    family: number,
    sysctls: SysctlStore,
    socketOptions: NetlinkIpvsOptions['socket'],
  ) {
    super();
    this.socket = socket;
    this.family = family;
    this.sysctls = sysctls;
    this.socketOptions = socketOptions;
  }

  private dumpSocket(options: ListOptions): NetlinkSocket {
    if (!options.bulk) return this.socket;
    this.bulkSocket ??= new NetlinkSocket(NETLINK_GENERIC, this.socketOptions);
    return this.bulkSocket;
  }

  /** Opens a socket and resolves the IPVS family (which makes the kernel load ip_vs if it can). */
  static open(options: NetlinkIpvsOptions = {}): NetlinkIpvsClient {
    const socket = new NetlinkSocket(NETLINK_GENERIC, options.socket);
    try {
      const family = resolveFamily(socket, K.IPVS_GENL_NAME);
      if (family === undefined) {
        throw new IpvsError(
          'IPVS_UNAVAILABLE',
          'the kernel has no IPVS (generic netlink family "IPVS" not found): load it with `modprobe ip_vs`; ' +
            'in a container, the node must have the module loaded or /lib/modules mounted',
        );
      }
      return new NetlinkIpvsClient(socket, family, options.sysctls ?? new ProcSysctls(), options.socket);
    } catch (err) {
      socket.close();
      throw err;
    }
  }

  private request(cmd: number, attrs: (w: NlWriter) => void): NlRequest {
    return genlRequest(this.family, cmd, K.IPVS_GENL_VERSION, attrs);
  }

  private wrap(err: unknown, what: string): never {
    if (err instanceof KernelError) {
      throw new IpvsError('KERNEL_ERROR', `${what}: ${err.code}`, { cause: err, errno: err.code });
    }
    throw err;
  }

  async info(): Promise<IpvsInfo> {
    try {
      const [reply] = this.socket.request(
        this.request(K.IPVS_CMD_GET_INFO, () => {}),
        'IPVS get info',
      );
      if (!reply) throw new IpvsError('KERNEL_ERROR', 'IPVS get info: empty reply');
      return decodeInfo(parseAttrs(reply.payload, GENL_HDRLEN));
    } catch (err) {
      return this.wrap(err, 'IPVS get info');
    }
  }

  async listServices(options: ListOptions = {}): Promise<ServiceListing[]> {
    // 10,000 services are megabytes of replies and their decoding: both in slices.
    const slicer = new TimeSlicer(options.sliceMs, undefined, options.background ? 1 : 0);
    let replies: NlMessage[];
    try {
      replies = await this.dumpSocket(options).dump(
        this.request(K.IPVS_CMD_GET_SERVICE, () => {}),
        'IPVS list services',
        () => slicer.pause(),
      );
    } catch (err) {
      return this.wrap(err, 'IPVS list services');
    }
    const out: ServiceListing[] = [];
    for (const r of replies) {
      await slicer.pause();
      out.push(decodeService(cmdAttrs.parse(r.data, r.start + GENL_HDRLEN, r.end), options.stats ?? false));
    }
    return out;
  }

  async listDestinations(key: ServiceKey, options: ListOptions = {}): Promise<RealServerState[]> {
    let replies: NlMessage[];
    try {
      replies = await this.dumpSocket(options).dump(
        this.request(K.IPVS_CMD_GET_DEST, (w) => writeServiceKey(w, key)),
        'IPVS list destinations',
      );
    } catch (err) {
      return this.wrap(err, 'IPVS list destinations');
    }
    return replies.map((r) =>
      decodeDestination(
        cmdAttrs.parse(r.data, r.start + GENL_HDRLEN, r.end),
        key.family,
        options.stats ?? false,
      ),
    );
  }

  async execute(
    ops: readonly IpvsOperation[],
    onProgress?: (done: number) => void,
  ): Promise<(IpvsError | undefined)[]> {
    const family = this.family;
    const batch: NlBatch = {
      length: ops.length,
      type: () => family,
      flags: () => 0,
      body: (w, i) => {
        const op = ops[i]!;
        writeGenlHeader(w, COMMANDS[op.op], K.IPVS_GENL_VERSION);
        writeOperation(w, op);
      },
    };
    const results = await this.socket.execute(batch, (i) => describeOperation(ops[i]!), onProgress);
    return results.map((err, i) => (err ? ipvsErrorFor(ops[i]!, err.code, err) : undefined));
  }

  getSysctls(): Promise<IpvsSysctls> {
    return this.sysctls.read();
  }

  async getTimeouts(): Promise<IpvsTimeouts> {
    try {
      const [reply] = this.socket.request(
        this.request(K.IPVS_CMD_GET_CONFIG, () => {}),
        'IPVS get config',
      );
      if (!reply) throw new IpvsError('KERNEL_ERROR', 'IPVS get config: empty reply');
      return decodeTimeouts(parseAttrs(reply.payload, GENL_HDRLEN));
    } catch (err) {
      return this.wrap(err, 'IPVS get config');
    }
  }

  async setTimeouts(values: Partial<IpvsTimeouts>): Promise<void> {
    try {
      this.socket.request(
        this.request(K.IPVS_CMD_SET_CONFIG, (w) => writeTimeouts(w, values)),
        'IPVS set config',
      );
    } catch (err) {
      this.wrap(err, 'IPVS set config');
    }
  }

  setSysctls(values: Partial<IpvsSysctls>): Promise<void> {
    return this.sysctls.write(values);
  }

  close(): void {
    this.socket.close();
    this.bulkSocket?.close();
  }
}
