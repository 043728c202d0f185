import type { Pause } from './slicer.ts';
/**
 * Work written once as a generator that yields between items, run either at once or in
 * slices: the same rule whether a caller can wait or not (a full pass at 10,000 services
 * must not hold the event loop; a test or a one-off computation need not care).
 */
export function runSteps<T>(steps: Generator<void, T>): T {
  let step = steps.next();
  while (!step.done) step = steps.next();
  return step.value;
}

/** Runs `steps`, awaiting `pause` (a TimeSlicer's) between items. */
export async function runStepsSliced<T>(steps: Generator<void, T>, pause: Pause): Promise<T> {
  let step = steps.next();
  while (!step.done) {
    await pause();
    step = steps.next();
  }
  return step.value;
}
