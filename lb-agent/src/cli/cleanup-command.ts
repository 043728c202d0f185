// `portlb cleanup`: removes exactly what portlb created on this node, for an uninstall:
// its IPVS services (those whose VIP is on its interface or inside its pools), the VIP
// interface, and its netfilter objects (nftables tables, legacy iptables chains). It
// never touches another IPVS service, interface, table or chain.

import { netfilterCleaners } from '../agent/netfilter.ts';
import { parseAgentConfig } from '../config/agent-config.ts';
import { readYamlFile } from '../config/validate.ts';
import { describeError } from '../errors.ts';
import { NetlinkIpvsClient } from '../ipvs/netlink-client.ts';
import { ProcSysctls } from '../ipvs/sysctl.ts';
import { serviceId } from '../ipvs/types.ts';
import { canonicalIp } from '../net/ip.ts';
import { type AddressBlock, blockContains } from '../net/pool.ts';
import { RtNetlink } from '../netlink/rtnetlink.ts';
import { EXIT, helpText, parseCommand, UsageError } from './args.ts';

const spec = {
  usage: 'portlb cleanup [--config FILE] [--interface NAME] [--dry-run]',
  description: [
    'Removes what portlb created on this node (run it after uninstalling, on each edge node,',
    'with the agent stopped): the IPVS services whose VIP is on the VIP interface or inside the',
    "configuration's pools, the VIP interface itself, and portlb's nftables tables and legacy",
    'iptables chains. Nothing else: other IPVS services, interfaces and rules stay. Traffic to',
    'the removed VIPs stops: withdraw them first (uninstalling the DaemonSet does).',
    'Exit codes: 0 done, 1 something could not be removed, 2 usage, 3 no IPVS or no permission.',
  ].join('\n'),
  options: {
    config: { type: 'string', short: 'c' },
    interface: { type: 'string' },
    'dry-run': { type: 'boolean' },
  },
  optionHelp: [
    "-c, --config FILE    the agent's configuration: its pools and interface name",
    "--interface NAME     the VIP interface (default: the configuration's, else portlb0)",
    '--dry-run            list what would be removed, remove nothing',
  ],
} as const;

export async function cleanupCommand(argv: string[]): Promise<number> {
  const args = parseCommand(spec, argv);
  if (args.help) {
    console.log(helpText(spec));
    return EXIT.OK;
  }
  if (args.positionals.length) throw new UsageError(`unexpected argument '${args.positionals[0]}'`);
  const config = args.values.config
    ? parseAgentConfig(await readYamlFile(args.values.config), args.values.config)
    : undefined;
  const ifname = args.values.interface ?? config?.ipvs.vipInterface ?? 'portlb0';
  const blocks: AddressBlock[] = config?.pools.flatMap((p) => p.blocks) ?? [];
  const dry = args.values['dry-run'] === true;
  const act = dry ? 'would remove' : 'removed';
  let failures = 0;
  const attempt = async (what: string, fn: () => Promise<unknown> | unknown) => {
    if (dry) return console.log(`${act} ${what}`);
    try {
      await fn();
      console.log(`${act} ${what}`);
    } catch (err) {
      failures++;
      console.error(`could not remove ${what}: ${describeError(err)}`);
    }
  };

  const rt = new RtNetlink();
  const ipvs = NetlinkIpvsClient.open({ sysctls: new ProcSysctls(config?.ipvs.sysctlPath) });
  try {
    const index = rt.linkIndex(ifname);
    // The VIPs: portlb's local routes through the interface, and the addresses 0.1.0 put
    // on it (the kernel's own IPv6 link-local address of the interface is no VIP).
    const onInterface = new Set(
      index === undefined
        ? []
        : [...(await rt.localRoutes(index)), ...(await rt.addresses(index))]
            .map((a) => a.address)
            .filter((a) => !/^fe[89ab]/i.test(a)),
    );
    const ours = (address: string) =>
      onInterface.has(canonicalIp(address) ?? address) || blocks.some((b) => blockContains(b, address));
    const services = (await ipvs.listServices()).filter(
      ({ service }) => service.key.kind === 'address' && ours(service.key.address),
    );
    for (const { service } of services) {
      await attempt(`IPVS service ${serviceId(service.key)}`, () => ipvs.deleteService(service.key));
    }
    if (index !== undefined) {
      await attempt(`interface ${ifname} (${onInterface.size} VIPs)`, () => rt.deleteLink(ifname));
    }
    for (const cleaner of netfilterCleaners()) {
      if (!(await cleaner.present())) continue;
      await attempt(cleaner.what, () => cleaner.remove());
    }
    if (!services.length && index === undefined) console.log('no IPVS service or interface of portlb here');
  } finally {
    ipvs.close();
    rt.close();
  }
  return failures ? EXIT.FAILED : EXIT.OK;
}
