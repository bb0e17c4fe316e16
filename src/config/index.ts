export { AppConfig, type ApnsConfig, type JwtKeySource } from './app-config.js';
export { ConfigError, parseEnv } from './config.parser.js';
export { ConfigModule } from './config.module.js';
