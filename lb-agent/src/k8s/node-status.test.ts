import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ManualClock } from '../util/clock.ts';
import { type Json, KubeApiError } from './client.ts';
import type { LaneWork } from './lane.ts';
import {
  comparableText,
  NODE_STATUS_LIMITS,
  NODE_STATUS_PATH,
  NodeStatusPublisher,
  type NodeStatusReport,
  nodeStatusObject,
} from './node-status.ts';

const report = (o: Partial<NodeStatusReport> = {}): NodeStatusReport => ({
  node: 'edge-1',
  identity: 'portlb-abcde',
  version: '0.1.0',
  ready: true,
  reasons: [],
  leader: false,
  lastSync: { at: '2026-12-02T00:00:00.000Z', ok: true },
  speakerConnected: true,
  peers: [{ address: '192.0.2.1', asn: 65000, state: 'established', bfd: 'up' }],
  vips: [
    { address: '203.0.113.2', owners: ['shop/b'], announced: false, withheld: 'NoReadyBackends' },
    { address: '203.0.113.1', owners: ['shop/a'], announced: true, withheld: null },
  ],
  services: [
    {
      id: 'tcp:203.0.113.1:80',
      vip: '203.0.113.1',
      owner: 'shop/a',
      state: 'programmed',
      backends: [
        { address: '10.1.0.2:8080', weight: 1, health: null },
        { address: '10.1.0.1:8080', weight: 0, health: 'down' },
      ],
    },
  ],
  ...o,
});

describe('comparableText', () => {
  test('the long lists a slice at a time; any change but the last pass time changes it', async () => {
    const many = (n: number) =>
      Array.from({ length: n }, (_, i) => ({
        address: `203.0.113.${i}`,
        owners: [`shop/s${i}`],
        announced: true,
        withheld: null,
      }));
    let pauses = 0;
    const text = (r: NodeStatusReport) =>
      comparableText(nodeStatusObject(r, 'uid-1'), () => {
        pauses++;
        return undefined;
      });
    const base = await text(report({ vips: many(120) }));
    assert.equal(pauses, 4, 'three slices of VIPs, one of services');
    assert.equal(await text(report({ vips: many(120) })), base, 'the same object, the same text');
    assert.equal(
      await text(report({ vips: many(120), lastSync: { at: '2026-12-02T00:10:00.000Z', ok: true } })),
      base,
      "a pass's time alone is no change",
    );
    const changed = many(120);
    changed[77]!.announced = false;
    assert.notEqual(await text(report({ vips: changed })), base, 'one VIP withdrawn');
    assert.notEqual(
      await text(report({ vips: many(120), lastSync: { at: '2026-12-02T00:00:00.000Z', ok: false } })),
      base,
      'a failed pass',
    );
    const services = report().services;
    services[0]!.backends[1]!.health = 'up';
    assert.notEqual(await text(report({ vips: many(120), services })), base, "a backend's health");
  });
});

describe('nodeStatusObject', () => {
  test('one object per node, owned by the Node, lists sorted, counts summarized', () => {
    const o = nodeStatusObject(report(), 'uid-1');
    assert.equal(o.apiVersion, 'portlb.io/v1alpha1');
    assert.equal(o.kind, 'PortlbNodeStatus');
    assert.equal(o.metadata.name, 'edge-1');
    assert.deepEqual(o.metadata.ownerReferences, [
      { apiVersion: 'v1', kind: 'Node', name: 'edge-1', uid: 'uid-1' },
    ]);
    assert.deepEqual(
      o.status.vips.map((v: Json) => [v.address, v.announced, v.withheld]),
      [
        ['203.0.113.1', true, undefined],
        ['203.0.113.2', false, 'NoReadyBackends'],
      ],
    );
    assert.deepEqual(o.status.summary, { vipsAnnounced: 1, vipsWithheld: 1, peersEstablished: 1, peers: 1 });
    assert.deepEqual(
      o.status.services[0].backends.map((b: Json) => b.address),
      ['10.1.0.1:8080', '10.1.0.2:8080'],
    );
    assert.equal(o.status.services[0].backendCount, 2);
    assert.deepEqual(o.status.truncated, { vips: 0, services: 0 });
  });

  test('bounded: past the limits the lists are cut and the object says how many were left out', () => {
    const many = NODE_STATUS_LIMITS.vips + 5;
    const vips = Array.from({ length: many }, (_, i) => ({
      address: `10.9.${Math.floor(i / 250)}.${i % 250}`,
      owners: [`ns/s${i}`],
      announced: true,
      withheld: null,
    }));
    const services = Array.from({ length: NODE_STATUS_LIMITS.services + 3 }, (_, i) => ({
      id: `tcp:10.9.0.${i}:80`,
      vip: `10.9.0.${i}`,
      owner: `ns/s${i}`,
      state: 'programmed',
      backends: Array.from({ length: NODE_STATUS_LIMITS.backendsPerService + 10 }, (_, b) => ({
        address: `10.1.${b}.1:80`,
        weight: 1,
        health: null,
      })),
    }));
    const o = nodeStatusObject(report({ vips, services }), 'uid-1');
    assert.equal(o.status.vips.length, NODE_STATUS_LIMITS.vips);
    assert.equal(o.status.services.length, NODE_STATUS_LIMITS.services);
    assert.equal(o.status.services[0].backends.length, NODE_STATUS_LIMITS.backendsPerService);
    assert.equal(o.status.services[0].backendCount, NODE_STATUS_LIMITS.backendsPerService + 10);
    assert.deepEqual(o.status.truncated, { vips: 5, services: 3 });
    assert.equal(o.status.summary.vipsAnnounced, many, 'the summary counts everything');
    assert.ok(JSON.stringify(o).length < 1_000_000, 'well under etcd’s 1.5 MB');
  });
});

/** An API server for one object, answering as the real one does for a custom resource. */
class OneObjectApi {
  obj: Json | undefined;
  rv = 0;
  calls: string[] = [];
  fail: KubeApiError | undefined;
  async request(method: string, path: string, o: { body?: unknown } = {}): Promise<Json> {
    this.calls.push(`${method} ${path === NODE_STATUS_PATH ? 'collection' : 'object'}`);
    if (this.fail) throw this.fail;
    const body = o.body as Json;
    if (method === 'GET') {
      if (!this.obj) throw new KubeApiError(404, 'NotFound', 'not found');
      return structuredClone(this.obj);
    }
    if (method === 'POST') {
      if (this.obj) throw new KubeApiError(409, 'AlreadyExists', 'exists');
      this.obj = { ...body, metadata: { ...body.metadata, resourceVersion: String(++this.rv) } };
      return structuredClone(this.obj);
    }
    if (method === 'PUT') {
      if (!this.obj) throw new KubeApiError(404, 'NotFound', 'not found');
      if (!body.metadata.resourceVersion)
        throw new KubeApiError(422, 'Invalid', 'must be specified for an update');
      if (body.metadata.resourceVersion !== this.obj.metadata.resourceVersion)
        throw new KubeApiError(409, 'Conflict', 'modified');
      this.obj = { ...body, metadata: { ...body.metadata, resourceVersion: String(++this.rv) } };
      return structuredClone(this.obj);
    }
    if (method === 'DELETE') {
      if (!this.obj) throw new KubeApiError(404, 'NotFound', 'not found');
      this.obj = undefined;
      return {};
    }
    throw new Error(method);
  }
}

describe('NodeStatusPublisher', () => {
  const rig = (o: { uid?: string | undefined } = { uid: 'uid-1' }) => {
    const api = new OneObjectApi();
    const clock = new ManualClock();
    let current = report();
    const queued: LaneWork[] = [];
    const writes: boolean[] = [];
    const p = new NodeStatusPublisher({
      client: api,
      lane: { submit: (w) => queued.push(w) },
      node: 'edge-1',
      nodeUid: () => o.uid,
      collect: async () => current,
      clock,
      intervalMs: 10_000,
      refreshMs: 300_000,
      onWrite: (ok) => writes.push(ok),
    });
    const flush = async () => {
      for (const w of queued.splice(0)) await w.run(AbortSignal.timeout(1000)).catch(() => {});
    };
    return { api, clock, p, queued, writes, flush, set: (r: NodeStatusReport) => (current = r) };
  };

  test('creates, then writes only on change or when the refresh is due, naming the version it last wrote', async () => {
    const r = rig();
    await r.p.tick();
    await r.flush();
    assert.deepEqual(r.api.calls, ['GET object', 'POST collection']);
    assert.ok(r.api.obj.status.observedAt);
    await r.clock.advance(10_000);
    await r.p.tick();
    assert.equal(r.queued.length, 0, 'unchanged: not written');
    r.set(report({ ready: false, reasons: ['BGP speaker not connected'] }));
    await r.p.tick();
    await r.flush();
    assert.deepEqual(r.api.calls.slice(2), ['PUT object']);
    assert.equal(r.api.obj.status.agent.ready, false);
    await r.clock.advance(300_000);
    await r.p.tick();
    await r.flush();
    assert.deepEqual(r.api.calls.slice(3), ['PUT object'], 'refreshed unchanged');
    assert.deepEqual(r.writes, [true, true, true]);
  });

  test("a pass's time alone is no change (a resync's pass runs every 10 s): written with the next change or refresh", async () => {
    const r = rig();
    await r.p.tick();
    await r.flush();
    const at = (s: string) => report({ lastSync: { at: s, ok: true } });
    r.set(at('2026-12-02T00:00:10.000Z'));
    await r.clock.advance(10_000);
    await r.p.tick();
    assert.equal(r.queued.length, 0, 'not written for a newer pass alone');
    r.set(report({ lastSync: { at: '2026-12-02T00:00:20.000Z', ok: false } }));
    await r.p.tick();
    await r.flush();
    assert.deepEqual(r.api.calls.slice(2), ['PUT object'], 'a failed pass is a change');
    assert.deepEqual(r.api.obj.status.agent.lastSync, { at: '2026-12-02T00:00:20.000Z', ok: false });
    r.set(at('2026-12-02T00:05:30.000Z'));
    await r.clock.advance(300_000);
    await r.p.tick();
    await r.flush();
    assert.deepEqual(r.api.calls.slice(3), ['PUT object'], 'the refresh writes the time of the last pass');
    assert.equal(r.api.obj.status.agent.lastSync.at, '2026-12-02T00:05:30.000Z');
  });

  test('someone else changed or deleted it: read again and written; a failed write is retried at the next tick', async () => {
    const r = rig();
    await r.p.tick();
    await r.flush();
    r.api.obj.metadata.resourceVersion = '99'; // edited by hand
    r.set(report({ leader: true }));
    await r.p.tick();
    await r.flush();
    assert.deepEqual(r.api.calls.slice(2), ['PUT object', 'GET object', 'PUT object']);
    assert.equal(r.api.obj.status.agent.leader, true);
    r.api.obj = undefined; // deleted by hand
    r.set(report({ leader: false }));
    await r.p.tick();
    await r.flush();
    assert.deepEqual(r.api.calls.slice(5), ['PUT object', 'GET object', 'POST collection']);
    r.api.fail = new KubeApiError(503, 'ServiceUnavailable', 'down');
    r.set(report({ ready: false }));
    await r.p.tick();
    await r.flush();
    r.api.fail = undefined;
    await r.p.tick();
    await r.flush();
    assert.equal(r.api.obj.status.agent.ready, false);
    assert.deepEqual(r.writes, [true, true, true, false, true]);
  });

  test('nothing is written for a Node it does not know (not listed yet, or deleted): the object would outlive it', async () => {
    const r = rig({ uid: undefined });
    await r.p.tick();
    assert.equal(r.queued.length, 0);
  });

  test('close with remove deletes the object; without, it stays (to go stale)', async () => {
    const r = rig();
    await r.p.tick();
    await r.flush();
    await r.p.close({ remove: false });
    assert.ok(r.api.obj);
    await r.p.close({ remove: true });
    assert.equal(r.api.obj, undefined);
  });
});
