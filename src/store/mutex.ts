/** A FIFO async mutex: a store runs its transactions one at a time (see each store for why). */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn, fn);
    // The chain must not reject, or every later caller would see this failure.
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}
