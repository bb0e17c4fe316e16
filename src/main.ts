import 'reflect-metadata';

import { Logger } from '@nestjs/common';

import { createApp } from './bootstrap.js';
import { ConfigError, parseEnv } from './config/config.parser.js';

async function main(): Promise<void> {
  let config;
  try {
    config = parseEnv(process.env);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`messaging-service: ${error.message}\n`);
      process.exit(1);
    }
    throw error;
  }

  // Last line of defence: a stray rejection is logged, never a crash of every client's socket.
  process.on('unhandledRejection', (reason) => {
    new Logger('Process').error(
      `unhandled rejection: ${reason instanceof Error ? (reason.stack ?? reason.message) : String(reason)}`,
    );
  });

  const app = await createApp(config);
  await app.listen(config.port, config.host);
  const logger = new Logger('Main');
  logger.log(`listening on http://${config.host}:${config.port} (${config.nodeEnv})`);

  // SIGTERM/SIGINT: app.close() drains (ShutdownService: refuse new work, answer what is
  // in flight, disconnect every socket), closes the servers, then PostgreSQL and Redis;
  // exit 0. A stuck close must not keep the process alive, so a timer forces the exit.
  let stopping = false;
  const shutdown = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    logger.log(`${signal}: shutting down`);
    const timer = setTimeout(() => {
      logger.error(`shutdown took over ${config.shutdownGraceMs} ms; exiting`);
      process.exit(1);
    }, config.shutdownGraceMs);
    timer.unref();
    app
      .close()
      .then(() => process.exit(0))
      .catch((error: unknown) => {
        logger.error(`shutdown failed: ${String(error)}`);
        process.exit(1);
      });
  };
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
}

main().catch((error: unknown) => {
  process.stderr.write(
    `messaging-service: failed to start: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
  process.exit(1);
});
