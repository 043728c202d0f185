// VIP addresses on the node: every VIP of a programmed service is a local address on a
// dummy interface, so IPVS (in LOCAL_IN) sees the traffic the router sends. Only
// addresses inside the pools are ever removed.
import { errorCode } from '../errors.ts';
import { canonicalIp, ipFamily } from '../net/ip.ts';
import { RtNetlink } from '../netlink/rtnetlink.ts';

export interface AddressSyncResult {
  added: string[];
  removed: string[];
  failed: { address: string; code: string; message: string }[];
}

export interface AddressManager {
  /**
   * Makes the owned addresses on the interface exactly `wanted`; unowned ones stay.
   * `reread` false: against what the last sync left (an incremental pass); true or first:
   * the interface is read again (a full pass finds what someone else changed).
   */
  sync(
    wanted: readonly string[],
    owns: (address: string) => boolean,
    o?: { reread: boolean },
  ): Promise<AddressSyncResult>;
  list(): Promise<string[]>;
  close(): void;
}

function diff(current: ReadonlySet<string>, wanted: readonly string[], owns: (a: string) => boolean) {
  // An address already there is canonical (the kernel's own text): only new ones are parsed.
  const want = new Set<string>();
  for (const a of wanted) want.add(current.has(a) ? a : (canonicalIp(a) ?? a));
  const add: string[] = [];
  for (const a of want) if (!current.has(a)) add.push(a);
  const remove: string[] = [];
  for (const a of current) if (!want.has(a) && owns(a)) remove.push(a);
  return { add, remove };
}

export class LinkAddressManager implements AddressManager {
  private readonly rt = new RtNetlink();
  private readonly name: string;
  private index: number | undefined;
  /**
   * The interface's addresses as the last sync left them: an incremental pass diffs against
   * this instead of dumping 10,000 addresses (150-250 ms a pass in UML).
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
    return (await this.rt.addresses(this.link())).map((a) => a.address);
  }

  async sync(
    wanted: readonly string[],
    owns: (address: string) => boolean,
    o: { reread: boolean } = { reread: true },
  ): Promise<AddressSyncResult> {
    if (o.reread || !this.known) {
      // The interface may have been deleted by hand: look it up again.
      this.index = undefined;
      this.known = undefined;
      this.known = new Set(await this.list());
    }
    const index = this.link();
    const known = this.known;
    const { add, remove } = diff(known, wanted, owns);
    const result: AddressSyncResult = { added: [], removed: [], failed: [] };
    if (!add.length && !remove.length) return result;
    const toLink = (a: string) => ({
      address: a,
      family: ipFamily(a)!,
      prefix: ipFamily(a) === 'ipv4' ? 32 : 128,
    });
    // Until the answers are in, the interface is not known (a transport failure throws).
    this.known = undefined;
    const errors = await this.rt.changeAddresses(index, add.map(toLink), remove.map(toLink));
    [...add, ...remove].forEach((address, i) => {
      const err = errors[i];
      if (err) result.failed.push({ address, code: errorCode(err), message: err.message });
      else if (i < add.length) {
        result.added.push(address);
        known.add(address);
      } else {
        result.removed.push(address);
        known.delete(address);
      }
    });
    // A refusal may mean the interface is not what we believe: read it next time.
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

  async sync(wanted: readonly string[], owns: (address: string) => boolean): Promise<AddressSyncResult> {
    const { add, remove } = diff(this.addresses, wanted, owns);
    for (const a of add) this.addresses.add(a);
    for (const a of remove) this.addresses.delete(a);
    this.changes += add.length + remove.length;
    return { added: add, removed: remove, failed: [] };
  }

  close(): void {}
}
