// `portlb config check`: validates an agent configuration or a services file offline,
// with the agent's own parsers (every problem named with its field and value), before it
// is rolled out. Nothing is applied; nothing on the node is read but the files named.
import { readFileSync } from 'node:fs';
import { checkFilePools, intentsFromFile } from '../agent/sources.ts';
import { parseAgentConfig } from '../config/agent-config.ts';
import { ConfigError, parseYamlText } from '../config/validate.ts';
import { parseServicesFile } from '../ipvs/services-file.ts';
import { EXIT, helpText, parseCommand, UsageError } from './args.ts';

const spec = {
  usage: 'portlb config check [--services] [--config AGENT_CONFIG] FILE|-',
  description: [
    "Validates a file with the agent's own rules and says what is wrong, field by field,",
    'before you roll it out (a ConfigMap, a standalone host). Nothing is applied.',
    'FILE is an agent configuration, or with --services a services file (the standalone',
    "mode's; with --config, its pools must lie inside that agent configuration's). - reads",
    'standard input. Exit codes: 0 valid, 2 invalid or unreadable.',
  ].join('\n'),
  options: {
    services: { type: 'boolean' },
    config: { type: 'string', short: 'c' },
  },
  optionHelp: [
    '--services           FILE is a services file, not an agent configuration',
    "-c, --config FILE    with --services: the agent configuration that bounds the file's pools",
  ],
} as const;

function read(file: string): { text: string; source: string } {
  const source = file === '-' ? '<stdin>' : file;
  try {
    return { text: readFileSync(file === '-' ? 0 : file, 'utf8'), source };
  } catch (err) {
    throw new ConfigError('CONFIG_UNREADABLE', source, [`cannot read the file: ${(err as Error).message}`]);
  }
}

export async function configCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (!sub || sub === '--help' || sub === '-h') {
    console.log(helpText(spec));
    return sub ? EXIT.OK : EXIT.USAGE;
  }
  if (sub !== 'check') throw new UsageError(`unknown config command '${sub}' (see portlb config --help)`);
  const args = parseCommand(spec, rest);
  if (args.help) {
    console.log(helpText(spec));
    return EXIT.OK;
  }
  const [file, extra] = args.positionals;
  if (!file) throw new UsageError('config check needs a FILE (or - for standard input)');
  if (extra) throw new UsageError(`unexpected argument '${extra}'`);
  if (args.values.config && !args.values.services)
    throw new UsageError('--config goes with --services (it bounds a services file)');
  const { text, source } = read(file);
  if (args.values.services) {
    const parsed = parseServicesFile(parseYamlText(text, source), source);
    if (args.values.config) {
      const agent = read(args.values.config);
      checkFilePools(parsed, parseAgentConfig(parseYamlText(agent.text, agent.source), agent.source), source);
    }
    const intents = intentsFromFile(parsed, source);
    const checked = intents.filter((i) => i.healthCheck).length;
    console.log(
      `${source}: a valid services file: ${parsed.services.length} service(s), ${parsed.pools.length} pool(s)${checked ? `, ${checked} with a health check` : ''}`,
    );
    return EXIT.OK;
  }
  const config = parseAgentConfig(parseYamlText(text, source), source);
  console.log(
    `${source}: a valid agent configuration: mode ${config.mode}, ${config.pools.length} pool(s), ${config.bgp?.peers.length ?? 0} BGP peer(s)${config.bfd ? ', BFD' : ''}`,
  );
  return EXIT.OK;
}
