// Every agent metric is documented for operators (docs/deploy.md), under its real name.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { AgentMetrics } from './metrics.ts';

test('every portlb metric is in the metrics table of docs/deploy.md, and nothing else is', async () => {
  const metrics = new AgentMetrics();
  const exposed = (await metrics.registry.getMetricsAsJSON())
    .map((m) => m.name)
    .filter((n) => n.startsWith('portlb_'))
    .sort();
  const doc = readFileSync(path.join(import.meta.dirname, '../../../docs/deploy.md'), 'utf8');
  const documented = [...doc.matchAll(/^\| `(portlb_[a-z_]+)` \|/gm)].map((m) => m[1]).sort();
  assert.ok(exposed.length >= 20, `${exposed.length} metrics`);
  assert.deepEqual(documented, exposed);
  assert.ok(
    exposed.length < (await metrics.registry.getMetricsAsJSON()).length,
    'process metrics are exposed too',
  );
});
