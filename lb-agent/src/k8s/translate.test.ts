// Table tests: Kubernetes objects -> desired state, for every rule of DESIGN.md decisions
// 3, 4 and 11, including malformed objects (each skipped with a reason, never a crash).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { computeDesired, DesiredMemo, type DesiredState } from '../core/desired.ts';
import type { NodeInfo } from '../core/types.ts';
import { blockContains, parseAddressBlock } from '../net/pool.ts';
import { leanEndpointSlice, leanNode, leanService } from './objects.ts';
import { nodeInfo, type TranslateConfig, TranslateMemo, translateKubernetes } from './translate.ts';

const CLASS = 'portlb.io/portlb';
const cfg: TranslateConfig = {
  loadBalancerClass: CLASS,
  serveServicesWithoutClass: false,
  defaultScheduler: 'mh',
  defaultForwarding: 'nat',
};
const pool = [parseAddressBlock('203.0.113.0/24'), parseAddressBlock('fd00:203::/120')].filter(
  (b) => typeof b !== 'string',
);
const owns = (a: string) => pool.some((b) => blockContains(b, a));
const node: NodeInfo = { name: 'edge-1', excluded: false, ready: true };

type Obj = Record<string, unknown>;
// biome-ignore lint/suspicious/noExplicitAny: API JSON as it arrives.
type Raw = Record<string, any>;
const lean = (services: Raw[], slices: Raw[]) => ({
  services: services.map(leanService),
  endpointSlices: slices.map(leanEndpointSlice),
});
function svc(
  name: string,
  extra: { spec?: Obj; status?: Obj; annotations?: Record<string, string>; ns?: string } = {},
): Raw {
  return {
    metadata: { name, namespace: extra.ns ?? 'default', uid: `uid-${name}`, annotations: extra.annotations },
    spec: {
      type: 'LoadBalancer',
      loadBalancerClass: CLASS,
      ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 as never }],
      ...(extra.spec ?? {}),
    },
    status: extra.status ?? { loadBalancer: { ingress: [{ ip: '203.0.113.10', ipMode: 'Proxy' }] } },
  };
}

interface Ep {
  ip: string;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  node?: string;
}
function slice(
  service: string,
  eps: Ep[],
  extra: { ports?: Obj[]; addressType?: string; name?: string; ns?: string } = {},
): Raw {
  return {
    metadata: {
      name: extra.name ?? `${service}-abc`,
      namespace: extra.ns ?? 'default',
      labels: { 'kubernetes.io/service-name': service },
    },
    addressType: extra.addressType ?? 'IPv4',
    ports: (extra.ports ?? [{ name: 'http', port: 8080, protocol: 'TCP' }]) as never,
    endpoints: eps.map((e) => ({
      addresses: [e.ip],
      nodeName: e.node,
      conditions: { ready: e.ready, serving: e.serving, terminating: e.terminating },
    })),
  };
}

function desired(services: Raw[], slices: Raw[], n: NodeInfo = node, c: TranslateConfig = cfg): DesiredState {
  const t = translateKubernetes(lean(services, slices), c);
  const d = computeDesired({ services: t.services }, n, { owns });
  return { ...d, skipped: [...t.skipped, ...d.skipped] };
}

const backends = (d: DesiredState, i = 0) =>
  d.virtualServices[i]?.spec.destinations.map((x) => `${x.address}:${x.port}`).sort() ?? [];
const reasons = (d: DesiredState) => d.skipped.map((s) => `${s.service} ${s.reason}`);

describe('translate + computeDesired', () => {
  test('a Service of our class with ready endpoints: one IPVS service, SNAT, announced', () => {
    const d = desired([svc('web')], [slice('web', [{ ip: '10.0.0.1' }, { ip: '10.0.0.2', ready: true }])]);
    assert.equal(d.virtualServices.length, 1);
    const v = d.virtualServices[0]!;
    assert.deepEqual(v.spec.service.key, {
      kind: 'address',
      family: 'ipv4',
      protocol: 'tcp',
      address: '203.0.113.10',
      port: 80,
    });
    assert.equal(v.spec.service.scheduler, 'mh');
    assert.equal(v.snat, true);
    assert.deepEqual(backends(d), ['10.0.0.1:8080', '10.0.0.2:8080']);
    assert.deepEqual(d.vips, [
      {
        address: '203.0.113.10',
        family: 'ipv4',
        owners: ['default/web'],
        announce: true,
        withheld: undefined,
      },
    ]);
    assert.deepEqual(d.skipped, []);
  });

  test('class rules: other class skipped; no class only when configured as the default', () => {
    const other = svc('a', { spec: { loadBalancerClass: 'example.com/other' } });
    const none = svc('b', { spec: { loadBalancerClass: undefined } });
    const clusterIP = svc('c', { spec: { type: 'ClusterIP' } });
    assert.deepEqual(reasons(desired([other, none, clusterIP], [])), [
      'default/a NotOurClass',
      'default/b NotOurClass',
    ]);
    const asDefault = desired([none], [slice('b', [{ ip: '10.0.0.1' }])], node, {
      ...cfg,
      serveServicesWithoutClass: true,
    });
    assert.equal(asDefault.virtualServices.length, 1);
  });

  test('no address yet, a bad address, an address outside the pools', () => {
    const d = desired(
      [
        svc('noaddr', { status: {} }),
        svc('bad', { status: { loadBalancer: { ingress: [{ ip: '203.0.113.999' }] } } }),
        svc('outside', { status: { loadBalancer: { ingress: [{ ip: '198.51.100.1' }] } } }),
        svc('hostname', { status: { loadBalancer: { ingress: [{ hostname: 'lb.example.com' }] } } }),
      ],
      [],
    );
    assert.deepEqual(reasons(d), [
      'default/noaddr NoAddress',
      'default/bad InvalidAddress',
      'default/hostname NoAddress',
      'default/outside AddressOutsidePools',
    ]);
  });

  test('ready endpoints only; if none, serving+terminating ones (graceful drain)', () => {
    const eps = [
      { ip: '10.0.0.1', ready: true },
      { ip: '10.0.0.2', ready: false, serving: true, terminating: true },
      { ip: '10.0.0.3', ready: false, serving: false },
    ];
    assert.deepEqual(backends(desired([svc('web')], [slice('web', eps)])), ['10.0.0.1:8080']);
    const allTerminating = eps.slice(1);
    const d = desired([svc('web')], [slice('web', allTerminating)]);
    assert.deepEqual(backends(d), ['10.0.0.2:8080']);
    assert.equal(d.vips[0]?.announce, true);
    const none = desired([svc('web')], [slice('web', [{ ip: '10.0.0.3', ready: false, serving: false }])]);
    assert.deepEqual(backends(none), []);
    assert.equal(none.vips[0]?.withheld, 'NoReadyBackends');
  });

  test('slices grouped by service-name label and namespace; ports matched by name and protocol', () => {
    const two = svc('web', {
      spec: {
        ports: [
          { name: 'http', port: 80, protocol: 'TCP' },
          { name: 'dns', port: 53, protocol: 'UDP' },
        ],
      },
    });
    const slices = [
      slice('web', [{ ip: '10.0.0.1' }], {
        ports: [
          { name: 'http', port: 8080, protocol: 'TCP' },
          { name: 'dns', port: 5353, protocol: 'UDP' },
        ],
      }),
      slice('web', [{ ip: '10.0.0.2' }], {
        name: 'web-2',
        ports: [{ name: 'dns', port: 5353, protocol: 'TCP' }],
      }),
      slice('web', [{ ip: '10.0.0.9' }], { name: 'other-ns', ns: 'prod' }),
      slice('other', [{ ip: '10.0.0.8' }], { name: 'other-1' }),
    ];
    const d = desired([two], slices);
    assert.equal(d.virtualServices.length, 2);
    const http = d.virtualServices.find(
      (v) => v.spec.service.key.kind === 'address' && v.spec.service.key.port === 80,
    )!;
    const dns = d.virtualServices.find(
      (v) => v.spec.service.key.kind === 'address' && v.spec.service.key.port === 53,
    )!;
    assert.equal(dns.spec.service.key.kind === 'address' && dns.spec.service.key.protocol, 'udp');
    assert.deepEqual(
      http.spec.destinations.map((x) => `${x.address}:${x.port}`),
      ['10.0.0.1:8080'],
    );
    // The TCP "dns" port of web-2 does not match the UDP service port.
    assert.deepEqual(
      dns.spec.destinations.map((x) => `${x.address}:${x.port}`),
      ['10.0.0.1:5353'],
    );
  });

  test('de-duplicated by ip:port across slices, keeping the ready view', () => {
    const slices = [
      slice('web', [{ ip: '10.0.0.1', ready: false, serving: false }], { name: 'a' }),
      slice('web', [{ ip: '10.0.0.1', ready: true }, { ip: '10.0.0.2' }], { name: 'b' }),
    ];
    assert.deepEqual(backends(desired([svc('web')], slices)), ['10.0.0.1:8080', '10.0.0.2:8080']);
  });

  test('one family per slice; dual-stack Service gets a virtual service per family', () => {
    const dual = svc('web', {
      status: { loadBalancer: { ingress: [{ ip: '203.0.113.10' }, { ip: 'FD00:203::10' }] } },
    });
    const slices = [
      slice('web', [{ ip: '10.0.0.1' }], { name: 'v4' }),
      slice('web', [{ ip: 'fd00:1::1' }, { ip: '10.0.0.7' }], { name: 'v6', addressType: 'IPv6' }),
      slice('web', [{ ip: 'web.example.com' }], { name: 'fqdn', addressType: 'FQDN' }),
    ];
    const d = desired([dual], slices);
    assert.equal(d.virtualServices.length, 2);
    assert.deepEqual(d.vips.map((v) => v.address).sort(), ['203.0.113.10', 'fd00:203::10']);
    const v6 = d.virtualServices.find((v) => v.vip === 'fd00:203::10')!;
    assert.deepEqual(
      v6.spec.destinations.map((x) => x.address),
      ['fd00:1::1'],
    );
    // 10.0.0.7 in an IPv6 slice is ignored with a warning, not a crash.
    assert.ok(d.warnings.some((w) => w.message.includes('"10.0.0.7"')));
  });

  test('excluded or NotReady nodes program but do not announce', () => {
    const s = [svc('web')];
    const sl = [slice('web', [{ ip: '10.0.0.1' }])];
    const excludedNode: Raw = {
      metadata: { name: 'edge-1', labels: { 'node.kubernetes.io/exclude-from-external-load-balancers': '' } },
      status: { conditions: [{ type: 'Ready', status: 'True' }] },
    };
    const notReady: Raw = {
      metadata: { name: 'edge-1' },
      status: { conditions: [{ type: 'Ready', status: 'False' }] },
    };
    const ex = desired(s, sl, nodeInfo(leanNode(excludedNode), 'edge-1'));
    assert.equal(ex.virtualServices.length, 1);
    assert.equal(ex.vips[0]?.withheld, 'NodeExcluded');
    assert.equal(desired(s, sl, nodeInfo(leanNode(notReady), 'edge-1')).vips[0]?.withheld, 'NodeNotReady');
    assert.equal(desired(s, sl, nodeInfo(undefined, 'edge-1')).vips[0]?.withheld, 'NodeNotReady');
  });

  test('externalTrafficPolicy Local: this node’s endpoints only, no SNAT, announce only with one', () => {
    const local = svc('web', { spec: { externalTrafficPolicy: 'Local' } });
    const eps = [
      { ip: '10.0.0.1', node: 'edge-1' },
      { ip: '10.0.0.2', node: 'worker-7' },
    ];
    const d = desired([local], [slice('web', eps)]);
    assert.deepEqual(backends(d), ['10.0.0.1:8080']);
    assert.equal(d.virtualServices[0]?.snat, false);
    assert.equal(d.vips[0]?.announce, true);
    const elsewhere = desired([local], [slice('web', [eps[1]!])]);
    assert.deepEqual(backends(elsewhere), []);
    assert.equal(elsewhere.vips[0]?.withheld, 'NoLocalEndpoints');
  });

  test('annotations: scheduler, flags, forwarding, persistence; sessionAffinity ClientIP', () => {
    const a = svc('web', {
      annotations: {
        'portlb.io/scheduler': 'sh',
        'portlb.io/scheduler-flags': 'sh-port',
        'portlb.io/forwarding': 'tunnel',
        'portlb.io/persistence-timeout': '600',
        'portlb.io/persistence-netmask': '24',
      },
    });
    const d = desired([a], [slice('web', [{ ip: '10.0.0.1' }])]);
    const s = d.virtualServices[0]!;
    assert.equal(s.spec.service.scheduler, 'sh');
    assert.deepEqual(s.spec.service.schedulerFlags, ['flag-2']);
    assert.deepEqual(s.spec.service.persistence, { timeout: 600, prefix: 24 });
    assert.equal(s.spec.destinations[0]?.forward, 'tunnel');
    assert.equal(s.snat, false);
    assert.ok(d.warnings.some((w) => w.message.includes('tunnel forwarding cannot change ports')));
    const affinity = svc('aff', {
      spec: { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 300 } } },
    });
    assert.deepEqual(desired([affinity], []).virtualServices[0]?.spec.service.persistence, {
      timeout: 300,
      prefix: 32,
    });
  });

  test('portlb.io/health-check: the intent carries the check; the backends it selects are the checks', () => {
    const s = svc('web', { annotations: { 'portlb.io/health-check': '{"type":"http","path":"/healthz"}' } });
    const d = desired([s], [slice('web', [{ ip: '10.0.0.1' }, { ip: '10.0.0.2' }])]);
    assert.deepEqual(
      d.checks.map((c) => [c.service, c.address, c.spec.type, c.spec.path]),
      [
        ['default/web', '10.0.0.1', 'http', '/healthz'],
        ['default/web', '10.0.0.2', 'http', '/healthz'],
      ],
    );
  });

  test('malformed objects: each skipped with a reason naming the problem, never a crash', () => {
    const cases: [Raw, string, RegExp][] = [
      [
        svc('sched', { annotations: { 'portlb.io/scheduler': 'fastest' } }),
        'InvalidAnnotation',
        /portlb\.io\/scheduler: must be one of .* \(got "fastest"\)/,
      ],
      [
        svc('flags', { annotations: { 'portlb.io/scheduler-flags': 'mh-port,bogus' } }),
        'InvalidAnnotation',
        /unknown flag bogus/,
      ],
      [
        svc('fwd', { annotations: { 'portlb.io/forwarding': 'teleport' } }),
        'InvalidAnnotation',
        /must be nat, tunnel or dr/,
      ],
      [
        svc('timeout', { annotations: { 'portlb.io/persistence-timeout': '-5' } }),
        'InvalidAnnotation',
        /persistence-timeout/,
      ],
      [
        svc('check', { annotations: { 'portlb.io/health-check': '{"type":"http","fall":0}' } }),
        'InvalidAnnotation',
        /portlb\.io\/health-check: fall: must be an integer from 1 to 100 \(got 0\)/,
      ],
      [svc('noports', { spec: { ports: [] } }), 'NoPorts', /spec\.ports is empty/],
      [svc('nullports', { spec: { ports: null } }), 'NoPorts', /empty/],
      [svc('proto', { spec: { ports: [{ port: 80, protocol: 'ICMP' }] } }), 'UnsupportedProtocol', /"ICMP"/],
      [svc('range', { spec: { ports: [{ port: 70000, protocol: 'TCP' }] } }), 'InvalidPort', /70000/],
      [svc('noport', { spec: { ports: [{ name: 'x', protocol: 'TCP' }] } }), 'InvalidPort', /undefined/],
      [svc('strport', { spec: { ports: [{ port: '80', protocol: 'TCP' }] } }), 'InvalidPort', /"80"/],
    ];
    for (const [s, reason, detail] of cases) {
      const d = desired([s], [slice(s.metadata!.name!, [{ ip: '10.0.0.1' }])]);
      assert.equal(d.virtualServices.length, 0, s.metadata!.name);
      assert.equal(d.skipped[0]?.reason, reason, s.metadata!.name);
      assert.match(d.skipped[0]!.detail, detail, s.metadata!.name);
    }
  });

  test('bad endpoint data is dropped with a warning, the Service keeps working', () => {
    const slices = [
      slice('web', [{ ip: '10.0.0.1' }, { ip: 'not-an-ip' }, { ip: '10.0.0.300' }]),
      slice('web', [{ ip: '10.0.0.5' }], {
        name: 'badport',
        ports: [{ name: 'http', port: 0, protocol: 'TCP' }],
      }),
      {
        metadata: { labels: { 'kubernetes.io/service-name': 'web' }, namespace: 'default' },
        endpoints: null,
      },
      { metadata: null },
    ];
    const d = desired([svc('web')], slices);
    assert.deepEqual(backends(d), ['10.0.0.1:8080']);
    assert.equal(d.warnings.length, 3);
  });

  test('garbage objects anywhere in the snapshot never throw', () => {
    const garbage = [
      null,
      undefined,
      42,
      'x',
      {},
      { spec: null },
      { spec: { type: 'LoadBalancer', ports: 'nope' } },
    ] as unknown as Raw[];
    const d = desired([...garbage, svc('web')], [null as unknown as Raw, slice('web', [{ ip: '10.0.0.1' }])]);
    assert.deepEqual(backends(d), ['10.0.0.1:8080']);
    assert.ok(
      d.skipped.every(
        (s) => s.reason === 'NoPorts' || s.reason === 'Malformed' || s.reason === 'NotOurClass',
      ),
    );
  });

  test('two Services claiming the same VIP port: the first keeps it, the other is skipped', () => {
    const d = desired(
      [svc('b-second'), svc('a-first')],
      [slice('a-first', [{ ip: '10.0.0.1' }]), slice('b-second', [{ ip: '10.0.0.2' }])],
    );
    assert.deepEqual(
      d.virtualServices.map((v) => v.owner),
      ['default/a-first'],
    );
    assert.deepEqual(reasons(d), ['default/b-second PortConflict']);
    const shared = desired(
      [svc('a-first'), svc('b-second', { spec: { ports: [{ name: 'dns', port: 53, protocol: 'UDP' }] } })],
      [
        slice('a-first', [{ ip: '10.0.0.1' }]),
        slice('b-second', [{ ip: '10.0.0.2' }], { ports: [{ name: 'dns', port: 53, protocol: 'UDP' }] }),
      ],
    );
    assert.equal(shared.virtualServices.length, 2);
    assert.deepEqual(shared.vips[0]?.owners, ['default/a-first', 'default/b-second']);
  });

  test('memos: an unchanged Service is not recomputed, a changed one is, results identical', () => {
    const withRv = (o: Raw, rv: string) => ({
      ...o,
      metadata: { ...o.metadata, resourceVersion: rv },
    });
    const services = [
      withRv(svc('a'), '1'),
      withRv(svc('b', { status: { loadBalancer: { ingress: [{ ip: '203.0.113.11' }] } } }), '2'),
    ];
    const slices = [
      withRv(slice('a', [{ ip: '10.0.0.1' }]), '3'),
      withRv(slice('b', [{ ip: '10.0.0.2' }]), '4'),
    ];
    const tm = new TranslateMemo();
    const dm = new DesiredMemo();
    const first = translateKubernetes(lean(services, slices), cfg, { memo: tm });
    const changed = [slices[0]!, withRv(slice('b', [{ ip: '10.0.0.9' }]), '5')];
    const second = translateKubernetes(lean(services, changed), cfg, { memo: tm });
    assert.equal(second.services[0], first.services[0], 'a: same object');
    assert.notEqual(second.services[1], first.services[1], 'b: recomputed');
    const memoized = computeDesired({ services: second.services }, node, { owns }, dm);
    const again = computeDesired({ services: second.services }, node, { owns }, dm);
    const plain = computeDesired(
      { services: translateKubernetes(lean(services, changed), cfg).services },
      node,
      { owns },
    );
    assert.deepEqual(memoized, plain);
    assert.deepEqual(again, plain);
    assert.equal(again.virtualServices[0], memoized.virtualServices[0], 'served from the memo');
  });

  test('an unknown portlb.io/ key is a warning; the Service keeps working', () => {
    const d = desired(
      [svc('typo', { annotations: { 'portlb.io/shceduler': 'rr' } })],
      [slice('typo', [{ ip: '10.0.0.1' }])],
    );
    assert.deepEqual(backends(d), ['10.0.0.1:8080']);
    assert.equal(d.skipped.length, 0);
    assert.match(d.warnings[0]!.message, /unknown annotation portlb\.io\/shceduler ignored/);
  });

  test('a Service whose settings turn invalid keeps its last valid ones (a new invalid one is skipped)', () => {
    const good = svc('web', { annotations: { 'portlb.io/scheduler': 'rr' } });
    const first = translateKubernetes(lean([good], [slice('web', [{ ip: '10.0.0.1' }])]), cfg);
    assert.equal(first.services[0]?.scheduler, 'rr');
    const typo = svc('web', { annotations: { 'portlb.io/scheduler': 'fastest' } });
    const second = translateKubernetes(
      lean([typo], [slice('web', [{ ip: '10.0.0.1' }, { ip: '10.0.0.2' }])]),
      cfg,
      {
        lastValid: first.lastValid,
      },
    );
    assert.equal(second.skipped.length, 0, 'not skipped');
    assert.equal(second.services[0]?.scheduler, 'rr', 'the last valid scheduler');
    assert.equal(second.services[0]?.ports[0]?.endpoints.length, 2, 'endpoints still follow the cluster');
    assert.deepEqual(
      second.kept.map((k) => k.service),
      ['default/web'],
    );
    assert.match(second.services[0]!.warnings.join(), /fastest.*last valid settings stay in force/);
    // Replaced by another object of the same name: no last valid settings to keep.
    const other = { ...typo, metadata: { ...typo.metadata, uid: 'another-uid' } };
    const third = translateKubernetes(lean([other], []), cfg, { lastValid: second.lastValid });
    assert.equal(third.skipped[0]?.reason, 'InvalidAnnotation');
    // Fixed: the new settings, nothing kept.
    const fixed = svc('web', { annotations: { 'portlb.io/scheduler': 'wrr' } });
    const fourth = translateKubernetes(lean([fixed], []), cfg, { lastValid: second.lastValid });
    assert.equal(fourth.services[0]?.scheduler, 'wrr');
    assert.deepEqual(fourth.kept, []);
  });
});
