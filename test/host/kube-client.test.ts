// portlb's Kubernetes client against the fake API server over HTTPS, as a real cluster
// serves it: what the client keeps after a request.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { KubeClient } from '../../lb-agent/src/k8s/client.ts';
import { leanService } from '../../lb-agent/src/k8s/objects.ts';
import { Reflector } from '../../lb-agent/src/k8s/reflector.ts';
import { systemClock } from '../../lb-agent/src/util/clock.ts';
import { FakeKubeApi } from '../harness/fake-kube-api.ts';
import { makeServingCert } from '../harness/fake-kube-api-server.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const dir = mkdtempSync(path.join(tmpdir(), 'portlb-kube-client-'));
const api = new FakeKubeApi({ tls: makeServingCert(dir, ['127.0.0.1']) });
before(() => api.start());
after(async () => {
  await api.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('an answer is let go with its caller: the idle keep-alive TLS socket does not hold it', async () => {
  // Node's agent keeps a TLS socket's first request reachable while the socket lives; a
  // 10,000-Service list page stayed in the agent's heap that way (parsed and as bytes, 8 MB).
  for (let i = 0; i < 500; i++)
    api.create('services', { metadata: { name: `s${i}`, namespace: 'held' }, spec: { type: 'ClusterIP' } });
  const client = new KubeClient(api.connection());
  try {
    let answer: { items: unknown[] } | undefined = await client.request(
      'GET',
      '/api/v1/namespaces/held/services',
    );
    assert.equal(answer?.items.length, 500);
    const held = new WeakRef(answer!);
    answer = undefined;
    for (let i = 0; i < 5 && held.deref(); i++) {
      await new Promise((r) => setImmediate(r));
      gc();
    }
    assert.equal(held.deref(), undefined, 'the answer is still reachable after the caller dropped it');
    // The socket is still there for the next request (keep-alive), and it works.
    const again: { items: unknown[] } = await client.request('GET', '/api/v1/namespaces/held/services');
    assert.equal(again.items.length, 500);
  } finally {
    client.close();
  }
});

test('a list in pages: the reflector follows continue to the last page', async () => {
  for (let i = 0; i < 5; i++)
    api.create('services', { metadata: { name: `p${i}`, namespace: 'paged' }, spec: { type: 'ClusterIP' } });
  const client = new KubeClient(api.connection());
  const reflector = new Reflector({
    name: 'services',
    client,
    path: '/api/v1/namespaces/paged/services',
    transform: leanService,
    key: (s) => s.id,
    onChange: () => {},
    clock: systemClock,
    pageSize: 2,
  });
  try {
    reflector.start();
    for (let i = 0; i < 100 && !reflector.synced(); i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(reflector.synced(), 'listed');
    assert.deepEqual(
      reflector
        .list()
        .map((s) => s.name)
        .sort(),
      ['p0', 'p1', 'p2', 'p3', 'p4'],
    );
  } finally {
    await reflector.stop();
    client.close();
  }
});
