import { Module, type DynamicModule } from '@nestjs/common';

import type { AppConfig } from '../config/app-config.js';
import { DemoPageController } from './demo-page.controller.js';
import { DemoTokenController } from './demo-token.controller.js';
import { DemoTokenService } from './demo-token.service.js';

/**
 * The web chat at /demo (web/demo/, bundled into dist/web/demo by scripts/build-demo.mjs),
 * imported only when DEMO_ENABLED is on. Its token endpoint signs a token for any user
 * name, so it is left out whenever NODE_ENV is production, whatever DEMO_ENABLED says: a
 * production demo page needs a token from the real identity provider, pasted in.
 */
@Module({})
export class DemoModule {
  static forRoot(config: AppConfig): DynamicModule {
    const devTokens = !config.isProduction;
    return {
      module: DemoModule,
      controllers: [DemoPageController, ...(devTokens ? [DemoTokenController] : [])],
      providers: devTokens ? [DemoTokenService] : [],
    };
  }
}
