// Every agent metric is documented for operators (docs/deploy.md), under its real name.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import parse from 'parse-prometheus-text-format';
import { parse as parseYaml } from 'yaml';
import { VERSION } from '../version.ts';
import { AgentMetrics, ownerLabels } from './metrics.ts';
import type { ServiceFigures } from './service-stats.ts';

test('every portlb metric is in the metrics table of docs/deploy.md, and nothing else is', async () => {
  const metrics = new AgentMetrics();
  const exposed = (await metrics.familyNames()).filter((n) => n.startsWith('portlb_')).sort();
  const doc = readFileSync(path.join(import.meta.dirname, '../../../docs/deploy.md'), 'utf8');
  const documented = [...doc.matchAll(/^\| `(portlb_[a-z_]+)` \|/gm)].map((m) => m[1]).sort();
  assert.ok(exposed.length >= 20, `${exposed.length} metrics`);
  assert.deepEqual(documented, exposed);
  assert.ok(
    exposed.length < (await metrics.registry.getMetricsAsJSON()).length,
    'process metrics are exposed too',
  );
});

/** The agent's exposition with a sample of every labelled kind, parsed by a real parser. */
async function exposition() {
  const metrics = new AgentMetrics();
  const key = { kind: 'address', family: 'ipv4', protocol: 'tcp', address: '203.0.113.1', port: 80 } as const;
  const render = metrics.serviceStats(new Map([['tcp:203.0.113.1:80', 'shop/web']]));
  render.add({ key, stats: { connections: 12, bytesIn: 3400, bytesOut: 0 } as never, activeConnections: 5 });
  render.commit();
  metrics.errors.inc({ code: 'KERNEL_ERROR', step: 'status' });
  metrics.syncs.inc({ result: 'ok' });
  return { metrics, families: parse(await metrics.exposition()) };
}

test('per-service figures: encoded as added, replaced whole, odd owner names escaped', async () => {
  const metrics = new AgentMetrics();
  const svc = (address: string, connections: number): ServiceFigures => ({
    key: { kind: 'address', family: 'ipv4', protocol: 'udp', address, port: 53 },
    stats: { connections, bytesIn: 1, bytesOut: 2 } as never,
    activeConnections: 0,
  });
  const set = async (figures: ServiceFigures[], owners: Map<string, string>) => {
    const render = metrics.serviceStats(owners);
    for (const f of figures) render.add(f);
    render.commit();
  };
  await set(
    [svc('203.0.113.1', 7), svc('203.0.113.2', 8)],
    new Map([['udp:203.0.113.1:53', 'file:dns "a"\\b']]),
  );
  const conns = () =>
    metrics
      .exposition()
      .then((t) => parse(t).find((f) => f.name === 'portlb_ipvs_service_connections_total')!);
  assert.deepEqual(
    (await conns()).metrics.map((m) => [m.labels!.service, m.labels!.vip, m.value]),
    [
      ['dns "a"\\b', '203.0.113.1', '7'],
      ['', '203.0.113.2', '8'],
    ],
  );
  await set([svc('203.0.113.2', 9)], new Map());
  assert.deepEqual(
    (await conns()).metrics.map((m) => [m.labels!.vip, m.value]),
    [['203.0.113.2', '9']],
  );
  await set([], new Map());
  assert.deepEqual((await conns()).metrics, [], 'no series, the family still described');
});

test('per-service figures: thousands of series across chunk boundaries, multi-byte owner names intact', async () => {
  const metrics = new AgentMetrics();
  const render = metrics.serviceStats(
    new Map(Array.from({ length: 3000 }, (_, i) => [`tcp:10.1.${i >> 8}.${i & 255}:80`, `ns/wéb-ü-${i}`])),
  );
  for (let i = 0; i < 3000; i++)
    render.add({
      key: {
        kind: 'address',
        family: 'ipv4',
        protocol: 'tcp',
        address: `10.1.${i >> 8}.${i & 255}`,
        port: 80,
      },
      stats: { connections: i, bytesIn: 1, bytesOut: 2 } as never,
      activeConnections: i % 7,
    });
  render.commit();
  const chunks = await metrics.expositionChunks();
  assert.ok(chunks.length > 8, `several chunks per family (${chunks.length})`);
  const families = parse(await metrics.exposition());
  const conns = families.find((f) => f.name === 'portlb_ipvs_service_connections_total')!;
  assert.equal(conns.metrics.length, 3000);
  assert.deepEqual(
    conns.metrics.map((m) => [m.labels!.service, m.value]).filter((_, i) => i % 997 === 0),
    [0, 997, 1994, 2991].map((i) => [`wéb-ü-${i}`, String(i)]),
  );
  const active = families.find((f) => f.name === 'portlb_ipvs_active_connections')!;
  assert.equal(active.metrics[2999]!.value, String(2999 % 7));
});

test('the exposition parses with a Prometheus text parser and follows the naming conventions', async () => {
  const { families } = await exposition();
  const ours = families.filter((f) => f.name.startsWith('portlb_'));
  assert.ok(ours.length >= 20);
  for (const f of ours) {
    assert.match(f.name, /^portlb_[a-z0-9]+(_[a-z0-9]+)*$/, 'snake case');
    assert.ok(f.help.length > 10, `${f.name} has help`);
    assert.equal(
      f.type === 'COUNTER',
      f.name.endsWith('_total'),
      `${f.name}: counters and only counters end in _total`,
    );
    if (f.type === 'HISTOGRAM') assert.match(f.name, /_seconds$/, `${f.name}: base unit`);
  }
  const conns = ours.find((f) => f.name === 'portlb_ipvs_service_connections_total')!;
  assert.deepEqual(conns.metrics, [
    {
      value: '12',
      labels: { namespace: 'shop', service: 'web', vip: '203.0.113.1', port: '80', protocol: 'tcp' },
    },
  ]);
  const active = ours.find((f) => f.name === 'portlb_ipvs_active_connections')!;
  assert.equal(active.metrics[0]!.value, '5');
  const build = ours.find((f) => f.name === 'portlb_build_info')!;
  assert.equal(build.metrics[0]!.value, '1');
  assert.equal(build.metrics[0]!.labels!.version, VERSION);
});

test('owner ids become namespace and service labels', () => {
  assert.deepEqual(ownerLabels('shop/web'), { namespace: 'shop', service: 'web' });
  assert.deepEqual(ownerLabels('file:dns'), { namespace: '', service: 'dns' });
  assert.deepEqual(ownerLabels(undefined), { namespace: '', service: '' });
});

// The chart's alert rules and dashboard are checked against what the agent exports: a
// renamed metric or label would otherwise leave an alert that can never fire.
test('every alert rule and dashboard query uses only metrics and labels the agent exports', async () => {
  const { metrics } = await exposition();
  const chart = path.join(import.meta.dirname, '../../../deploy/helm/portlb/files');
  const rules = parseYaml(readFileSync(path.join(chart, 'alerts.yaml'), 'utf8')) as {
    alert: string;
    expr: string;
  }[];
  const dashboard = JSON.parse(readFileSync(path.join(chart, 'dashboard.json'), 'utf8')) as {
    panels: { title: string; targets: { expr: string }[] }[];
    templating: { list: { query?: string | { query: string } }[] };
  };
  const queries = [
    ...rules.map((r) => ({ what: `alert ${r.alert}`, expr: r.expr })),
    ...dashboard.panels.flatMap((p) => p.targets.map((t) => ({ what: `panel ${p.title}`, expr: t.expr }))),
    ...dashboard.templating.list.flatMap((v) =>
      typeof v.query === 'object' ? [{ what: 'variable', expr: v.query.query }] : [],
    ),
  ];
  assert.ok(rules.length >= 10 && dashboard.panels.length >= 10);
  // Labels every series has once scraped (the ServiceMonitor adds node).
  const scrape = ['instance', 'job', 'node', 'le'];
  const labelsOf = (name: string): readonly string[] | undefined => {
    const base = name.replace(/_(bucket|sum|count)$/, '');
    return metrics.labelNamesOf(name) ?? metrics.labelNamesOf(base);
  };
  const problems: string[] = [];
  for (const q of queries) {
    const names = [...q.expr.matchAll(/\b((?:portlb|process|nodejs)_[a-z0-9_]+)/g)].map((m) => m[1]!);
    if (!names.length) problems.push(`${q.what}: no metric`);
    const known = new Set(scrape);
    for (const n of names) {
      const labels = labelsOf(n);
      if (!labels) problems.push(`${q.what}: ${n} is not exported`);
      for (const l of labels ?? []) known.add(l);
    }
    const used = [
      ...[...q.expr.matchAll(/\{([^}]*)\}/g)].flatMap((m) =>
        [...m[1]!.matchAll(/([a-z_]+)\s*(?:=~|!~|!=|=)/g)].map((x) => x[1]!),
      ),
      ...[...q.expr.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)].flatMap((m) =>
        m[1]!.split(',').map((s) => s.trim()),
      ),
      ...[...q.expr.matchAll(/label_values\([^,]+,\s*([a-z_]+)\)/g)].map((m) => m[1]!),
    ];
    for (const l of used)
      if (!known.has(l)) problems.push(`${q.what}: label ${l} is on none of ${names.join(', ')}`);
  }
  assert.deepEqual(problems, []);
});
