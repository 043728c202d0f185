// The cluster view end to end: two agents in Kubernetes mode (fake kernel and speaker,
// the real API client against the fake API server) each publish their PortlbNodeStatus;
// `portlb status --cluster` (the real command, from a kubeconfig or from kubectl's JSON on
// standard input) lists both per VIP. The object follows its node: deleted with the
// Node, deleted by a graceful shutdown; and the agent uses only what the chart's
// ClusterRole grants.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Agent } from '../../lb-agent/src/agent/agent.ts';
import type { FakeBgpSpeaker } from '../../lb-agent/src/bgp/fake-speaker.ts';
import { NODE_STATUS_PATH } from '../../lb-agent/src/k8s/node-status.ts';
import { toolPath } from '../../scripts/k8s-tools.ts';
import { helmTemplate } from '../../scripts/render-manifests.ts';
import { FakeKubeApi, type Obj } from '../harness/fake-kube-api.ts';
import {
  createNode,
  createService,
  kubernetesTestConfig,
  startKubernetesAgent,
} from '../harness/kubernetes-agent.ts';
import { waitFor } from '../harness/netns.ts';
import { ungranted } from '../harness/rbac.ts';

const repo = path.resolve(import.meta.dirname, '../..');
/** The real command, in its own process (asynchronously: the fake API server lives in this one). */
const portlb = (args: string[], input?: string) =>
  new Promise<string>((resolve, reject) => {
    const child = execFile(
      process.execPath,
      [path.join(repo, 'lb-agent/bin/portlb.js'), ...args],
      { encoding: 'utf8', timeout: 30_000 },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
    );
    child.stdin!.end(input ?? '');
  });

describe('cluster view: PortlbNodeStatus from two agents', () => {
  const api = new FakeKubeApi();
  const dir = mkdtempSync(path.join(tmpdir(), 'portlb-cluster-'));
  const agents = new Map<string, { agent: Agent; speaker: FakeBgpSpeaker }>();

  const startAgent = async (node: string, routerId: string) => {
    const config = kubernetesTestConfig({ routerId, kubernetes: { nodeStatus: { intervalSeconds: 1 } } });
    const { agent, speaker } = await startKubernetesAgent(api, { node, config });
    speaker.setPeerState('192.0.2.1', 'established');
    agents.set(node, { agent, speaker });
  };
  const published = (node: string) => api.get('portlbnodestatuses', undefined, node);

  before(async () => {
    await api.start();
    for (const node of ['edge-1', 'edge-2']) createNode(api, node);
    createService(api, 'web', { port: 80, endpoint: { address: '10.1.0.5', port: 8080 } });
    await startAgent('edge-1', '192.0.2.11');
    await startAgent('edge-2', '192.0.2.12');
    writeFileSync(
      path.join(dir, 'kubeconfig'),
      [
        'apiVersion: v1',
        'kind: Config',
        'current-context: fake',
        'contexts: [{ name: fake, context: { cluster: fake, user: fake } }]',
        `clusters: [{ name: fake, cluster: { server: "${api.connection().server}" } }]`,
        'users: [{ name: fake, user: { token: fake-token } }]',
      ].join('\n'),
    );
  });
  after(async () => {
    for (const { agent } of agents.values()) await agent.shutdown({ graceful: false });
    await api.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('each agent publishes its own object, owned by its Node, saying what it announces', async () => {
    for (const node of ['edge-1', 'edge-2'])
      await waitFor(
        `${node} publishes the VIP as announced with its router established`,
        () => {
          const o = published(node);
          return (
            o?.status?.vips?.[0]?.announced === true &&
            o.status.peers?.[0]?.state === 'established' &&
            o.status.agent?.ready === true
          );
        },
        { timeoutMs: 20_000, intervalMs: 200 },
      );
    for (const node of ['edge-1', 'edge-2']) {
      const o = published(node)!;
      assert.deepEqual(o.metadata.ownerReferences, [
        { apiVersion: 'v1', kind: 'Node', name: node, uid: api.get('nodes', undefined, node)!.metadata.uid },
      ]);
      assert.deepEqual(o.status.vips, [{ address: '203.0.113.1', owners: ['shop/web'], announced: true }]);
      assert.deepEqual(o.status.services[0].backends, [
        { address: '10.1.0.5:8080', weight: 1, health: null },
      ]);
      assert.equal(o.status.services[0].state, 'programmed');
    }
    assert.equal(
      [published('edge-1')!, published('edge-2')!].filter((o) => o.status.agent.leader).length,
      1,
      'one leader',
    );
  });

  test('portlb status --cluster lists both nodes, per VIP; from a kubeconfig and from kubectl’s JSON alike', async () => {
    const text = await portlb(['status', '--cluster', '--kubeconfig', path.join(dir, 'kubeconfig')]);
    assert.match(text, /^edge-1( \(leader\))?\s+0\.1\.0\s+yes\s+1\s+0\s+1\/1 established/m);
    assert.match(text, /^edge-2( \(leader\))?\s+0\.1\.0\s+yes\s+1\s+0\s+1\/1 established/m);
    assert.match(text, /^VIP 203\.0\.113\.1 {2}shop\/web$/m);
    assert.match(text, /^ {2}announced by {2}edge-1, edge-2$/m);
    assert.match(text, /^ {2}router {8}192\.0\.2\.1 AS65000: edge-1 established; edge-2 established$/m);
    assert.match(text, /^ {2}tcp:203\.0\.113\.1:80\s+10\.1\.0\.5:8080 w1$/m);
    // What `kubectl get portlbnodestatuses -o json` prints, on standard input (kubectl portlb status).
    const list = await (
      await fetch(`${api.connection().server}${NODE_STATUS_PATH}`, { headers: { authorization: 'Bearer x' } })
    ).text();
    const json = (args: string[], input?: string) =>
      portlb(['status', '--cluster', '--json', ...args], input).then((t) => JSON.parse(t));
    const fromApi = await json(['--kubeconfig', path.join(dir, 'kubeconfig')]);
    assert.deepEqual(await json(['--from', '-'], list), fromApi);
    assert.deepEqual(
      fromApi.vips.map((v: Obj) => [v.address, v.announcedBy]),
      [['203.0.113.1', ['edge-1', 'edge-2']]],
    );
  });

  test('kubectl portlb status (the shipped plugin, the real kubectl) prints the same view', async () => {
    // The plugin finds `portlb` on PATH (a user's install), kubectl beside it.
    const bin = path.join(dir, 'bin');
    mkdirSync(bin, { recursive: true });
    writeFileSync(
      path.join(bin, 'portlb'),
      `#!/bin/sh\nexec "${process.execPath}" "${path.join(repo, 'lb-agent/bin/portlb.js')}" "$@"\n`,
    );
    chmodSync(path.join(bin, 'portlb'), 0o755);
    const env = {
      ...process.env,
      KUBECONFIG: path.join(dir, 'kubeconfig'),
      PATH: `${bin}:${path.dirname(toolPath('kubectl'))}:${process.env.PATH}`,
    };
    const plugin = (args: string[]) =>
      new Promise<{ code: number; out: string; err: string }>((resolve) => {
        execFile(
          path.join(repo, 'deploy/kubectl-plugin/kubectl-portlb'),
          args,
          { encoding: 'utf8', env, timeout: 60_000 },
          (err, out, errText) => resolve({ code: err ? Number(err.code ?? 1) : 0, out, err: errText }),
        );
      });
    const r = await plugin(['status', '--json']);
    assert.equal(r.code, 0, r.err);
    const viaKubectl = JSON.parse(r.out);
    const direct = JSON.parse(
      await portlb(['status', '--cluster', '--json', '--kubeconfig', path.join(dir, 'kubeconfig')]),
    );
    assert.deepEqual(viaKubectl.vips, direct.vips);
    assert.deepEqual(
      viaKubectl.nodes.map((n: Obj) => n.node),
      ['edge-1', 'edge-2'],
    );
    assert.match((await plugin(['--help'])).out, /Usage: kubectl portlb status/);
    const bad = await plugin(['stauts']);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /unknown command 'stauts'/);
  });

  test('a node that stops announcing shows it, with the reason, in the cluster view', async () => {
    agents.get('edge-2')!.speaker.setPeerState('192.0.2.1', 'active');
    api.mutate('nodes', undefined, 'edge-2', (n) => {
      n.metadata.labels = { 'node.kubernetes.io/exclude-from-external-load-balancers': '' };
    });
    await waitFor(
      'edge-2 publishes the VIP withheld',
      () => published('edge-2')?.status?.vips?.[0]?.announced === false,
      {
        timeoutMs: 20_000,
        intervalMs: 200,
      },
    );
    const text = await portlb(['status', '--cluster', '--kubeconfig', path.join(dir, 'kubeconfig')]);
    assert.match(text, /^ {2}announced by {2}edge-1$/m);
    assert.match(text, /^ {2}withheld by {3}edge-2 \(NodeExcluded\)$/m);
  });

  test('every request the agents made is granted by the chart’s RBAC (least privilege that works)', () => {
    assert.ok([...api.verbs].some((v) => v.startsWith('portlb.io|portlbnodestatuses|')));
    assert.deepEqual(ungranted(api.verbs, helmTemplate()), []);
  });

  test('a graceful shutdown deletes its object; a deleted Node takes its object with it, and it is not written again', async () => {
    await agents.get('edge-2')!.agent.shutdown({ graceful: true });
    agents.delete('edge-2');
    assert.equal(published('edge-2'), undefined, 'deleted by the graceful shutdown');
    api.remove('nodes', undefined, 'edge-1');
    assert.equal(published('edge-1'), undefined, 'gone with its Node');
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal(published('edge-1'), undefined, 'not recreated for a Node that is not there');
  });
});
