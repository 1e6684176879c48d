/**
 * Wake-ups for long-polling claims. Two listeners on the engine, one for transactions of this
 * process and one for other processes' (the store's PostgreSQL LISTEN/NOTIFY), serve every
 * waiting claim, rather than one subscription per request.
 */
import type { Engine } from '../engine/engine.js';

interface Waiter {
  namespace: string;
  types: Set<string>;
  wake: () => void;
}

/** A registered interest in ready work; `until` resolves on a wake-up, the deadline or close. */
export interface Registration {
  /** Resolves when woken (or already woken since registering), at `deadline`, or on abort. */
  until(deadline: number, signal?: AbortSignal): Promise<void>;
  dispose(): void;
}

export class Wakeups {
  private readonly waiters = new Set<Waiter>();
  private readonly unsubscribe: Array<() => void> = [];
  private closed = false;

  constructor(engine: Engine) {
    // The engine says which types became ready, not in which namespace: a spurious wake-up
    // only costs one empty claim.
    this.unsubscribe.push(
      engine.onReady((types) => {
        for (const w of this.waiters) for (const t of types) if (w.types.has(t)) w.wake();
      }),
    );
    const fromStore = engine.onReadyElsewhere((notice) => {
      for (const w of this.waiters)
        if (notice === null || (notice.namespace === w.namespace && notice.types.some((t) => w.types.has(t))))
          w.wake();
    });
    if (fromStore) this.unsubscribe.push(fromStore);
  }

  get waiting(): number {
    return this.waiters.size;
  }

  /**
   * Registers before the caller tries to claim, so a task made ready between that claim and the
   * wait is not missed: its wake-up is remembered.
   */
  register(namespace: string, types: string[]): Registration {
    let woken = this.closed;
    let resolve: (() => void) | undefined;
    const waiter: Waiter = {
      namespace,
      types: new Set(types),
      wake: () => {
        woken = true;
        resolve?.();
      },
    };
    this.waiters.add(waiter);
    return {
      until: (deadline, signal) => {
        if (woken || signal?.aborted) return Promise.resolve();
        return new Promise<void>((r) => {
          const timer = setTimeout(done, Math.max(0, deadline - Date.now()));
          function done() {
            clearTimeout(timer);
            signal?.removeEventListener('abort', done);
            r();
          }
          resolve = done;
          signal?.addEventListener('abort', done, { once: true });
        });
      },
      dispose: () => {
        this.waiters.delete(waiter);
      },
    };
  }

  /** Wakes every waiting claim (shutdown: they answer empty). */
  close(): void {
    this.closed = true;
    for (const w of this.waiters) w.wake();
    for (const u of this.unsubscribe.splice(0)) u();
  }
}
