import { Global, Module } from '@nestjs/common';

import { TokenVerifier } from './token-verifier.service.js';

@Global()
@Module({ providers: [TokenVerifier], exports: [TokenVerifier] })
export class AuthModule {}
