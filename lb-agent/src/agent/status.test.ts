import assert from 'node:assert/strict';
import { test } from 'node:test';
import { destinationId, serviceId } from '../ipvs/types.ts';
import { NODE_STATUS_LIMITS, type NodeStatusReport, nodeStatusObject } from '../k8s/node-status.ts';
import type { PassResult } from './reconciler.ts';
import { nodeReport, vipStates } from './status.ts';

/** A last pass past every bound of the node's status object: 1,200 VIPs, 600 services of 40 backends. */
function bigPass(): PassResult {
  const vips = Array.from({ length: 1200 }, (_, i) => `203.0.${(i * 7) % 256}.${i >> 8}`);
  const virtualServices = vips.slice(0, 600).map((vip, i) => ({
    vip,
    owner: `ns/svc-${i}`,
    spec: {
      service: { key: { kind: 'address', family: 'ipv4', protocol: 'tcp', address: vip, port: 80 } },
      destinations: Array.from({ length: 40 }, (_, j) => ({
        family: 'ipv4',
        address: `10.${i >> 8}.${i & 255}.${(j * 13) % 40}`,
        port: 8080,
        weight: 1 + (j % 3),
      })),
    },
  }));
  return {
    at: 0,
    ok: true,
    desired: {
      vips: vips.map((address) => ({ address, family: 'ipv4', owners: ['ns/x'] })),
      virtualServices,
    },
    report: {
      services: new Map(
        virtualServices.map((v, i) => [
          serviceId(v.spec.service.key as never),
          {
            outcome: i % 5 ? 'programmed' : 'unknown',
            usable: 1,
          },
        ]),
      ),
    },
    ads: vips.filter((_, i) => i % 3).map((a) => ({ prefix: `${a}/32` })),
    withheld: vips.filter((_, i) => !(i % 3)).map((address) => ({ address, reason: 'NotProgrammed' })),
    kept: [],
  } as unknown as PassResult;
}

test("the node report builds only what the node's status object keeps, and the object is the same as from everything", async () => {
  const last = bigPass();
  const input = {
    node: 'edge-1',
    identity: 'pod-1',
    version: 'v',
    leader: false,
    ready: { ready: true, reasons: [] },
    last,
    bgp: null,
    bfd: null,
    health: [],
  };
  let pauses = 0;
  let checks = 0;
  const report = await nodeReport(input, {
    pause: async () => {
      pauses++;
    },
    check: async () => {
      checks++;
    },
  });
  assert.equal(report.vips.length, NODE_STATUS_LIMITS.vips);
  assert.equal(report.services.length, NODE_STATUS_LIMITS.services);
  assert.ok(report.services.every((s) => s.backends.length === NODE_STATUS_LIMITS.backendsPerService));
  assert.equal(
    pauses,
    800 + 400 + 1200 + 600 + 500,
    'one after each item of every walk: advertisements, withheld VIPs, VIPs, services, the services built',
  );
  assert.ok(checks >= 3, 'between walks of different kinds');
  // Everything, built the way the report was before it was bounded.
  const everything: NodeStatusReport = {
    ...report,
    counts: undefined,
    vips: vipStates(last).map(({ kept: _, ...v }) => v),
    services: last.desired.virtualServices.map((v) => {
      const id = serviceId(v.spec.service.key);
      return {
        id,
        vip: v.vip,
        owner: v.owner,
        state: last.report.services.get(id)?.outcome ?? 'unknown',
        backends: v.spec.destinations.map((d) => ({
          address: destinationId(d),
          weight: d.weight,
          health: null,
        })),
      };
    }),
  };
  const object = nodeStatusObject(report, 'uid');
  assert.deepEqual(object, nodeStatusObject(everything, 'uid'));
  const status = (object as { status: { summary: object; truncated: object } }).status;
  assert.deepEqual(status.summary, { vipsAnnounced: 800, vipsWithheld: 400, peersEstablished: 0, peers: 0 });
  assert.deepEqual(status.truncated, { vips: 200, services: 100 });
});
