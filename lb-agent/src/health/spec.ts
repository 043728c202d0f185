// What a health check is, as the services file and the portlb.io/health-check annotation
// declare it: one schema, one set of defaults, errors that name the field and the value.
// The checks themselves run in checker.ts; how one probe is made is probe.ts.
import { z } from 'zod';
import { formatIssues, intField } from '../config/validate.ts';

export const CHECK_TYPES = ['tcp', 'http', 'https', 'udp'] as const;
export type CheckType = (typeof CHECK_TYPES)[number];

export interface HealthCheckSpec {
  type: CheckType;
  /** Port to probe; undefined: the backend's own port. */
  port: number | undefined;
  /** http(s): the request's path and Host header (undefined: the backend's address). */
  path: string;
  host: string | undefined;
  /** http(s): the status codes that pass, inclusive. */
  expectStatus: readonly [number, number];
  /** udp: the request's bytes (hex), and what the reply must start with (hex; '' = any reply). */
  send: string;
  expect: string;
  intervalMs: number;
  timeoutMs: number;
  /** Consecutive passes that bring a failed backend back, and failures that take it out. */
  rise: number;
  fall: number;
}

const seconds = (min: number, max: number) => {
  const error = `must be a number of seconds from ${min} to ${max}`;
  return z.number({ error }).min(min, { error }).max(max, { error });
};
const hex = z
  .string({ error: 'must be hex bytes' })
  .transform((s) => s.replace(/\s+/g, '').toLowerCase())
  .refine((s) => /^([0-9a-f]{2})*$/.test(s), { error: 'must be hex bytes (e.g. "0001 0100")' });

export const healthCheckSchema = z
  .object({
    type: z.enum(CHECK_TYPES, { error: `must be one of ${CHECK_TYPES.join(', ')}` }),
    port: intField(1, 65535, 'a port').optional(),
    path: z
      .string({ error: 'must be a path' })
      .refine((s) => s.startsWith('/') && !/[\s]/.test(s), { error: 'must start with / and hold no spaces' })
      .default('/'),
    host: z
      .string({ error: 'must be a host name' })
      .refine((s) => /^[A-Za-z0-9.:[\]-]{1,253}$/.test(s), { error: 'must be a host name' })
      .optional(),
    expectStatus: z
      .string({ error: 'must be a status or a range like 200-399' })
      .refine((s) => /^[1-5]\d\d(-[1-5]\d\d)?$/.test(s), {
        error: 'must be a status or a range like 200-399',
      })
      .default('200-399'),
    send: hex.optional(),
    expect: hex.default(''),
    intervalSeconds: seconds(0.1, 3600).default(5),
    timeoutSeconds: seconds(0.05, 60).default(2),
    rise: intField(1, 100).default(2),
    fall: intField(1, 100).default(3),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (v.timeoutSeconds > v.intervalSeconds)
      ctx.addIssue({
        code: 'custom',
        path: ['timeoutSeconds'],
        message: `must not exceed intervalSeconds (${v.intervalSeconds})`,
        input: v.timeoutSeconds,
      });
    if (v.type === 'udp' && !v.send)
      ctx.addIssue({
        code: 'custom',
        path: ['send'],
        message: 'udp checks need a request: the bytes to send (hex), e.g. a DNS query',
        input: v.send,
      });
    const [lo, hi] = v.expectStatus.split('-').map(Number);
    if (hi !== undefined && hi < lo!)
      ctx.addIssue({
        code: 'custom',
        path: ['expectStatus'],
        message: 'the range is reversed',
        input: v.expectStatus,
      });
  });

export type RawHealthCheck = z.input<typeof healthCheckSchema>;

export function toSpec(v: z.output<typeof healthCheckSchema>): HealthCheckSpec {
  const [lo, hi] = v.expectStatus.split('-').map(Number);
  return {
    type: v.type,
    port: v.port,
    path: v.path,
    host: v.host,
    expectStatus: [lo!, hi ?? lo!],
    send: v.send ?? '',
    expect: v.expect,
    intervalMs: Math.round(v.intervalSeconds * 1000),
    timeoutMs: Math.round(v.timeoutSeconds * 1000),
    rise: v.rise,
    fall: v.fall,
  };
}

/**
 * The annotation's value: a type alone ("tcp", "http", "https") for the defaults, or a JSON
 * object with the services file's fields. A problem names the field and the value.
 */
export function parseHealthCheckText(
  text: string,
): { ok: true; spec: HealthCheckSpec } | { ok: false; problem: string } {
  const t = text.trim();
  let data: unknown;
  if ((CHECK_TYPES as readonly string[]).includes(t)) data = { type: t };
  else {
    try {
      data = JSON.parse(t);
    } catch {
      return {
        ok: false,
        problem: `must be tcp, http, https or a JSON object like {"type":"http","path":"/healthz"}`,
      };
    }
  }
  const r = healthCheckSchema.safeParse(data, { reportInput: true });
  if (!r.success) return { ok: false, problem: formatIssues(r.error.issues).join('; ') };
  return { ok: true, spec: toSpec(r.data) };
}

/** One line for logs and status: "http /healthz every 5 s, timeout 2 s, rise 2, fall 3". */
export function describeCheck(s: HealthCheckSpec): string {
  const what = s.type === 'http' || s.type === 'https' ? `${s.type} ${s.path}` : s.type;
  return `${what}${s.port ? ` port ${s.port}` : ''} every ${s.intervalMs / 1000} s, timeout ${s.timeoutMs / 1000} s, rise ${s.rise}, fall ${s.fall}`;
}
