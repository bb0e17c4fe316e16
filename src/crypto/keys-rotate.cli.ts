/**
 * `npm run keys:rotate`: re-wraps every conversation data key under the active master
 * key (ENCRYPTION_ACTIVE_KEY, or the highest version in ENCRYPTION_KEYS). Run it after
 * adding a new master key version; once it reports success, older versions can be
 * removed from ENCRYPTION_KEYS. Interrupting it is safe; run it again to finish.
 * Exits 0 on success, 1 with a message on failure.
 */
import 'reflect-metadata';

import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';

import { ConfigModule } from '../config/config.module.js';
import { parseEnv } from '../config/config.parser.js';
import { PrismaModule } from '../prisma/prisma.module.js';
import { CryptoModule } from './crypto.module.js';
import { KeyRotationService } from './key-rotation.service.js';

/** Just what rotation needs: no HTTP, sockets or Redis. */
@Module({})
class KeysRotateModule {}

async function main(): Promise<number> {
  const config = parseEnv(process.env);
  const app = await NestFactory.createApplicationContext(
    { module: KeysRotateModule, imports: [ConfigModule.forRoot(config), PrismaModule, CryptoModule] },
    { logger: ['log', 'warn', 'error', 'fatal'], abortOnError: false },
  );
  try {
    const { rewrapped, alreadyCurrent } = await app.get(KeyRotationService).rotateAll();
    process.stdout.write(
      `keys:rotate: master key version ${config.encryption.activeVersion} is active; ` +
        `re-wrapped ${rewrapped} conversation key${rewrapped === 1 ? '' : 's'}, ` +
        `${alreadyCurrent} already current\n`,
    );
    return 0;
  } finally {
    await app.close();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    // ConfigError and CryptoError messages are written for operators and hold no secrets.
    const message = (error instanceof Error ? error.message : String(error)).trim().replace(/\n\s*\n+/g, '\n');
    process.stderr.write(`keys:rotate failed: ${message}\n`);
    process.exit(1);
  },
);
