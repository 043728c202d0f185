// The fake API server's own contract (what the controller tests rely on), over raw HTTP.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { FakeKubeApi } from '../harness/fake-kube-api.ts';

describe('fake Kubernetes API server', () => {
  const api = new FakeKubeApi();
  before(() => api.start());
  after(() => api.stop());

  const get = async (path: string) => {
    const r = await fetch(`${api.url}${path}`);
    return { status: r.status, body: (await r.json()) as Record<string, any> };
  };

  test('list: collection resourceVersion, items without kind; label and field selectors', async () => {
    api.create('services', {
      metadata: { name: 'a', namespace: 'x', labels: { app: 'web', tier: 'fe' } },
      spec: { type: 'LoadBalancer' },
    });
    api.create('services', {
      metadata: { name: 'b', namespace: 'y', labels: { app: 'db' } },
      spec: { type: 'ClusterIP' },
    });
    const all = await get('/api/v1/services');
    assert.equal(all.body.kind, 'ServiceList');
    assert.ok(Number(all.body.metadata.resourceVersion) > 0);
    assert.equal(all.body.items.length, 2);
    assert.equal(all.body.items[0].kind, undefined);
    const sel = (q: string) =>
      get(`/api/v1/services?${q}`).then((r) => r.body.items.map((i: any) => i.metadata.name).sort());
    assert.deepEqual(await sel('labelSelector=app%3Dweb'), ['a']);
    assert.deepEqual(await sel('labelSelector=app!%3Dweb'), ['b']);
    assert.deepEqual(await sel('labelSelector=tier'), ['a']);
    assert.deepEqual(await sel('labelSelector=app%20in%20(db,cache)'), ['b']);
    assert.deepEqual(await sel('fieldSelector=spec.type%3DLoadBalancer'), ['a']);
    assert.deepEqual(await sel('fieldSelector=metadata.namespace%3Dy'), ['b']);
    assert.deepEqual((await get('/api/v1/namespaces/x/services')).body.items.length, 1);
  });

  test("list in pages: limit and continue in key order, every page at the first page's version, 410 once compacted", async () => {
    for (const name of ['p3', 'p1', 'p4', 'p2', 'p5'])
      api.create('services', { metadata: { name, namespace: 'paged' }, spec: { type: 'ClusterIP' } });
    const path = '/api/v1/namespaces/paged/services';
    const namesOf = (items: { metadata: { name: string } }[]) => items.map((i) => i.metadata.name);
    const first = await get(`${path}?limit=2`);
    assert.deepEqual(namesOf(first.body.items), ['p1', 'p2']);
    const rv = first.body.metadata.resourceVersion;
    assert.ok(first.body.metadata.continue);
    api.create('services', { metadata: { name: 'p0', namespace: 'paged' }, spec: { type: 'ClusterIP' } });
    const names: string[] = [];
    let next = first.body.metadata.continue;
    while (next) {
      const page = await get(`${path}?limit=2&continue=${encodeURIComponent(next)}`);
      assert.equal(page.status, 200);
      assert.equal(page.body.metadata.resourceVersion, rv);
      names.push(...namesOf(page.body.items));
      next = page.body.metadata.continue;
    }
    assert.deepEqual(names, ['p3', 'p4', 'p5']);
    assert.equal((await get(path)).body.items.length, 6, 'no limit: one page of all');
    const again = await get(`${path}?limit=2`);
    api.create('services', { metadata: { name: 'p6', namespace: 'paged' }, spec: { type: 'ClusterIP' } });
    api.compact();
    const expired = await get(`${path}?limit=2&continue=${encodeURIComponent(again.body.metadata.continue)}`);
    assert.equal(expired.status, 410);
    assert.equal(expired.body.reason, 'Expired');
    assert.equal((await get(`${path}?continue=bogus`)).status, 400);
  });

  test('409 on a stale resourceVersion or an existing name; status subresource isolation', async () => {
    const cur = api.get('services', 'x', 'a')!;
    const put = (path: string, body: unknown) =>
      fetch(`${api.url}${path}`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const stale = { ...cur, metadata: { ...cur.metadata, resourceVersion: '1' } };
    assert.equal((await put('/api/v1/namespaces/x/services/a', stale)).status, 409);
    assert.throws(
      () => api.create('services', { metadata: { name: 'a', namespace: 'x' } }),
      /already exists/,
    );
    // A main update cannot change status; the status subresource changes only status.
    const withStatus = {
      ...cur,
      spec: { type: 'NodePort' },
      status: { loadBalancer: { ingress: [{ ip: '1.2.3.4' }] } },
    };
    await put('/api/v1/namespaces/x/services/a', withStatus);
    assert.equal(api.get('services', 'x', 'a')!.spec.type, 'NodePort');
    assert.deepEqual(api.get('services', 'x', 'a')!.status, undefined);
    const r = await fetch(`${api.url}/api/v1/namespaces/x/services/a/status`, {
      method: 'PATCH',
      headers: { 'content-type': 'application/merge-patch+json' },
      body: JSON.stringify({
        spec: { type: 'ClusterIP' },
        status: { loadBalancer: { ingress: [{ ip: '1.2.3.4', ipMode: 'Proxy' }] } },
      }),
    });
    assert.equal(r.status, 200);
    const after = api.get('services', 'x', 'a')!;
    assert.equal(after.spec.type, 'NodePort');
    assert.equal(after.status.loadBalancer.ingress[0].ipMode, 'Proxy');
  });

  test('watch: replays from a resourceVersion, streams live events, bookmarks when asked, 410 after compaction', async () => {
    const rv = api.get('services', 'x', 'a')!.metadata.resourceVersion;
    api.mutate('services', 'x', 'a', (o) => {
      o.metadata.labels.v = '2';
    });
    const ac = new AbortController();
    const res = await fetch(
      `${api.url}/api/v1/services?watch=true&resourceVersion=${rv}&allowWatchBookmarks=true`,
      { signal: ac.signal },
    );
    const reader = res.body!.getReader();
    let text = '';
    const next = async () => {
      while (!text.includes('\n')) text += new TextDecoder().decode((await reader.read()).value);
      const line = text.slice(0, text.indexOf('\n'));
      text = text.slice(text.indexOf('\n') + 1);
      return JSON.parse(line);
    };
    const replay = await next();
    assert.equal(replay.type, 'MODIFIED');
    assert.equal(replay.object.kind, 'Service');
    await next(); // the second replayed modification (status)
    assert.equal((await next()).type, 'BOOKMARK');
    api.remove('services', 'y', 'b');
    const live = await next();
    assert.deepEqual([live.type, live.object.metadata.name], ['DELETED', 'b']);
    ac.abort();
    api.compact();
    const gone = await fetch(`${api.url}/api/v1/services?watch=true&resourceVersion=${rv}`);
    assert.equal(gone.status, 410);
  });
});
