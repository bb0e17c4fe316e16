// What the load workers share: tokens the service accepts, and an error tally.
import { SignJWT } from 'jose';

const tokenKeys = new Map();

/** An HS256 token for `userId`, valid an hour from now ('bare' for the bare relay, which checks none). */
export async function tokenFor(target, userId) {
  if (target.kind !== 'service') return 'bare';
  let key = tokenKeys.get(target.secret);
  if (!key) {
    key = new TextEncoder().encode(target.secret);
    tokenKeys.set(target.secret, key);
  }
  return new SignJWT({})
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(userId)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + 3600)
    .sign(key);
}

/** Failed requests by code. */
export class ErrorTally {
  constructor() {
    this.count = 0;
    this.byCode = {};
    /** Requests answered rate_limited and sent again after retryAfterMs (not errors). */
    this.rateLimited = 0;
    /** The first message and details seen per code: evidence for the report. */
    this.firstByCode = {};
  }

  add(error) {
    this.count += 1;
    const code = error?.code ?? 'unknown';
    this.byCode[code] = (this.byCode[code] ?? 0) + 1;
    this.firstByCode[code] ??= { message: error?.message, details: error?.details };
  }
}
