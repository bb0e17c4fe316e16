import { Module } from '@nestjs/common';

import { MessageCodec } from './message.codec.js';
import { MessageStoreRepository } from './message-store.repository.js';
import { MessageStore } from './message-store.service.js';

/**
 * Storing and opening messages: below messages (send, history), delivery and push,
 * which all go through MessageStore. Sealing needs CryptoModule (global).
 */
@Module({
  providers: [MessageStore, MessageStoreRepository, MessageCodec],
  exports: [MessageStore],
})
export class MessageStoreModule {}
