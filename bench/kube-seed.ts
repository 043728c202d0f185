// The cluster of the host Kubernetes benchmarks (k8s, pass): one Ready node, edge-1, and
// N LoadBalancer Services of class portlb on 10.96.0.0/12, each with one EndpointSlice
// of M ready endpoints on that node.
import type { FakeKubeApi, Obj } from '../test/harness/fake-kube-api.ts';

export const SEED_NODE = 'edge-1';

export function seedServices(api: FakeKubeApi, n: number, m: number): void {
  const vip = (i: number) => `10.${96 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
  api.create('nodes', {
    metadata: { name: SEED_NODE },
    status: { conditions: [{ type: 'Ready', status: 'True' }] },
  });
  for (let i = 0; i < n; i++) {
    const svc: Obj = {
      metadata: { name: `svc-${i}`, namespace: `ns-${i % 50}` },
      spec: {
        type: 'LoadBalancer',
        loadBalancerClass: 'portlb.io/portlb',
        ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
      },
      status: { loadBalancer: { ingress: [{ ip: vip(i), ipMode: 'Proxy' }] } },
    };
    api.create('services', svc);
    api.create('endpointslices', {
      metadata: {
        name: `svc-${i}-abc`,
        namespace: `ns-${i % 50}`,
        labels: { 'kubernetes.io/service-name': `svc-${i}` },
      },
      addressType: 'IPv4',
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      endpoints: Array.from({ length: m }, (_, j) => ({
        addresses: [`172.${16 + ((i * m + j) >> 16)}.${((i * m + j) >> 8) & 255}.${(i * m + j) & 255}`],
        conditions: { ready: true },
        nodeName: SEED_NODE,
      })),
    });
  }
}
