// TLS for the local push stand-ins (APNs, FCM, Web Push): a self-signed certificate for
// localhost and 127.0.0.1, made at test time with the openssl CLI. The service under test
// trusts it through PushOptions.ca (in process) or NODE_EXTRA_CA_CERTS (a spawned process).
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** A self-signed certificate for localhost and 127.0.0.1, with its key (PEM). */
export async function selfSignedCertificate(): Promise<{ key: string; cert: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'push-tls-'));
  try {
    await run(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
      ],
      { timeout: 15_000 },
    ).catch((error: unknown) => {
      throw new Error(`the push stand-ins need the openssl CLI to make their certificate: ${String(error)}`);
    });
    return { key: readFileSync(join(dir, 'key.pem'), 'utf8'), cert: readFileSync(join(dir, 'cert.pem'), 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
