// Arrays kept for the agent's life, at their own length. V8 gives an array that grows by
// push, or comes out of filter or flatMap, room for 17 elements: a one-element array held
// that way costs 152 bytes instead of 24, and at 10,000 Services the desired state, the
// intents and the kernel cache held about 70,000 such arrays (a heap snapshot: 80,809
// arrays of 17 slots before, 10,800 after; 9 MB of a 133 MB heap).
export function compact<T>(a: readonly T[]): T[] {
  return a.slice();
}
