import { describe, expect, it } from 'vitest';

import { Listeners } from './listeners.js';

interface TestEvents {
  ping: (value: number) => unknown;
  other: () => void;
}

function setup() {
  const reported: { event: keyof TestEvents; error: unknown }[] = [];
  const listeners = new Listeners<TestEvents>((event, error) => reported.push({ event, error }));
  return { listeners, reported };
}

function deferred<T = void>() {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

describe('Listeners', () => {
  it('calls every listener of an event in registration order with the arguments', () => {
    const { listeners } = setup();
    const calls: string[] = [];
    listeners.on('ping', (value) => calls.push(`a${value}`));
    listeners.on('ping', (value) => calls.push(`b${value}`));
    listeners.on('other', () => calls.push('other'));

    void listeners.emit('ping', 7);

    expect(calls).toEqual(['a7', 'b7']);
  });

  it('keeps calling the other listeners when one throws, and reports the error with its event', () => {
    const { listeners, reported } = setup();
    const calls: string[] = [];
    const boom = new Error('boom');
    listeners.on('ping', () => calls.push('first'));
    listeners.on('ping', () => {
      throw boom;
    });
    listeners.on('ping', () => calls.push('third'));

    expect(() => listeners.emit('ping', 1)).not.toThrow();

    expect(calls).toEqual(['first', 'third']);
    expect(reported).toEqual([{ event: 'ping', error: boom }]);
  });

  it('reports the rejection of an async listener, and the emit promise still resolves', async () => {
    const { listeners, reported } = setup();
    const failure = new Error('async boom');
    listeners.on('ping', () => Promise.reject(failure));
    listeners.on('ping', () => Promise.resolve('fine'));

    await expect(listeners.emit('ping', 1)).resolves.toBeUndefined();

    expect(reported).toEqual([{ event: 'ping', error: failure }]);
  });

  it('resolves emit only once every async listener settled', async () => {
    const { listeners } = setup();
    const slow = deferred();
    const slower = deferred();
    listeners.on('ping', () => slow.promise);
    listeners.on('ping', () => slower.promise);
    listeners.on('ping', () => undefined);
    let done = false;

    const emitted = listeners.emit('ping', 1);
    expect(emitted).toBeInstanceOf(Promise);
    void emitted!.then(() => (done = true));

    slow.resolve();
    await Promise.resolve();
    await Promise.resolve();
    expect(done).toBe(false);
    slower.reject(new Error('late failure'));
    await emitted;
    expect(done).toBe(true);
  });

  it('returns undefined when no listener returned a promise, or none is registered', () => {
    const { listeners } = setup();
    expect(listeners.emit('ping', 1)).toBeUndefined();
    listeners.on('ping', () => 1);
    expect(listeners.emit('ping', 1)).toBeUndefined();
  });

  it('stops calling a listener once unsubscribed, and has() follows', () => {
    const { listeners } = setup();
    const calls: number[] = [];
    const off = listeners.on('ping', (value) => calls.push(value));
    expect(listeners.has('ping')).toBe(true);
    void listeners.emit('ping', 1);

    off();
    void listeners.emit('ping', 2);

    expect(calls).toEqual([1]);
    expect(listeners.has('ping')).toBe(false);
    // Unsubscribing twice is harmless.
    expect(() => off()).not.toThrow();
  });

  it('lets a listener unsubscribe itself during an emit without skipping the next one', () => {
    const { listeners } = setup();
    const calls: string[] = [];
    const off = listeners.on('ping', () => {
      calls.push('once');
      off();
    });
    listeners.on('ping', () => calls.push('always'));

    void listeners.emit('ping', 1);
    void listeners.emit('ping', 2);

    expect(calls).toEqual(['once', 'always', 'always']);
  });
});
