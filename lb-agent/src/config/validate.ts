// Parsing user files once, with errors that name the option and the value that is wrong.
import { readFile } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { PortlbError } from '../errors.ts';
import { ipFamily } from '../net/ip.ts';

/** An integer option with a message that says the range (and what it is). */
export const intField = (min: number, max: number, what = 'an integer') => {
  const error = `must be ${what} from ${min} to ${max}`;
  return z.number({ error }).int({ error }).min(min, { error }).max(max, { error });
};

export const ipField = z
  .string({ error: 'must be an IP address' })
  .refine((s) => ipFamily(s) !== undefined, { error: 'is not an IP address' });

export type ConfigErrorCode =
  | 'CONFIG_INVALID'
  | 'CONFIG_UNREADABLE'
  | 'CONFIG_SYNTAX'
  | 'CONFIG_RELOAD_REFUSED';

/** A user file that cannot be used; `problems` has one line per problem. */
export class ConfigError extends PortlbError<ConfigErrorCode> {
  readonly problems: string[];
  constructor(code: ConfigErrorCode, source: string, problems: string[], options?: { cause?: unknown }) {
    super(
      code,
      `${source}: ${problems.length === 1 ? problems[0] : `\n  ${problems.join('\n  ')}`}`,
      options,
    );
    this.problems = problems;
  }
}

export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out || '(top level)';
}

function formatValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  const text = JSON.stringify(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/** One line per issue: "services[0].port: must be at most 65535 (got 70000)". */
export function formatIssues(issues: readonly z.core.$ZodIssue[]): string[] {
  return issues.map((issue) => {
    const where = formatPath(issue.path);
    if (issue.code === 'unrecognized_keys') {
      const prefix = issue.path.length ? `${where}.` : '';
      return issue.keys.map((k) => `${prefix}${k}: unknown option`).join('; ');
    }
    if (issue.code === 'invalid_union' && issue.errors.length) {
      return `${where}: ${issue.message}`;
    }
    const got = 'input' in issue ? ` (got ${formatValue(issue.input)})` : '';
    return `${where}: ${issue.message}${got}`;
  });
}

/** Validates `data` against `schema`; throws a ConfigError naming every bad option. */
export function parseWith<S extends z.ZodType>(schema: S, data: unknown, source: string): z.output<S> {
  const result = schema.safeParse(data, { reportInput: true });
  if (!result.success) throw new ConfigError('CONFIG_INVALID', source, formatIssues(result.error.issues));
  return result.data;
}

/** Reads a YAML (or JSON, which is YAML) file; syntax errors carry line and column. */
export async function readYamlFile(file: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError('CONFIG_UNREADABLE', file, [`cannot read the file: ${(err as Error).message}`], {
      cause: err,
    });
  }
  return parseYamlText(text, file);
}

export function parseYamlText(text: string, source: string): unknown {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length) {
    throw new ConfigError(
      'CONFIG_SYNTAX',
      source,
      doc.errors.map((e) => e.message.split('\n')[0] ?? e.message),
    );
  }
  return doc.toJS();
}
