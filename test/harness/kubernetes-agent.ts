// The agent configuration of the host tests that run agents in Kubernetes mode against
// the fake API server: one pool, one router, fast passes and a short lease.
import { type AgentConfig, parseAgentConfig } from '../../lb-agent/src/config/agent-config.ts';

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
