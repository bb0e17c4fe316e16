import { AppError, ErrorCode } from '../common/app-error.js';

/** Why a crypto operation failed. */
export const CryptoErrorReason = {
  /** The master key version is not listed in ENCRYPTION_KEYS (or the active one is missing). */
  UnknownKeyVersion: 'unknown_key_version',
  /** A wrapped data key did not authenticate: wrong master key, wrong conversation, or tampered. */
  UnwrapFailed: 'unwrap_failed',
  /** A message did not authenticate: wrong key, moved to another row, or tampered. */
  OpenFailed: 'open_failed',
  /** Malformed input: wrong key, nonce or wrapped-key length, or an out-of-range AAD field. */
  InvalidInput: 'invalid_input',
} as const;
export type CryptoErrorReason = (typeof CryptoErrorReason)[keyof typeof CryptoErrorReason];

/**
 * A failed encryption operation. It is a server fault, never the caller's, so it carries
 * the `internal` contract code; the message names ids and versions but never key
 * material or plaintext.
 */
export class CryptoError extends AppError {
  constructor(
    readonly reason: CryptoErrorReason,
    message: string,
  ) {
    super(ErrorCode.Internal, message);
    this.name = 'CryptoError';
  }
}
