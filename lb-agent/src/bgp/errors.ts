import { PortlbError } from '../errors.ts';

export type BgpErrorCode =
  /** Input refused before anything was sent to the speaker. */
  | 'BGP_INVALID_CONFIG'
  /** The speaker cannot be reached (not running, socket missing). */
  | 'SPEAKER_UNAVAILABLE'
  /** The speaker refused a request. */
  | 'SPEAKER_ERROR'
  /** The running speaker has another ASN: changing it needs a speaker restart. */
  | 'ASN_MISMATCH';

export class BgpError extends PortlbError<BgpErrorCode> {
  readonly problems: string[];
  constructor(code: BgpErrorCode, message: string, options?: { cause?: unknown; problems?: string[] }) {
    super(code, message, options);
    this.problems = options?.problems ?? [];
  }
}
