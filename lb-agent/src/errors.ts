import { constants } from 'node:os';

/**
 * Every error portlb raises on purpose carries a stable `code` (for metrics, tests and
 * callers that branch on it) and, where there is one, the underlying `cause`.
 */
export class PortlbError<Code extends string = string> extends Error {
  readonly code: Code;
  constructor(code: Code, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

const errnoNames = new Map<number, string>(Object.entries(constants.errno).map(([name, num]) => [num, name]));

/** `17` -> `EEXIST`; unknown numbers come back as `E<num>`. */
export function errnoName(errno: number): string {
  return errnoNames.get(Math.abs(errno)) ?? `E${Math.abs(errno)}`;
}

export const errno = constants.errno;

/** Message of any thrown value, for logs. */
export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/** Stable code of any thrown value, for metrics labels. */
export function errorCode(err: unknown): string {
  if (err instanceof PortlbError) return err.code;
  if (err && typeof err === 'object' && 'code' in err && typeof err.code === 'string') return err.code;
  return 'UNKNOWN';
}
