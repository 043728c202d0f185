// VIP addresses on the node: every VIP of a programmed service is a local address, so IPVS
// (in LOCAL_IN) sees the traffic the router sends. A VIP is made local by a route of its
// own in the local table (protocol RTPROT_PORTLB, through a dummy interface), not by an
// address on the interface: the kernel walks an interface's whole address list for every
// address added (50,000 VIPs took minutes), a route goes into the FIB's trie (50,000 in
// under a second). Deleting the interface deletes its routes. A route says it is portlb's
// (its protocol), so every one that is not wanted goes, inside the pools or not (a VIP
// left local outside them would be answered by whatever listens on the host); addresses
// on the interface carry no such mark, and only those inside the pools are removed.
import { errorCode } from '../errors.ts';
import { canonicalIp, ipFamily } from '../net/ip.ts';
import { type LinkAddress, RtNetlink } from '../netlink/rtnetlink.ts';
import { KernelError } from '../netlink/socket.ts';

export interface AddressSyncResult {
  added: string[];
  removed: string[];
  /** VIPs found as addresses on the interface (where 0.1.0 put them), now routes: the addresses deleted. */
  moved: string[];
  failed: { address: string; code: string; message: string }[];
}

export interface AddressManager {
  /**
   * Makes portlb's VIP routes exactly `wanted`. `owns` says which addresses on the
   * interface (an earlier version's VIPs) are portlb's to move or remove; others stay.
   * `reread` false: against what the last sync left (an incremental pass); true or first:
   * the kernel is read again (a full pass finds what someone else changed).
   */
  sync(
    wanted: readonly string[],
    owns: (address: string) => boolean,
    o?: { reread: boolean },
  ): Promise<AddressSyncResult>;
  list(): Promise<string[]>;
  close(): void;
}

function diff(current: ReadonlySet<string>, wanted: readonly string[]) {
  // An address already there is canonical (the kernel's own text): only new ones are parsed.
  const want = new Set<string>();
  for (const a of wanted) want.add(current.has(a) ? a : (canonicalIp(a) ?? a));
  const add: string[] = [];
  for (const a of want) if (!current.has(a)) add.push(a);
  const remove: string[] = [];
  for (const a of current) if (!want.has(a)) remove.push(a);
  return { add, remove, want };
}

const host = (address: string): LinkAddress => {
  const family = ipFamily(address)!;
  return { address, family, prefix: family === 'ipv4' ? 32 : 128 };
};

/** A route already there (an add) or already gone (a delete) is what was asked for. */
const settled = (err: KernelError | undefined, adding: boolean) =>
  err && !(err instanceof KernelError && err.code === (adding ? 'EEXIST' : 'ESRCH')) ? err : undefined;

export class LocalRouteManager implements AddressManager {
  private readonly rt = new RtNetlink();
  private readonly name: string;
  private index: number | undefined;
  /**
   * The VIP routes as the last sync left them: an incremental pass diffs against this
   * instead of dumping 10,000 routes.
   */
  private known: Set<string> | undefined;

  constructor(name: string) {
    this.name = name;
  }

  private link(): number {
    this.index ??= this.rt.ensureDummy(this.name);
    return this.index;
  }

  async list(): Promise<string[]> {
    return (await this.rt.localRoutes(this.link())).map((a) => a.address);
  }

  async sync(
    wanted: readonly string[],
    owns: (address: string) => boolean,
    o: { reread: boolean } = { reread: true },
  ): Promise<AddressSyncResult> {
    let onLink: LinkAddress[] = [];
    if (o.reread || !this.known) {
      // The interface may have been deleted by hand: look it up again.
      this.index = undefined;
      this.known = undefined;
      this.known = new Set(await this.list());
      onLink = (await this.rt.addresses(this.link())).filter((a) => owns(a.address));
    }
    const index = this.link();
    const known = this.known;
    const { add, remove, want } = diff(known, wanted);
    const result: AddressSyncResult = { added: [], removed: [], moved: [], failed: [] };
    if (!add.length && !remove.length && !onLink.length) return result;
    const fail = (address: string, err: Error) =>
      result.failed.push({ address, code: errorCode(err), message: err.message });
    // Until the answers are in, the routes are not known (a transport failure throws).
    this.known = undefined;
    const errors = await this.rt.changeLocalRoutes(index, add.map(host), remove.map(host));
    [...add, ...remove].forEach((address, i) => {
      const err = settled(errors[i], i < add.length);
      if (err) fail(address, err);
      else if (i < add.length) {
        result.added.push(address);
        known.add(address);
      } else {
        result.removed.push(address);
        known.delete(address);
      }
    });
    // Addresses of an earlier version: deleted once the VIP's route is in (its traffic
    // never stops), or at once when the VIP is no longer wanted.
    const moving = onLink.filter((a) => known.has(a.address) || !want.has(a.address));
    if (moving.length) {
      const moved = await this.rt.changeAddresses(index, [], moving);
      moving.forEach(({ address }, i) => {
        const err = moved[i];
        if (err) fail(address, err);
        else result.moved.push(address);
      });
    }
    // A refusal may mean the kernel is not what we believe: read it next time.
    if (!result.failed.length) this.known = known;
    return result;
  }

  close(): void {
    this.rt.close();
  }
}

export class FakeAddressManager implements AddressManager {
  readonly addresses = new Set<string>();
  changes = 0;

  async list(): Promise<string[]> {
    return [...this.addresses];
  }

  /** The VIP routes: every one is portlb's (the addresses of an earlier version are not modelled). */
  async sync(wanted: readonly string[]): Promise<AddressSyncResult> {
    const { add, remove } = diff(this.addresses, wanted);
    for (const a of add) this.addresses.add(a);
    for (const a of remove) this.addresses.delete(a);
    this.changes += add.length + remove.length;
    return { added: add, removed: remove, moved: [], failed: [] };
  }

  close(): void {}
}
