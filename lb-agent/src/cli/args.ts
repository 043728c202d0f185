import { type ParseArgsConfig, parseArgs } from 'node:util';
import { PortlbError } from '../errors.ts';

/** Exit codes of every command. */
export const EXIT = { OK: 0, FAILED: 1, USAGE: 2, ENVIRONMENT: 3 } as const;

export class UsageError extends PortlbError<'USAGE'> {
  constructor(message: string) {
    super('USAGE', message);
  }
}

export interface CommandSpec<O extends NonNullable<ParseArgsConfig['options']>> {
  usage: string;
  description: string;
  options: O;
  /** Lines describing each option, shown by --help. */
  optionHelp: readonly string[];
}

/** parseArgs with --help on every command and usage errors that say where to look. */
export function parseCommand<O extends NonNullable<ParseArgsConfig['options']>>(
  spec: CommandSpec<O>,
  argv: string[],
) {
  const options = { ...spec.options, help: { type: 'boolean', short: 'h' } } as O & {
    help: { type: 'boolean'; short: 'h' };
  };
  try {
    const parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
    return { ...parsed, help: (parsed.values as Record<string, unknown>).help === true };
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\nUsage: ${spec.usage} (see --help)`);
  }
}

export function helpText(spec: CommandSpec<NonNullable<ParseArgsConfig['options']>>): string {
  return [
    `Usage: ${spec.usage}`,
    '',
    spec.description,
    '',
    'Options:',
    ...spec.optionHelp.map((l) => `  ${l}`),
    '  -h, --help           show this help',
  ].join('\n');
}
