// The install artifacts, rendered by the real tools: `helm lint --strict` and
// `helm template` of the chart for the default and representative values, `kubectl
// kustomize` of the base and every overlay; every object checked against the Kubernetes
// schemas; the plain manifests up to date with the chart; an overlay and the equivalent
// Helm values render the same objects; the agent's own validation accepts every rendered
// configuration.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { evaluate } from '@marcbachmann/cel-js';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { parseAgentConfig } from '../../lb-agent/src/config/agent-config.ts';
import { AGENT_NODE_FLAGS } from '../../lb-agent/src/node-flags.ts';
import { runTool } from '../../scripts/k8s-tools.ts';
import {
  CHART,
  helmTemplate,
  namespaceObject,
  type Obj,
  PLAIN,
  renderPlain,
  withoutHelmOnly,
} from '../../scripts/render-manifests.ts';
import { SCHEMA_VERSIONS, type SchemaVersion, schemaErrors } from '../harness/k8s-schema.ts';

const repo = path.resolve(import.meta.dirname, '..', '..');
const fixtures = path.join(repo, 'test', 'fixtures', 'deploy');
const overlays = path.join(repo, 'deploy', 'overlays');

/** Representative values: the defaults and every fixture. */
const valueSets: { name: string; args: string[] }[] = [
  { name: 'defaults', args: [] },
  ...readdirSync(fixtures)
    .filter((f) => f.endsWith('-values.yaml'))
    .map((f) => ({ name: f, args: ['-f', path.join(fixtures, f)] })),
];

const kustomize = (dir: string): Obj[] =>
  parseAllDocuments(runTool('kubectl', ['kustomize', dir]))
    .map((d) => d.toJS() as Obj)
    .filter(Boolean);

const find = (objects: Obj[], kind: string) => objects.filter((o) => o.kind === kind);
const daemonSet = (objects: Obj[]) => find(objects, 'DaemonSet')[0]!;
const containerOf = (objects: Obj[], name: string) =>
  (daemonSet(objects).spec.template.spec.containers as Obj[]).find((c) => c.name === name)!;

async function assertSchemaValid(objects: Obj[], what: string): Promise<void> {
  const errors: string[] = [];
  for (const o of objects) {
    for (const v of Object.keys(SCHEMA_VERSIONS) as SchemaVersion[])
      errors.push(...(await schemaErrors(o, v)));
  }
  assert.deepEqual(errors, [], `${what}: every object validates`);
}

function assertAgentConfigValid(objects: Obj[], what: string): void {
  for (const cm of find(objects, 'ConfigMap')) {
    const text = cm.data?.['config.yaml'];
    if (typeof text !== 'string') continue;
    // Secrets named by passwordFile exist only in the pod: check the rest.
    const data = parseYaml(text) as Obj;
    for (const p of data.bgp?.peers ?? []) delete p.passwordFile;
    assert.doesNotThrow(
      () => parseAgentConfig(data, `${what} ${cm.metadata.name}`),
      `${what}: the agent accepts its configuration`,
    );
  }
}

const CLUSTER_SCOPED = [
  'ClusterRole',
  'ClusterRoleBinding',
  'CustomResourceDefinition',
  'ValidatingAdmissionPolicy',
  'ValidatingAdmissionPolicyBinding',
];

describe('the Helm chart', () => {
  test('helm lint --strict passes for the default and every representative set of values', () => {
    for (const v of valueSets) runTool('helm', ['lint', '--strict', CHART, ...v.args]);
  });

  test('every rendered object validates against the Kubernetes schemas; the agent accepts the configuration', async () => {
    for (const v of valueSets) {
      const objects = helmTemplate(v.args);
      assert.ok(objects.length >= 7, `${v.name}: rendered objects`);
      await assertSchemaValid(objects, `helm template (${v.name})`);
      assertAgentConfigValid(objects, `helm template (${v.name})`);
    }
  });

  test('least privilege: the agent is root with NET_ADMIN and NET_RAW only; the speaker gets NET_BIND_SERVICE only to bind port 179; bfd NET_ADMIN only, and only with BFD', () => {
    const objects = helmTemplate();
    const agent = containerOf(objects, 'lb-agent').securityContext;
    assert.deepEqual(agent.capabilities, { drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW'] });
    assert.equal(agent.allowPrivilegeEscalation, false);
    assert.equal(agent.readOnlyRootFilesystem, true);
    assert.equal(agent.privileged, false);
    const speaker = containerOf(objects, 'bgp-speaker').securityContext;
    assert.deepEqual(speaker.capabilities, { drop: ['ALL'], add: ['NET_BIND_SERVICE'] });
    assert.equal(speaker.runAsNonRoot, true);
    assert.equal(speaker.allowPrivilegeEscalation, true, 'file capabilities need escalation allowed');
    const noListener = containerOf(helmTemplate(['--set', 'config.bgp.listenPort=-1']), 'bgp-speaker');
    assert.deepEqual(noListener.securityContext.capabilities, { drop: ['ALL'] });
    assert.equal(noListener.securityContext.allowPrivilegeEscalation, false);
    const highPort = containerOf(helmTemplate(['--set', 'config.bgp.listenPort=1179']), 'bgp-speaker');
    assert.deepEqual(highPort.securityContext.capabilities, { drop: ['ALL'] });
    const bfd = containerOf(objects, 'bfd').securityContext;
    assert.deepEqual(bfd.capabilities, { drop: ['ALL'], add: ['NET_ADMIN'] });
    assert.equal(bfd.runAsUser, 65532);
    assert.equal(bfd.runAsNonRoot, true);
    assert.equal(bfd.readOnlyRootFilesystem, true);
    const withoutBfd = daemonSet(helmTemplate(['--set', 'config.bfd=null']));
    assert.deepEqual(
      (withoutBfd.spec.template.spec.containers as Obj[]).map((c) => c.name),
      ['lb-agent', 'bgp-speaker'],
      'config.bfd=null: no bfd container',
    );
    const config = parseYaml(
      find(helmTemplate(['--set', 'config.bfd=null']), 'ConfigMap')[0]!.data['config.yaml'],
    ) as Obj;
    assert.equal(config.bfd, undefined, 'and no bfd section in the agent configuration');
  });

  test('the pod starts on a node where ip_vs is not loaded yet: no hostPath under /proc/sys/net/ipv4/vs', () => {
    const volumes = daemonSet(helmTemplate()).spec.template.spec.volumes as Obj[];
    const paths = volumes.filter((v) => v.hostPath).map((v) => v.hostPath.path);
    assert.ok(paths.includes('/proc/sys/net'));
    assert.ok(!paths.some((p: string) => p.startsWith('/proc/sys/net/ipv4/vs')), paths.join());
  });

  test('an MD5 password comes from a Secret mounted into the agent only, never into the ConfigMap', () => {
    const objects = helmTemplate(['-f', path.join(fixtures, 'production-values.yaml')]);
    const config = find(objects, 'ConfigMap')[0]!.data['config.yaml'] as string;
    assert.doesNotMatch(config, /password:/);
    assert.match(config, /passwordFile: \/etc\/portlb\/peer-secrets\/0\/password/);
    const mounts = (c: string) => (containerOf(objects, c).volumeMounts as Obj[]).map((m) => m.name);
    assert.ok(mounts('lb-agent').includes('peer-secret-0'));
    assert.ok(!mounts('bgp-speaker').some((m) => m.startsWith('peer-secret')));
  });

  test('PortlbNodeStatus: a service account writes only the object of its pod’s node (the admission policy’s CEL, evaluated)', () => {
    const objects = helmTemplate();
    const policy = find(objects, 'ValidatingAdmissionPolicy')[0]!;
    const binding = find(objects, 'ValidatingAdmissionPolicyBinding')[0]!;
    assert.equal(binding.spec.policyName, policy.metadata.name);
    assert.deepEqual(binding.spec.validationActions, ['Deny']);
    assert.equal(policy.spec.failurePolicy, 'Fail');
    const rule = policy.spec.matchConstraints.resourceRules[0];
    assert.deepEqual([rule.apiGroups, rule.resources], [['portlb.io'], ['portlbnodestatuses']]);
    assert.ok(!rule.operations.includes('DELETE'), 'the garbage collector deletes an object with its Node');
    /** The policy's verdict on a request, as the API server computes it: allowed, or its message. */
    const admit = (o: { user: string; node?: string; name: string; operation?: string }): string => {
      const request = {
        operation: o.operation ?? 'UPDATE',
        userInfo: {
          username: o.user,
          ...(o.node ? { extra: { 'authentication.kubernetes.io/node-name': [o.node] } } : {}),
        },
      };
      const ctx: Obj = { request, object: { metadata: { name: o.name } } };
      if (!policy.spec.matchConditions.every((c: Obj) => evaluate(c.expression, ctx) === true))
        return 'allowed';
      ctx.variables = Object.fromEntries(
        policy.spec.variables.map((v: Obj) => [v.name, evaluate(v.expression, ctx)]),
      );
      for (const v of policy.spec.validations)
        if (evaluate(v.expression, ctx) !== true) return String(evaluate(v.messageExpression, ctx));
      return 'allowed';
    };
    const agent = 'system:serviceaccount:portlb-system:portlb';
    assert.equal(admit({ user: agent, node: 'edge-1', name: 'edge-1' }), 'allowed');
    assert.equal(admit({ user: agent, node: 'edge-1', name: 'edge-1', operation: 'CREATE' }), 'allowed');
    assert.match(
      admit({ user: agent, node: 'edge-1', name: 'edge-2' }),
      /only the PortlbNodeStatus of the node its pod runs on \(edge-1\)/,
    );
    assert.match(admit({ user: agent, name: 'edge-1' }), /its token names no node/);
    // Another namespace (a kustomize overlay, another release): held the same.
    assert.match(
      admit({ user: 'system:serviceaccount:lb-system:portlb', node: 'edge-1', name: 'edge-2' }),
      /edge-1/,
    );
    assert.equal(admit({ user: 'alice@example.com', name: 'edge-2' }), 'allowed', 'people: RBAC decides');
    assert.ok(
      !find(helmTemplate(['--set', 'nodeStatus.admissionPolicy=false']), 'ValidatingAdmissionPolicy').length,
      'can be left out where tokens carry no node name',
    );
  });

  test('PortlbAddressPool: the API server refuses what the schema and its CEL rules can see (evaluated); the agent checks the rest', () => {
    const crd = find(helmTemplate(), 'CustomResourceDefinition').find(
      (o) => o.metadata.name === 'portlbaddresspools.portlb.io',
    )!;
    const version = crd.spec.versions[0];
    assert.deepEqual(version.subresources, { status: {} }, 'the agent writes only the status');
    const schema = version.schema.openAPIV3Schema;
    const addresses = schema.properties.spec.properties.addresses;
    const pattern = new RegExp(addresses.items.pattern);
    for (const ok of ['203.0.113.0/28', '203.0.113.10-203.0.113.20', '2001:db8::/64', '192.0.2.1'])
      assert.ok(pattern.test(ok), ok);
    for (const bad of ['public', '203.0.113.0/28,203.0.113.64/28', ' 203.0.113.1', ''])
      assert.ok(!pattern.test(bad), bad);
    const rule = (rules: Obj[], self: unknown) =>
      rules.every((r) => evaluate(r.rule, { self }) === true) ? 'ok' : rules.map((r) => r.message).join('; ');
    const name = (n: string) => rule(schema['x-kubernetes-validations'], { metadata: { name: n } });
    assert.equal(name('public-v4'), 'ok');
    assert.match(name('public.v4'), /DNS label/);
    assert.match(name('a'.repeat(64)), /DNS label/);
    assert.equal(rule(addresses['x-kubernetes-validations'], ['203.0.113.0/28', '198.51.100.0/28']), 'ok');
    assert.match(
      rule(addresses['x-kubernetes-validations'], ['203.0.113.0/28', '203.0.113.0/28']),
      /listed twice/,
    );
  });

  test('PortlbBgpPeer: its CEL rule (keepalive below hold time) evaluated; MD5 and BFD are not in its schema (kubectl refuses unknown fields)', () => {
    const crd = find(helmTemplate(), 'CustomResourceDefinition').find(
      (o) => o.metadata.name === 'portlbbgppeers.portlb.io',
    )!;
    const spec = crd.spec.versions[0].schema.openAPIV3Schema.properties.spec;
    assert.deepEqual(spec.required, ['address', 'asn']);
    assert.equal(spec.properties.passwordFile, undefined);
    assert.equal(spec.properties.bfd, undefined);
    const ok = (self: Obj) =>
      spec['x-kubernetes-validations'].every((r: Obj) => evaluate(r.rule, { self }) === true);
    assert.ok(ok({ address: '192.0.2.1', asn: 65000 }));
    assert.ok(ok({ address: '192.0.2.1', asn: 65000, holdTime: 9, keepaliveInterval: 3 }));
    assert.ok(ok({ address: '192.0.2.1', asn: 65000, holdTime: 0, keepaliveInterval: 30 }));
    assert.ok(!ok({ address: '192.0.2.1', asn: 65000, holdTime: 9, keepaliveInterval: 9 }));
  });

  test('monitoring: the alert rules and the Grafana dashboard are rendered as shipped (their queries are checked in metrics.test.ts)', () => {
    const objects = helmTemplate(['-f', path.join(fixtures, 'monitoring-values.yaml')]);
    const files = path.join(CHART, 'files');
    const rule = find(objects, 'PrometheusRule')[0]!;
    assert.deepEqual(
      rule.spec.groups[0].rules,
      parseYaml(readFileSync(path.join(files, 'alerts.yaml'), 'utf8')),
    );
    const dashboards = find(objects, 'ConfigMap').filter((c) => c.metadata.labels?.grafana_dashboard === '1');
    assert.equal(dashboards.length, 1);
    assert.deepEqual(
      JSON.parse(dashboards[0]!.data['portlb.json']),
      JSON.parse(readFileSync(path.join(files, 'dashboard.json'), 'utf8')),
    );
    assert.deepEqual(
      find(helmTemplate(), 'ConfigMap').map((c) => c.metadata.name),
      ['portlb-config'],
      'nothing of it by default',
    );
  });
});

describe('plain manifests and kustomize', () => {
  test('deploy/kubernetes/portlb.yaml is what the chart renders (npm run manifests)', () => {
    assert.equal(readFileSync(PLAIN, 'utf8'), renderPlain(), 'run `npm run manifests` and commit the result');
  });

  test('kubectl kustomize renders the base and every overlay; every object validates', async () => {
    await assertSchemaValid(kustomize(path.join(repo, 'deploy', 'kubernetes')), 'base');
    for (const name of readdirSync(overlays)) {
      const objects = kustomize(path.join(overlays, name));
      await assertSchemaValid(objects, `overlay ${name}`);
      assertAgentConfigValid(objects, `overlay ${name}`);
    }
  });

  test('an overlay applies its namespace and images everywhere they matter', () => {
    const objects = kustomize(path.join(overlays, 'production'));
    const ns = 'lb-system';
    for (const o of objects) {
      if (o.kind === 'Namespace') assert.equal(o.metadata.name, ns);
      else if (!CLUSTER_SCOPED.includes(o.kind))
        assert.equal(o.metadata.namespace, ns, `${o.kind} ${o.metadata.name}`);
      for (const s of o.subjects ?? []) assert.equal(s.namespace, ns, `${o.kind} ${o.metadata.name} subject`);
    }
    const images = (daemonSet(objects).spec.template.spec.containers as Obj[]).map((c) => c.image);
    assert.deepEqual(images, [
      'registry.example.com/portlb/lb-agent:0.1.0',
      'registry.example.com/portlb/bgp-speaker:0.1.0',
      'registry.example.com/portlb/bgp-speaker:0.1.0', // bfd: the speaker's image
    ]);
    // The Lease follows the pod's namespace: nothing in the configuration pins it.
    const config = parseYaml(find(objects, 'ConfigMap')[0]!.data['config.yaml']) as Obj;
    assert.equal(config.kubernetes?.leaderElection?.namespace, undefined);
    const env = (daemonSet(objects).spec.template.spec.containers[0].env as Obj[]).find(
      (e) => e.name === 'POD_NAMESPACE',
    );
    assert.deepEqual(env?.valueFrom, { fieldRef: { fieldPath: 'metadata.namespace' } });
  });

  test('the production overlay and the equivalent Helm values render the same objects', () => {
    const norm = (objects: Obj[]) =>
      objects
        .map((o) => {
          const c = structuredClone(o);
          if (c.kind === 'ConfigMap') c.data['config.yaml'] = parseYaml(c.data['config.yaml']);
          // Kustomize's own list of cluster-scoped kinds lacks the admission policies: it gives
          // them the overlay's namespace, which the API server drops on create (as for any
          // cluster-scoped object).
          if (CLUSTER_SCOPED.includes(c.kind)) delete c.metadata.namespace;
          return c;
        })
        .sort((a, b) => `${a.kind}/${a.metadata.name}`.localeCompare(`${b.kind}/${b.metadata.name}`));
    const viaHelm = norm([
      namespaceObject('lb-system'),
      ...withoutHelmOnly(helmTemplate(['-f', path.join(fixtures, 'production-values.yaml')], 'lb-system')),
    ]);
    const viaKustomize = norm(kustomize(path.join(overlays, 'production')));
    // Kustomize orders keys, and merges named list entries (volumes, mounts), its own way:
    // compare the content.
    const byName = (list: unknown[]) =>
      list.every((x) => x && typeof x === 'object' && 'name' in (x as Obj))
        ? [...list].sort((a, b) => String((a as Obj).name).localeCompare(String((b as Obj).name)))
        : list;
    const canonical = (v: unknown): unknown =>
      Array.isArray(v)
        ? byName(v).map(canonical)
        : v && typeof v === 'object'
          ? Object.fromEntries(
              Object.entries(v as Obj)
                .sort(([a], [b]) => a.localeCompare(b))
                .map(([k, x]) => [k, canonical(x)]),
            )
          : v;
    assert.deepEqual(canonical(viaKustomize), canonical(viaHelm));
  });
});

test('the image and the systemd unit run the agent with the Node flags it is measured with', () => {
  const entrypoint = /^ENTRYPOINT (\[.*\])$/m.exec(
    readFileSync(path.join(repo, 'lb-agent', 'Dockerfile'), 'utf8'),
  );
  const argv = JSON.parse(entrypoint![1]!) as string[];
  assert.deepEqual(argv.slice(1, -1), AGENT_NODE_FLAGS, 'Dockerfile ENTRYPOINT');
  const exec = /^ExecStart=(.*)$/m.exec(
    readFileSync(path.join(repo, 'deploy', 'systemd', 'portlb-agent.service'), 'utf8'),
  );
  const words = exec![1]!.split(' ');
  assert.deepEqual(
    words.slice(1, words.indexOf('/opt/portlb/lb-agent/bin/portlb.js')),
    AGENT_NODE_FLAGS,
    'ExecStart',
  );
});
