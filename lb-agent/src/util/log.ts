// Structured logs (pino, JSON lines on stdout). Secrets are redacted by path wherever
// they could appear.
import { type Logger, pino } from 'pino';

export type { Logger };

export const REDACT_PATHS = [
  'password',
  '*.password',
  '*.*.password',
  'auth_password',
  '*.auth_password',
  '*.*.auth_password',
  'token',
  '*.token',
];

export function createLogger(options: { level?: string; name?: string } = {}): Logger {
  return pino({
    name: options.name ?? 'portlb',
    level: options.level ?? process.env.PORTLB_LOG_LEVEL ?? 'info',
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
}

/** A logger that drops everything (tests, and code that was given none). */
export const silentLogger: Logger = pino({ level: 'silent' });
