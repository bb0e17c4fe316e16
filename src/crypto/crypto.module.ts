import { Global, Module } from '@nestjs/common';

import { ConversationKeysRepository } from './conversation-keys.repository.js';
import { CryptoService } from './crypto.service.js';
import { KeyRotationService } from './key-rotation.service.js';

/**
 * Envelope encryption (CryptoService) and master key rotation (KeyRotationService).
 * Needs AppConfig and PrismaService from their global modules.
 */
@Global()
@Module({
  providers: [CryptoService, ConversationKeysRepository, KeyRotationService],
  exports: [CryptoService, KeyRotationService],
})
export class CryptoModule {}
