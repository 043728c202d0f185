// A data plane over fakes for tests of what drives it (the reconciler, coexistence): the
// options every such test takes, with the fakes and clock overridable.
import { ManualClock } from '../util/clock.ts';
import { DataPlane, type DataPlaneOptions } from './data-plane.ts';
import { FakeNetfilter } from './netfilter.ts';
import { FakeAddressManager } from './vips.ts';

/** Ownership of the tests: 203.0.113.0/24. */
export const testOwns = (a: string) => a.startsWith('203.0.113.');

export function fakeDataPlane(o: Partial<DataPlaneOptions> & Pick<DataPlaneOptions, 'ipvs'>): DataPlane {
  return new DataPlane({
    addresses: new FakeAddressManager(),
    netfilter: new FakeNetfilter(),
    vipFilter: true,
    snat: true,
    owns: testOwns,
    drainTimeoutMs: 30_000,
    clock: new ManualClock(),
    ...o,
  });
}
