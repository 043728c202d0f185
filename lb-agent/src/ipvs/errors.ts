import { PortlbError } from '../errors.ts';
import { destinationId, type IpvsOperation, serviceId } from './types.ts';

export type IpvsErrorCode =
  | 'IPVS_UNAVAILABLE'
  | 'SERVICE_EXISTS'
  | 'SERVICE_NOT_FOUND'
  | 'DESTINATION_EXISTS'
  | 'DESTINATION_NOT_FOUND'
  | 'SCHEDULER_NOT_FOUND'
  | 'OUT_OF_RANGE'
  | 'INVALID_ARGUMENT'
  | 'PERMISSION_DENIED'
  | 'NOT_SUPPORTED'
  | 'KERNEL_ERROR';

/** An IPVS operation the kernel (or the fake, identically) refused. */
export class IpvsError extends PortlbError<IpvsErrorCode> {
  /** The errno name the kernel answered with (EEXIST, ESRCH, ...), when there was one. */
  readonly errno: string | undefined;
  constructor(code: IpvsErrorCode, message: string, options?: { cause?: unknown; errno?: string }) {
    super(code, message, options);
    this.errno = options?.errno;
  }
}

/**
 * The kernel reuses errno values with command-specific meanings (ip_vs_ctl.c): ESRCH is
 * "no such service" for every command but NEW_SERVICE; ENOENT is "no such destination"
 * for destination commands but "no such scheduler" for service commands.
 */
export function ipvsCodeForErrno(op: IpvsOperation['op'], errno: string): IpvsErrorCode {
  switch (errno) {
    case 'EEXIST':
      return op === 'add-service' ? 'SERVICE_EXISTS' : 'DESTINATION_EXISTS';
    case 'ESRCH':
      return 'SERVICE_NOT_FOUND';
    case 'ENOENT':
      return op === 'add-service' || op === 'update-service'
        ? 'SCHEDULER_NOT_FOUND'
        : 'DESTINATION_NOT_FOUND';
    case 'ERANGE':
      return 'OUT_OF_RANGE';
    case 'EINVAL':
      return 'INVALID_ARGUMENT';
    case 'EPERM':
    case 'EACCES':
      return 'PERMISSION_DENIED';
    case 'EAFNOSUPPORT':
    case 'EOPNOTSUPP':
    case 'EPROTONOSUPPORT':
      return 'NOT_SUPPORTED';
    default:
      return 'KERNEL_ERROR';
  }
}

const HINTS: Partial<Record<IpvsErrorCode, string>> = {
  SCHEDULER_NOT_FOUND: 'the scheduler module (ip_vs_<name>) is not available to the kernel',
  INVALID_ARGUMENT: 'the kernel rejected a field; a destination needs a route in masq mode',
  PERMISSION_DENIED: 'the agent needs CAP_NET_ADMIN',
};

export function ipvsErrorFor(op: IpvsOperation, errno: string, cause?: unknown): IpvsError {
  const code = ipvsCodeForErrno(op.op, errno);
  const hint = HINTS[code];
  return new IpvsError(code, `${describeOperation(op)}: ${code} (${errno})${hint ? `: ${hint}` : ''}`, {
    cause,
    errno,
  });
}

export function describeOperation(op: IpvsOperation): string {
  switch (op.op) {
    case 'add-service':
    case 'update-service':
      return `${op.op} ${serviceId(op.service.key)}`;
    case 'delete-service':
      return `${op.op} ${serviceId(op.key)}`;
    default:
      return `${op.op} ${serviceId(op.key)} -> ${destinationId(op.destination)}`;
  }
}
