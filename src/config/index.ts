export { AppConfig, type ApnsConfig, type FcmConfig, type JwtKeySource, type WebPushConfig } from './app-config.js';
export { ConfigError, parseEnv } from './config.parser.js';
export { ConfigModule } from './config.module.js';
