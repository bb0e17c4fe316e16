// Boots the service against any mix of the local push stand-ins (APNs, FCM, Web Push),
// each provider configured from its stand-in's env and the stand-ins' certificates
// trusted through PushOptions.ca, with short test timings.
import { parseEnv } from '../../src/config/config.parser.js';
import { setPushOptions, type PushOptions } from '../../src/push/push.options.js';
import type { FakeApns } from './apns-server.js';
import { serveTestApp, testEnv, testEnvironment, type TestApp } from './app.js';
import type { FakeFcm } from './fcm-server.js';
import type { FakeWebPush } from './web-push-server.js';

export interface PushStandIns {
  apns?: FakeApns;
  fcm?: FakeFcm;
  webPush?: FakeWebPush;
}

export interface PushTestApp extends TestApp {
  /** Stops the app (app.close()) but keeps its database, for a restart. Idempotent. */
  stop(): Promise<void>;
}

/** Short timings for tests; `ca` trusts the stand-ins' certificates. */
function testPushOptions(standIns: PushStandIns, options: Partial<PushOptions> = {}): Partial<PushOptions> {
  const ca = [standIns.apns, standIns.fcm, standIns.webPush].flatMap((standIn) => (standIn ? [standIn.cert] : []));
  return { graceMs: 400, attempts: 4, backoffMs: 100, requestTimeoutMs: 2_000, ca, ...options };
}

/** The provider variables of `standIns`, merged. */
export function pushEnv(standIns: PushStandIns): Record<string, string> {
  return { ...standIns.apns?.env, ...standIns.fcm?.env, ...standIns.webPush?.env };
}

/**
 * Boots the service in this process against `standIns`, as startTestApp does, with push
 * options attached (and `overrides` in its environment). `reuse` runs it on the database
 * and Redis index of an earlier one (a restart); closing it then leaves that database to
 * its owner.
 */
export async function startAppWithPushServices(
  standIns: PushStandIns,
  options: Partial<PushOptions> = {},
  reuse?: Pick<TestApp, 'databaseUrl' | 'redisUrl'>,
  overrides: Record<string, string> = {},
): Promise<PushTestApp> {
  const providers = { ...pushEnv(standIns), ...overrides };
  const { env, dropDatabase } = reuse
    ? { env: testEnv(reuse.databaseUrl, reuse.redisUrl, providers), dropDatabase: () => Promise.resolve() }
    : await testEnvironment(providers);
  return serveTestApp(setPushOptions(parseEnv(env), testPushOptions(standIns, options)), dropDatabase);
}
