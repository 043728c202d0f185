// The agent configuration of the host tests that run agents in Kubernetes mode against
// the fake API server: one pool, one router, fast passes and a short lease.
import { Agent } from '../../lb-agent/src/agent/agent.ts';
import { KubernetesSource } from '../../lb-agent/src/agent/kubernetes-source.ts';
import type { AgentMetrics } from '../../lb-agent/src/agent/metrics.ts';
import { FakeNetfilter } from '../../lb-agent/src/agent/netfilter.ts';
import { FakeAddressManager } from '../../lb-agent/src/agent/vips.ts';
import { FakeBgpSpeaker } from '../../lb-agent/src/bgp/fake-speaker.ts';
import { type AgentConfig, parseAgentConfig } from '../../lb-agent/src/config/agent-config.ts';
import type { IpvsClient } from '../../lb-agent/src/ipvs/client.ts';
import { FakeIpvsClient } from '../../lb-agent/src/ipvs/fake-client.ts';
import { systemClock } from '../../lb-agent/src/util/clock.ts';
import { type Logger, silentLogger } from '../../lb-agent/src/util/log.ts';
import type { FakeKubeApi } from './fake-kube-api.ts';

export function kubernetesTestConfig(
  o: { routerId?: string; kubernetes?: Record<string, unknown> } = {},
): AgentConfig {
  return parseAgentConfig(
    {
      pools: [{ name: 'default', addresses: ['203.0.113.0/28'] }],
      bgp: {
        asn: 65001,
        routerId: o.routerId ?? '192.0.2.11',
        peers: [{ address: '192.0.2.1', asn: 65000 }],
        gracefulShutdownSeconds: 0,
      },
      http: { listen: '127.0.0.1:0' },
      sync: { minIntervalMs: 50, resyncSeconds: 30 },
      kubernetes: {
        leaderElection: { leaseDurationSeconds: 3, renewDeadlineSeconds: 2, retryPeriodSeconds: 1 },
        ...o.kubernetes,
      },
    },
    'test',
  );
}

/** A Ready Node. */
export function createNode(api: FakeKubeApi, name: string): void {
  api.create('nodes', { metadata: { name }, status: { conditions: [{ type: 'Ready', status: 'True' }] } });
}

/** A LoadBalancer Service of portlb's class in `shop`, and one EndpointSlice for it (when given). */
export function createService(
  api: FakeKubeApi,
  name: string,
  o: { port: number; annotations?: Record<string, string>; endpoint?: { address: string; port: number } },
): void {
  api.create('services', {
    metadata: { name, namespace: 'shop', ...(o.annotations ? { annotations: o.annotations } : {}) },
    spec: {
      type: 'LoadBalancer',
      loadBalancerClass: 'portlb.io/portlb',
      ports: [{ ...(o.endpoint ? { name: 'http' } : {}), port: o.port, protocol: 'TCP' }],
    },
  });
  if (!o.endpoint) return;
  api.create('endpointslices', {
    metadata: { name: `${name}-1`, namespace: 'shop', labels: { 'kubernetes.io/service-name': name } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: o.endpoint.port, protocol: 'TCP' }],
    endpoints: [{ addresses: [o.endpoint.address], conditions: { ready: true } }],
  });
}

/** An agent in Kubernetes mode against the fake API server, with fakes at the kernel and speaker. */
export async function startKubernetesAgent(
  api: FakeKubeApi,
  o: {
    node: string;
    config?: AgentConfig;
    ipvs?: IpvsClient;
    addresses?: FakeAddressManager;
    speaker?: FakeBgpSpeaker;
    logger?: Logger;
    metrics?: AgentMetrics;
  },
): Promise<{ agent: Agent; speaker: FakeBgpSpeaker; url: string }> {
  const config = o.config ?? kubernetesTestConfig();
  const identity = `portlb-${o.node}`;
  const source = new KubernetesSource({
    config,
    nodeName: o.node,
    identity,
    clock: systemClock,
    logger: silentLogger,
    metrics: o.metrics,
    connection: api.connection(),
  });
  await source.prepare();
  const speaker = o.speaker ?? new FakeBgpSpeaker();
  const agent = new Agent(
    { config, nodeName: o.node, identity },
    {
      ipvs: o.ipvs ?? new FakeIpvsClient(),
      addresses: o.addresses ?? new FakeAddressManager(),
      netfilter: new FakeNetfilter(),
      speaker,
      source,
      logger: o.logger ?? silentLogger,
    },
  );
  await agent.start();
  return { agent, speaker, url: `http://127.0.0.1:${agent.httpAddress!.port}` };
}
