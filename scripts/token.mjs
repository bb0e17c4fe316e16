// `npm run token -- <userId> [--ttl 3600] [--service]`: prints an HS256 JWT that the
// service accepts, signed with JWT_SECRET (or the generated dev secret).
import { SignJWT } from 'jose';

import { devSecrets } from './dev-env.mjs';

const args = process.argv.slice(2);
const userId = args.find((arg, index) => !arg.startsWith('--') && !args[index - 1]?.startsWith('--ttl'));
if (!userId) {
  process.stderr.write('usage: npm run token -- <userId> [--ttl seconds] [--service]\n');
  process.exit(2);
}
const ttlIndex = args.indexOf('--ttl');
const ttl = ttlIndex >= 0 ? Number(args[ttlIndex + 1]) : 24 * 3600;
const secret = process.env.JWT_SECRET ?? devSecrets().values.JWT_SECRET;

let jwt = new SignJWT(args.includes('--service') ? { scope: 'service' } : {})
  .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
  .setSubject(userId)
  .setIssuedAt()
  .setExpirationTime(Math.floor(Date.now() / 1000) + ttl);
if (process.env.JWT_ISSUER) jwt = jwt.setIssuer(process.env.JWT_ISSUER);
if (process.env.JWT_AUDIENCE) jwt = jwt.setAudience(process.env.JWT_AUDIENCE.split(',')[0].trim());
process.stdout.write(`${await jwt.sign(new TextEncoder().encode(secret))}\n`);
