// Shared settings of the property-based tests (fast-check): a few thousand cases per run
// in the unit phase; PORTLB_FUZZ_RUNS=N for a longer run (e.g. 200000 before a release).
import { PortlbError } from '../errors.ts';

export const FUZZ_RUNS = Number(process.env.PORTLB_FUZZ_RUNS ?? 2000);

/** Runs `fn`; an expected outcome is a value or one of portlb's own typed errors. */
export function typedOutcome(fn: () => unknown): void {
  try {
    fn();
  } catch (err) {
    if (err instanceof PortlbError) return;
    throw err;
  }
}
