/** Listener isolation: a listener that throws (or rejects) never reaches the SDK or other listeners. */

// Listener signatures vary per event; `never[]` parameters accept every listener type.
type AnyListener = (...args: never[]) => unknown;

export class Listeners<Events extends { [E in keyof Events]: AnyListener }> {
  private readonly byEvent = new Map<keyof Events, Set<AnyListener>>();

  constructor(private readonly onListenerError: (event: keyof Events, error: unknown) => void) {}

  on<E extends keyof Events>(event: E, listener: Events[E]): () => void {
    let set = this.byEvent.get(event);
    if (!set) this.byEvent.set(event, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
    };
  }

  has(event: keyof Events): boolean {
    return (this.byEvent.get(event)?.size ?? 0) > 0;
  }

  /**
   * Calls every listener of `event` in registration order. Resolves once each has returned,
   * or settled when it returned a promise; never rejects.
   */
  emit<E extends keyof Events>(event: E, ...args: Parameters<Events[E]>): Promise<void> | undefined {
    const set = this.byEvent.get(event);
    if (!set || set.size === 0) return undefined;
    let pending: Promise<void>[] | undefined;
    for (const listener of [...set]) {
      try {
        const result = (listener as (...a: Parameters<Events[E]>) => unknown)(...args);
        if (isThenable(result)) {
          (pending ??= []).push(
            Promise.resolve(result).then(
              () => undefined,
              (error: unknown) => this.onListenerError(event, error),
            ),
          );
        }
      } catch (error) {
        this.onListenerError(event, error);
      }
    }
    return pending ? Promise.all(pending).then(() => undefined) : undefined;
  }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | undefined)?.then === 'function';
}
