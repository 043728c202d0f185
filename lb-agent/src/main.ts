// The `portlb` command: wiring only. Each command lives in cli/.
import { EXIT, UsageError } from './cli/args.ts';
import { ipvsCommand } from './cli/ipvs-command.ts';
import { ConfigError } from './config/validate.ts';
import { describeError } from './errors.ts';
import { IpvsError } from './ipvs/errors.ts';
import { NetlinkError } from './netlink/socket.ts';
import { VERSION } from './version.ts';

const HELP = `Usage: portlb <command> [options]

portlb: a portable Layer-4 load balancer for Kubernetes (IPVS + BGP/ECMP).

Commands:
  agent                run lb-agent (--config FILE)
  status               what the agent on this node does (services, backends, VIPs, BGP)
  cleanup              remove what portlb created on this node (after an uninstall)
  config check FILE    validate an agent configuration (or, with --services, a services file)
  ipvs list            list the kernel's IPVS services
  ipvs apply FILE      make IPVS match a declarative services file

Run 'portlb <command> --help' for details.`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    console.log(HELP);
    return command ? EXIT.OK : EXIT.USAGE;
  }
  if (command === '--version') {
    console.log(`portlb ${VERSION}`);
    return EXIT.OK;
  }
  switch (command) {
    case 'ipvs':
      return ipvsCommand(rest);
    case 'agent':
      return (await import('./cli/agent-command.ts')).agentCommand(rest);
    case 'status':
      return (await import('./cli/status-command.ts')).statusCommand(rest);
    case 'cleanup':
      return (await import('./cli/cleanup-command.ts')).cleanupCommand(rest);
    case 'config':
      return (await import('./cli/config-command.ts')).configCommand(rest);
    default:
      throw new UsageError(`unknown command '${command}' (see portlb --help)`);
  }
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  if (err instanceof UsageError) {
    console.error(`portlb: ${err.message}`);
    process.exitCode = EXIT.USAGE;
  } else if (err instanceof ConfigError) {
    console.error(`portlb: invalid input, nothing was applied\n${err.message}`);
    process.exitCode = EXIT.USAGE;
  } else if (err instanceof IpvsError || err instanceof NetlinkError) {
    console.error(`portlb: ${err.code}: ${err.message}`);
    process.exitCode = EXIT.ENVIRONMENT;
  } else {
    console.error(`portlb: unexpected error: ${describeError(err)}`);
    if (err instanceof Error && err.stack) console.error(err.stack);
    process.exitCode = EXIT.FAILED;
  }
}
