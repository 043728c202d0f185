/**
 * The `limit` smallest items by `compare`, chosen while they are added one at a time (a
 * bounded max-heap): a report that keeps the first 1,000 of 10,000 VIPs sorts 1,000, not
 * 10,000 in one go on the event loop.
 */
export class Smallest<T> {
  private readonly heap: T[] = [];
  private readonly limit: number;
  private readonly compare: (a: T, b: T) => number;
  /** How many were added. */
  count = 0;

  constructor(limit: number, compare: (a: T, b: T) => number) {
    this.limit = limit;
    this.compare = compare;
  }

  add(item: T): void {
    this.count++;
    const h = this.heap;
    if (h.length < this.limit) {
      h.push(item);
      this.up(h.length - 1);
    } else if (h.length > 0 && this.compare(item, h[0]!) < 0) {
      h[0] = item;
      this.down(0);
    }
  }

  /** The kept items, smallest first. */
  sorted(): T[] {
    return [...this.heap].sort(this.compare);
  }

  private up(i: number): void {
    const h = this.heap;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (this.compare(h[i]!, h[parent]!) <= 0) return;
      [h[i], h[parent]] = [h[parent]!, h[i]!];
      i = parent;
    }
  }

  private down(i: number): void {
    const h = this.heap;
    for (;;) {
      const left = 2 * i + 1;
      let largest = i;
      if (left < h.length && this.compare(h[left]!, h[largest]!) > 0) largest = left;
      if (left + 1 < h.length && this.compare(h[left + 1]!, h[largest]!) > 0) largest = left + 1;
      if (largest === i) return;
      [h[i], h[largest]] = [h[largest]!, h[i]!];
      i = largest;
    }
  }
}
