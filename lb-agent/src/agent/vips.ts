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
  /** Makes the owned addresses on the interface exactly `wanted`; unowned ones stay. */
  sync(wanted: readonly string[], owns: (address: string) => boolean): Promise<AddressSyncResult>;
  list(): Promise<string[]>;
  close(): void;
}

function diff(current: readonly string[], wanted: readonly string[], owns: (a: string) => boolean) {
  const want = new Set(wanted.map((a) => canonicalIp(a) ?? a));
  const have = new Set(current);
  return {
    add: [...want].filter((a) => !have.has(a)),
    remove: current.filter((a) => !want.has(a) && owns(a)),
  };
}

export class LinkAddressManager implements AddressManager {
  private readonly rt = new RtNetlink();
  private readonly name: string;
  private index: number | undefined;

  constructor(name: string) {
    this.name = name;
  }

  private link(): number {
    this.index ??= this.rt.ensureDummy(this.name);
    return this.index;
  }

  async list(): Promise<string[]> {
    return this.rt.addresses(this.link()).map((a) => a.address);
  }

  async sync(wanted: readonly string[], owns: (address: string) => boolean): Promise<AddressSyncResult> {
    // The interface may have been deleted by hand: look it up again each pass.
    this.index = undefined;
    const index = this.link();
    const { add, remove } = diff(await this.list(), wanted, owns);
    const result: AddressSyncResult = { added: [], removed: [], failed: [] };
    if (!add.length && !remove.length) return result;
    const toLink = (a: string) => ({
      address: a,
      family: ipFamily(a)!,
      prefix: ipFamily(a) === 'ipv4' ? 32 : 128,
    });
    const errors = await this.rt.changeAddresses(index, add.map(toLink), remove.map(toLink));
    [...add, ...remove].forEach((address, i) => {
      const err = errors[i];
      if (err) result.failed.push({ address, code: errorCode(err), message: err.message });
      else if (i < add.length) result.added.push(address);
      else result.removed.push(address);
    });
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
    const { add, remove } = diff([...this.addresses], wanted, owns);
    for (const a of add) this.addresses.add(a);
    for (const a of remove) this.addresses.delete(a);
    this.changes += add.length + remove.length;
    return { added: add, removed: remove, failed: [] };
  }

  close(): void {}
}
