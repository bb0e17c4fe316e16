import { IoAdapter } from '@nestjs/platform-socket.io';

/**
 * Nest's Socket.IO adapter, minus the per-socket cost of message bindings it would not
 * use. Every event reaches the gateway through its one `onAny` dispatcher, so Nest has
 * no message handlers to bind; skipping its per-socket disconnect stream (rxjs
 * share/first, about 2 KB held per open socket) keeps idle connections small. A gateway
 * that does declare `@SubscribeMessage` handlers gets Nest's binding unchanged.
 */
export class IoAdapterWithoutIdleBindings extends IoAdapter {
  override bindMessageHandlers(...args: Parameters<IoAdapter['bindMessageHandlers']>): void {
    if (args[1].length === 0) return;
    super.bindMessageHandlers(...args);
  }
}
