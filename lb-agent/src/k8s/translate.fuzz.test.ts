// Property: Services, EndpointSlices and Nodes of any shape (random JSON where the API's
// fields are, near-valid objects with one field mangled) never crash translation,
// allocation or desired state; every LoadBalancer Service comes out as exactly one of an
// intent or a skip with a reason.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { computeDesired } from '../core/desired.ts';
import { type AddressBlock, blockContains, parseAddressBlock } from '../net/pool.ts';
import { FUZZ_RUNS } from '../util/fuzz.ts';
import { planAllocations } from './allocator.ts';
import { leanEndpointSlice, leanNode, leanService } from './objects.ts';
import { nodeInfo, translateKubernetes } from './translate.ts';

const CLASS = 'portlb.io/portlb';
const pool = parseAddressBlock('203.0.113.0/28') as AddressBlock;
const pools = [{ name: 'default', blocks: [pool], autoAssign: true }];
const owns = (a: string) => blockContains(pool, a);

const scalar = fc.oneof(
  fc.string({ maxLength: 10 }),
  fc.integer({ min: -5, max: 70000 }),
  fc.boolean(),
  fc.constant(null),
  fc.constantFrom(
    'LoadBalancer',
    CLASS,
    'TCP',
    'UDP',
    'ICMP',
    'IPv4',
    'IPv6',
    'FQDN',
    '203.0.113.3',
    '10.0.0.1',
    'fd00::1',
    'Local',
    'mh',
    'Proxy',
  ),
);
const anyValue = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    scalar,
    fc.array(tie('value'), { maxLength: 3 }),
    fc.dictionary(fc.string({ maxLength: 8 }), tie('value'), { maxKeys: 3 }),
  ),
})).value;

function mangle(doc: unknown, path: number[], replacement: unknown): unknown {
  if (!path.length || doc === null || typeof doc !== 'object') return replacement;
  const keys = Object.keys(doc as object);
  if (!keys.length) return replacement;
  const k = keys[path[0]! % keys.length]!;
  const copy = (Array.isArray(doc) ? [...doc] : { ...(doc as object) }) as Record<string, unknown>;
  copy[k] = mangle(copy[k], path.slice(1), replacement);
  return copy;
}

const service = (name: string) => ({
  metadata: {
    name,
    namespace: 'default',
    uid: `u-${name}`,
    resourceVersion: '1',
    creationTimestamp: '2026-01-01T00:00:00Z',
    annotations: { 'portlb.io/scheduler': 'mh', 'portlb.io/allow-shared-ip': 'k' },
  },
  spec: {
    type: 'LoadBalancer',
    loadBalancerClass: CLASS,
    ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
    externalTrafficPolicy: 'Cluster',
    ipFamilies: ['IPv4'],
  },
  status: { loadBalancer: { ingress: [{ ip: '203.0.113.3', ipMode: 'Proxy' }] } },
});
const slice = (svc: string) => ({
  metadata: {
    name: `${svc}-1`,
    namespace: 'default',
    resourceVersion: '2',
    labels: { 'kubernetes.io/service-name': svc },
  },
  addressType: 'IPv4',
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  endpoints: [{ addresses: ['10.0.0.1'], conditions: { ready: true }, nodeName: 'n1' }],
});
const mangled = (make: (n: string) => object) =>
  fc
    .tuple(fc.constantFrom('a', 'b', 'c'), fc.array(fc.nat(), { maxLength: 5 }), anyValue)
    .map(([n, p, v]) => mangle(make(n), p, v));

test('Kubernetes objects of any shape: translation, allocation and desired state never throw', () => {
  fc.assert(
    fc.property(
      fc.array(fc.oneof(mangled(service), anyValue), { maxLength: 5 }),
      fc.array(fc.oneof(mangled(slice), anyValue), { maxLength: 5 }),
      fc.oneof(
        anyValue,
        fc.constant({
          metadata: { name: 'n1' },
          status: { conditions: [{ type: 'Ready', status: 'True' }] },
        }),
      ),
      (rawServices, rawSlices, rawNode) => {
        const services = rawServices.map(leanService);
        const t = translateKubernetes(
          { services, endpointSlices: rawSlices.map(leanEndpointSlice) },
          {
            loadBalancerClass: CLASS,
            serveServicesWithoutClass: false,
            defaultScheduler: 'mh',
            defaultForwarding: 'nat',
          },
        );
        const d = computeDesired({ services: t.services }, nodeInfo(leanNode(rawNode), 'n1'), { owns });
        planAllocations(services, t.settings, pools, {
          loadBalancerClass: CLASS,
          serveServicesWithoutClass: false,
        });
        // Every LoadBalancer Service: exactly one intent or one translation skip.
        for (const s of services.filter((x) => x.type === 'LoadBalancer')) {
          const id = `${s.namespace}/${s.name}`;
          const n =
            t.services.filter((i) => i.id === id).length + t.skipped.filter((k) => k.service === id).length;
          // Two objects with one name: each counted once per object.
          const objects = services.filter(
            (x) => x.type === 'LoadBalancer' && `${x.namespace}/${x.name}` === id,
          ).length;
          assert.equal(n, objects, id);
        }
        for (const k of [...t.skipped, ...d.skipped]) assert.ok(k.reason && k.detail, JSON.stringify(k));
      },
    ),
    { numRuns: FUZZ_RUNS },
  );
});
