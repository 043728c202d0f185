import { readYamlFile } from '../config/validate.ts';
import { applyOperations } from '../ipvs/apply.ts';
import type { IpvsClient } from '../ipvs/client.ts';
import { NetlinkIpvsClient } from '../ipvs/netlink-client.ts';
import { planIpvs, summarizePlan } from '../ipvs/planner.ts';
import { fileOwnership, parseServicesFile } from '../ipvs/services-file.ts';
import { destinationId, serviceId } from '../ipvs/types.ts';
import { EXIT, helpText, parseCommand, UsageError } from './args.ts';
import { describePlannedOperation, formatTable } from './format.ts';

export interface CliIo {
  out: (line: string) => void;
  err: (line: string) => void;
  /** Opens the kernel client; tests pass a fake. */
  openIpvs: () => IpvsClient;
}

export const defaultIo: CliIo = {
  out: (l) => process.stdout.write(`${l}\n`),
  err: (l) => process.stderr.write(`${l}\n`),
  openIpvs: () => NetlinkIpvsClient.open(),
};

const IPVS_HELP = `Usage: portlb ipvs <command> [options]

Inspect and program the kernel's IPVS table directly.

Commands:
  list                 list virtual services and their backends (like ipvsadm -Ln)
  apply FILE           make the services of FILE exist exactly as written (declarative ipvsadm)

Run 'portlb ipvs <command> --help' for a command's options.`;

const listSpec = {
  usage: 'portlb ipvs list [--json] [--stats]',
  description: 'Lists every IPVS virtual service of this network namespace with its real servers.',
  options: { json: { type: 'boolean' }, stats: { type: 'boolean' } },
  optionHelp: [
    '--json               machine-readable output',
    '--stats              traffic counters instead of weights',
  ],
} as const;

const applySpec = {
  usage: 'portlb ipvs apply FILE [--dry-run] [--no-drain] [--json]',
  description: [
    'Makes the kernel match FILE (YAML or JSON, see docs/services-file.md): adds and changes what',
    "differs, deletes services inside the file's pools that the file no longer lists, and never",
    'touches a service outside its pools. A removed TCP/SCTP backend with open connections is',
    'set to weight 0 and removed by a later run once idle (or at once with --no-drain).',
    'Prints the plan, then what was applied. Exit codes: 0 done, 1 some operations failed,',
    '2 bad file or usage (nothing applied), 3 IPVS unavailable.',
  ].join('\n'),
  options: { 'dry-run': { type: 'boolean' }, 'no-drain': { type: 'boolean' }, json: { type: 'boolean' } },
  optionHelp: [
    '--dry-run            print the plan, change nothing',
    '--no-drain           delete removed backends at once instead of draining them',
    '--json               machine-readable plan and result',
  ],
} as const;

export async function ipvsCommand(argv: string[], io: CliIo = defaultIo): Promise<number> {
  const [sub, ...rest] = argv;
  if (!sub || sub === '--help' || sub === '-h' || sub === 'help') {
    io.out(IPVS_HELP);
    return sub ? EXIT.OK : EXIT.USAGE;
  }
  if (sub === 'list') return ipvsList(rest, io);
  if (sub === 'apply') return ipvsApply(rest, io);
  throw new UsageError(`unknown command 'ipvs ${sub}' (commands: list, apply)`);
}

async function ipvsList(argv: string[], io: CliIo): Promise<number> {
  const args = parseCommand(listSpec, argv);
  if (args.help) {
    io.out(helpText(listSpec));
    return EXIT.OK;
  }
  if (args.positionals.length) throw new UsageError(`unexpected argument '${args.positionals[0]}'`);
  const client = io.openIpvs();
  try {
    const table = await client.getTable({ stats: args.values.stats === true });
    if (args.values.json) io.out(JSON.stringify(table, null, 2));
    else io.out(formatTable(table, args.values.stats === true));
    return EXIT.OK;
  } finally {
    client.close();
  }
}

async function ipvsApply(argv: string[], io: CliIo): Promise<number> {
  const args = parseCommand(applySpec, argv);
  if (args.help) {
    io.out(helpText(applySpec));
    return EXIT.OK;
  }
  const [file, extra] = args.positionals;
  if (!file) throw new UsageError('apply needs a FILE (see --help)');
  if (extra) throw new UsageError(`unexpected argument '${extra}'`);
  // Everything about the file is checked before the kernel is opened.
  const spec = parseServicesFile(await readYamlFile(file), file);
  const client = io.openIpvs();
  try {
    const actual = await client.getTable();
    const plan = planIpvs({
      desired: spec.services,
      actual,
      owns: fileOwnership(spec),
      now: Date.now(),
      draining: new Map(),
      drainTimeoutMs: args.values['no-drain'] ? 0 : Number.POSITIVE_INFINITY,
    });
    const json = args.values.json === true;
    const summary = summarizePlan(plan.operations);
    if (!json) {
      for (const op of plan.operations) io.out(describePlannedOperation(op));
      for (const d of plan.drainingNow) {
        io.out(
          `  draining ${serviceId(d.key)} -> ${destinationId(d.destination)}: ${d.activeConnections} active, ${d.inactiveConnections} inactive connections (run again to remove once idle, or --no-drain)`,
        );
      }
      io.out(
        `plan: ${plan.operations.length} operations (${summary.addServices}+${summary.updateServices}~${summary.deleteServices}- services, ` +
          `${summary.addDestinations}+${summary.updateDestinations}~${summary.deleteDestinations}- backends); ` +
          `${plan.foreign} services outside the pools left alone`,
      );
    }
    if (args.values['dry-run']) {
      if (json)
        io.out(
          JSON.stringify(
            {
              dryRun: true,
              operations: plan.operations,
              summary,
              draining: plan.drainingNow,
              foreign: plan.foreign,
            },
            null,
            2,
          ),
        );
      return EXIT.OK;
    }
    const big = plan.operations.length >= 5000;
    let lastReport = 0;
    const report = await applyOperations(client, plan.operations, (done, total) => {
      if (big && !json && (done - lastReport >= total / 10 || done === total)) {
        lastReport = done;
        io.err(`applying: ${done}/${total}`);
      }
    });
    if (json) {
      io.out(
        JSON.stringify(
          {
            dryRun: false,
            summary,
            applied: report.applied.length,
            failed: report.failed.map((f) => ({
              operation: f.op,
              code: f.error.code,
              message: f.error.message,
            })),
            draining: plan.drainingNow,
            foreign: plan.foreign,
          },
          null,
          2,
        ),
      );
    } else {
      for (const f of report.failed) io.err(`failed: ${f.error.message}`);
      io.out(
        `applied ${report.applied.length} of ${plan.operations.length} operations${report.failed.length ? `, ${report.failed.length} failed` : ''}`,
      );
    }
    return report.failed.length ? EXIT.FAILED : EXIT.OK;
  } finally {
    client.close();
  }
}
