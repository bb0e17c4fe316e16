import { EventEmitter } from 'node:events';

import { describe, expect, it } from 'vitest';

import type { ErrorEventPayload } from '@messaging-service/client/protocol';
import { type RealtimeNamespace, RealtimeService } from './realtime.service.js';

/** A namespace holding some sockets here; what is sent to the others is recorded. */
function namespaceWith(localIds: string[]) {
  const calls: string[] = [];
  const sockets = new Map(
    localIds.map((id) => [
      id,
      {
        emit: (event: string, payload: ErrorEventPayload) => calls.push(`${id} ${event} ${payload.code}`),
        disconnect: (close: boolean) => calls.push(`${id} disconnect ${close}`),
      },
    ]),
  );
  const sent: unknown[][] = [];
  const namespace = Object.assign(new EventEmitter(), {
    sockets,
    serverSideEmit: (...args: unknown[]) => sent.push(args),
  });
  return { namespace: namespace as unknown as RealtimeNamespace, emitter: namespace, calls, sent };
}

const replaced = { code: 'session_replaced', message: 'this device connected again elsewhere' } as ErrorEventPayload;

describe('RealtimeService.replaceSockets', () => {
  it('sends local sockets the error, then disconnects them, and asks the others in one server-side event', () => {
    const { namespace, calls, sent } = namespaceWith(['here']);
    const realtime = new RealtimeService();
    realtime.attach(namespace);
    realtime.replaceSockets(['here', 'there-1', 'there-2'], replaced);
    expect(calls).toEqual(['here error session_replaced', 'here disconnect true']);
    // One publish for the error and the disconnect together: a Redis Cluster may deliver
    // two publishes in either order.
    expect(sent).toEqual([['replace-sockets', ['there-1', 'there-2'], replaced]]);
  });

  it('replaces its own sockets when another instance asks, and ignores ids it does not hold', () => {
    const { namespace, emitter, calls, sent } = namespaceWith(['there-1']);
    new RealtimeService().attach(namespace);
    emitter.emit('replace-sockets', ['there-1', 'gone'], replaced);
    expect(calls).toEqual(['there-1 error session_replaced', 'there-1 disconnect true']);
    expect(sent).toEqual([]);
  });
});
