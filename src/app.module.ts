import { Module, type DynamicModule } from '@nestjs/common';

import { AuthModule } from './auth/auth.module.js';
import { AppConfig } from './config/app-config.js';
import { ConfigModule } from './config/config.module.js';
import { ConversationsModule } from './conversations/conversations.module.js';
import { CryptoModule } from './crypto/crypto.module.js';
import { DemoModule } from './demo/demo.module.js';
import { DevicesModule } from './devices/devices.module.js';
import { GatewayModule } from './gateway/gateway.module.js';
import { HealthModule } from './health/health.module.js';
import { LifecycleModule } from './lifecycle/lifecycle.module.js';
import { LoggingModule } from './logging/logging.module.js';
import { MessagesModule } from './messages/messages.module.js';
import { MetricsModule } from './metrics/metrics.module.js';
import { PrismaModule } from './prisma/prisma.module.js';
import { PushModule } from './push/push.module.js';
import { RealtimeModule } from './realtime/realtime.module.js';
import { RedisModule } from './redis/redis.module.js';

/** The whole service, built from one validated configuration. */
@Module({})
export class AppModule {
  static forRoot(config: AppConfig): DynamicModule {
    return {
      module: AppModule,
      imports: [
        ConfigModule.forRoot(config),
        LoggingModule,
        PrismaModule,
        RedisModule,
        CryptoModule,
        AuthModule,
        MetricsModule,
        HealthModule,
        RealtimeModule,
        LifecycleModule,
        ConversationsModule,
        MessagesModule,
        PushModule,
        DevicesModule,
        GatewayModule,
        // The web chat, outside production by default (DEMO_ENABLED).
        ...(config.demoEnabled ? [DemoModule.forRoot(config)] : []),
      ],
    };
  }
}
