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

/** A FIFO async semaphore: at most `size` operations run at once, the others wait their turn in order. */
export class Semaphore {
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(readonly size: number) {
    if (!Number.isInteger(size) || size < 1)
      throw new RangeError(`semaphore size ${size}: a whole number ≥ 1`);
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.size) await new Promise<void>((r) => this.waiting.push(r));
    else this.active++;
    try {
      return await fn();
    } finally {
      // The turn passes straight to the next in line: `active` stays counted for it.
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }
}
