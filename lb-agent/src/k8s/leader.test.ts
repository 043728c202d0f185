import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ManualClock } from '../util/clock.ts';
import { type Json, KubeApiError } from './client.ts';
import { LeaderElector, type LeaseClient } from './leader.ts';

/** One Lease in memory with the API server's optimistic concurrency. */
class MemoryLeases implements LeaseClient {
  lease: Json | undefined;
  version = 0;
  puts = 0;
  signals: AbortSignal[] = [];
  async request(method: string, _path: string, o: { body?: Json; signal?: AbortSignal } = {}): Promise<Json> {
    if (o.signal) this.signals.push(o.signal);
    if (method === 'GET') {
      if (!this.lease) throw new KubeApiError(404, 'NotFound', 'not found');
      return structuredClone(this.lease);
    }
    if (method === 'POST' && this.lease) throw new KubeApiError(409, 'AlreadyExists', 'exists');
    if (method === 'PUT' && o.body.metadata.resourceVersion !== String(this.version))
      throw new KubeApiError(409, 'Conflict', 'conflict');
    if (method === 'PUT') this.puts++;
    this.lease = { ...o.body, metadata: { ...o.body.metadata, resourceVersion: String(++this.version) } };
    return structuredClone(this.lease);
  }
}

const settle = async () => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
};

const options = (client: LeaseClient, clock: ManualClock, identity: string) => ({
  client,
  namespace: 'portlb-system',
  name: 'portlb-controller',
  identity,
  leaseDurationMs: 15_000,
  renewDeadlineMs: 10_000,
  retryPeriodMs: 2_000,
  clock,
});

test('a leader keeps renewing when the monotonic clock has fractions of milliseconds (as performance.now() does)', async () => {
  const clock = new ManualClock();
  // Every reading a little later than the last: real code takes time between two readings.
  let drift = 0;
  const jittery = Object.assign(Object.create(clock), {
    monotonic: () => {
      drift += 0.37;
      return clock.monotonic() + drift;
    },
  });
  const leases = new MemoryLeases();
  const elector = new LeaderElector({ ...options(leases, clock, 'a'), clock: jittery }).start();
  let stopped = 0;
  elector.on('stopped', () => stopped++);
  await settle();
  assert.ok(elector.isLeader(), 'acquired');
  for (let i = 0; i < 20; i++) await clock.advance(2_000);
  assert.ok(elector.isLeader(), 'still leading');
  assert.equal(stopped, 0, 'never stepped down');
  assert.ok(leases.puts >= 19, `renewed every retry period (${leases.puts} renewals)`);
  await elector.close();
});

test('another replica takes over only after the holder stopped renewing for the lease duration', async () => {
  const clock = new ManualClock();
  const leases = new MemoryLeases();
  const a = new LeaderElector(options(leases, clock, 'a')).start();
  await settle();
  const b = new LeaderElector(options(leases, clock, 'b')).start();
  for (let i = 0; i < 10; i++) await clock.advance(2_000);
  assert.ok(a.isLeader() && !b.isLeader());
  // a freezes (its loop no longer runs: closing without release stands in for it).
  (a as unknown as { stopper: AbortController }).stopper.abort();
  await clock.advance(2_000);
  assert.ok(!b.isLeader(), 'not before the lease duration');
  for (let i = 0; i < 8; i++) await clock.advance(2_000);
  assert.ok(b.isLeader(), 'b took over');
  assert.ok(!a.isLeader(), 'a, past its renew deadline, does not think it leads');
  await b.close();
});
