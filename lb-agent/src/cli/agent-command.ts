import { hostname } from 'node:os';
import { Agent } from '../agent/agent.ts';
import { parseAgentConfig } from '../config/agent-config.ts';
import { readYamlFile } from '../config/validate.ts';
import { describeError } from '../errors.ts';
import type { IpvsClient } from '../ipvs/client.ts';
import { FaultyIpvsClient, FileFaults } from '../ipvs/faulty-client.ts';
import { NetlinkIpvsClient } from '../ipvs/netlink-client.ts';
import { ProcSysctls } from '../ipvs/sysctl.ts';
import { DEFAULT_HELPER_NICE, niceHelperThreads } from '../util/helper-threads.ts';
import { createLogger, type Logger } from '../util/log.ts';
import { EXIT, helpText, parseCommand, UsageError } from './args.ts';

const spec = {
  usage: 'portlb agent --config FILE [--node-name NAME] [--log-level LEVEL]',
  description: [
    'Runs lb-agent: watches desired state (Kubernetes, or a services file in standalone mode),',
    'programs IPVS, the VIP addresses and SNAT on this node, and announces the VIPs it can serve',
    'through the co-located gobgpd. Serves /healthz, /readyz, /metrics and /status on http.listen.',
    '',
    'The configuration (docs/configuration.md) is validated completely first: a bad option is',
    'reported with its name and value, and the agent exits 2 before touching the kernel.',
    'SIGTERM: graceful shutdown (GRACEFUL_SHUTDOWN community, wait, withdraw, exit); a second',
    'signal exits at once. Kernel state is left in place for the next start to adopt.',
    'SIGHUP (standalone mode): the configuration is read again; new pools and BGP peers are',
    'applied without a restart, anything else is refused naming it, and a bad file is refused',
    'naming the option and value; either way the running configuration stays.',
    "$PORTLB_GC_HELPER_NICE (0..19, default 0): a nice value for V8's garbage-collector helper",
    'threads: on a node with few CPUs the event loop gets the CPU first, for more memory',
    '(docs/configuration.md, "Environment"); 0 leaves them as Node starts them.',
  ].join('\n'),
  options: {
    config: { type: 'string', short: 'c' },
    'node-name': { type: 'string' },
    'log-level': { type: 'string' },
  },
  optionHelp: [
    '-c, --config FILE    the agent configuration (YAML)',
    '--node-name NAME     this node (default: config nodeName, $PORTLB_NODE_NAME, the host name)',
    '--log-level LEVEL    trace, debug, info (default), warn, error',
  ],
} as const;

export async function agentCommand(argv: string[]): Promise<number> {
  const args = parseCommand(spec, argv);
  if (args.help) {
    console.log(helpText(spec));
    return EXIT.OK;
  }
  if (!args.values.config) throw new UsageError('agent needs --config FILE (see --help)');
  const level = args.values['log-level'];
  if (
    level !== undefined &&
    !['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].includes(level)
  ) {
    throw new UsageError(
      `--log-level: unknown level ${JSON.stringify(level)} (trace, debug, info, warn, error)`,
    );
  }
  const nice = helperNice(process.env.PORTLB_GC_HELPER_NICE);
  const config = parseAgentConfig(await readYamlFile(args.values.config), args.values.config);
  const nodeName = args.values['node-name'] ?? config.nodeName ?? process.env.PORTLB_NODE_NAME ?? hostname();
  const log = createLogger({ level });
  if (nice > 0) log.info({ nice, threads: niceHelperThreads(nice).length }, "V8's helper threads niced");
  // Last resort: a failure nothing caught. The state it left is unknown, so the agent
  // exits (the kernel and the speaker keep what they have; the next start adopts it)
  // instead of carrying on in a state nobody can vouch for.
  process.on('unhandledRejection', (err) => {
    log.fatal({ err: describeError(err), stack: (err as Error)?.stack }, 'unhandled rejection: exiting');
    process.exit(EXIT.FAILED);
  });
  process.on('uncaughtException', (err) => {
    log.fatal({ err: describeError(err), stack: err.stack }, 'uncaught exception: exiting');
    process.exit(EXIT.FAILED);
  });
  const faults = process.env.PORTLB_TEST_FAULTS;
  let ipvs: IpvsClient | undefined;
  if (faults) {
    log.warn(
      { file: faults },
      'PORTLB_TEST_FAULTS is set: kernel faults are injected on request (test labs only)',
    );
    ipvs = new FaultyIpvsClient(
      NetlinkIpvsClient.open({ sysctls: new ProcSysctls(config.ipvs.sysctlPath) }),
      new FileFaults(faults),
    );
  }
  const agent = new Agent(
    {
      config,
      nodeName,
      identity: process.env.POD_NAME ?? nodeName,
      namespace: process.env.POD_NAMESPACE,
      nodeAddress: process.env.PORTLB_NODE_IP,
    },
    { logger: log, ipvs },
  );
  // The source (e.g. the services file) is validated before any kernel or speaker work.
  await agent.prepare();

  let signals = 0;
  const done = new Promise<number>((resolve) => {
    const onSignal = (sig: NodeJS.Signals) => {
      signals++;
      if (signals > 1) {
        log.warn({ signal: sig }, 'second signal: exiting now');
        process.exit(130);
      }
      log.info({ signal: sig }, 'shutting down');
      // A stray handle must not keep a finished agent alive.
      const exitSoon = (code: number) => setTimeout(() => process.exit(code), 2000).unref();
      agent
        .shutdown({ graceful: true })
        .then(() => {
          exitSoon(EXIT.OK);
          resolve(EXIT.OK);
        })
        .catch((err) => {
          log.error({ err: describeError(err) }, 'shutdown failed');
          resolve(EXIT.FAILED);
        });
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  await agent.start();
  log.info({ listen: config.http.listen }, 'agent running');
  // One reload at a time, in the order the signals came.
  let reloads = Promise.resolve();
  process.on('SIGHUP', () => {
    reloads = reloads.then(() => reloadConfig(agent, args.values.config!, log));
  });
  return done;
}

/** PORTLB_GC_HELPER_NICE: the nice value of V8's helper threads (util/helper-threads.ts); 0 leaves them. */
function helperNice(value: string | undefined): number {
  if (value === undefined || value === '') return DEFAULT_HELPER_NICE;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 19)
    throw new UsageError(
      `PORTLB_GC_HELPER_NICE: ${JSON.stringify(value)} is not a nice value 0..19 (0 leaves V8's helper threads as they are)`,
    );
  return n;
}

/** SIGHUP: the configuration file read and checked again, then applied or refused (nothing half-done). */
async function reloadConfig(agent: Agent, file: string, log: Logger): Promise<void> {
  try {
    const next = parseAgentConfig(await readYamlFile(file), file);
    const applied = await agent.reloadConfig(next, file);
    agent.conditions.clear('config-reload');
    log.info(
      { file, applied },
      applied.length ? 'configuration reloaded' : 'configuration reloaded: nothing changed',
    );
  } catch (err) {
    agent.metrics.configReloadErrors.inc({ file: 'config' });
    log.error(
      { file, err: describeError(err) },
      'configuration reload refused; the running configuration is kept',
    );
    agent.conditions.set('config-reload', {
      severity: 'error',
      reason: 'ConfigReloadRefused',
      message: `${describeError(err)}; the running configuration is kept`,
    });
  }
}
