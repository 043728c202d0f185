// The conformance suite against the real kernel, over our netlink client.
import { before } from 'node:test';
import { NetlinkIpvsClient } from '../../lb-agent/src/ipvs/netlink-client.ts';
import { ensureDummy, requireKernelHarness } from '../harness/kernel.ts';
import { ipvsConformance } from '../ipvs/conformance.ts';

requireKernelHarness();
before(() => ensureDummy('plconf0', ['10.249.0.254/24', 'fd00:249::fe/64']));
ipvsConformance('kernel (generic netlink)', () => NetlinkIpvsClient.open());
