/**
 * What every engine operation shares: the store, the lease, the listeners, this process's
 * copy of the type settings, and `run`, which wraps an operation in one transaction and tells
 * the listeners what it did. Also the checks several operations make of an attempt.
 */
import type { Store, StoreTx, TaskCore, TypeConfigRow } from '../store/store.js';
import { Batch } from './batch.js';
import { type AttemptRef, DEFAULTS, type EngineOptions } from './defs.js';
import { NotFoundError, StaleAttemptError, ValidationError } from './errors.js';
import type { DynataskEvent, JobState } from './types.js';

export class EngineState {
  readonly leaseMs: number;
  readonly listeners = new Set<(e: DynataskEvent) => void>();
  readonly readyListeners = new Set<(types: Set<string>) => void>();
  readonly cancelListeners = new Set<(taskIds: string[]) => void>();
  readonly jobListeners = new Set<(jobs: Array<{ jobId: string; state: JobState }>) => void>();
  /** This process's copy of the type settings, keyed namespace NUL type (see claimIn). */
  readonly typeConfigs = new Map<string, TypeConfigRow>();
  /** Namespaces seen with concurrency limits, until when on this process's clock (see claimIn). */
  readonly limitedUntil = new Map<string, number>();
  /** Where errors thrown by event listeners go; they never fail the operation that emitted. */
  onListenerError: (e: unknown) => void = (e) => console.error('dynatask: an event listener threw:', e);

  constructor(
    readonly store: Store,
    opts: EngineOptions = {},
  ) {
    this.leaseMs = opts.leaseMs ?? DEFAULTS.leaseMs;
  }

  /**
   * `run`, for an operation that reads (the attempt's row) before it needs the transaction's
   * time: the store may begin the transaction with that read (see Store.transaction).
   */
  runReadingFirst<T>(fn: (tx: StoreTx, b: Batch) => Promise<T>, external?: unknown): Promise<T> {
    return this.run(fn, external, { clockLater: true });
  }

  /**
   * Runs `fn` in one store transaction, then tells listeners what it did. In the caller's own
   * transaction (`external`), nothing is told in-process: it has not committed yet, and may
   * never; other processes and this one's workers learn of new work from the store's
   * notifications, which PostgreSQL delivers on commit only.
   */
  async run<T>(
    fn: (tx: StoreTx, b: Batch) => Promise<T>,
    external?: unknown,
    opts?: { clockLater?: boolean },
  ): Promise<T> {
    let batch!: Batch;
    const body = async (tx: StoreTx) => {
      batch = new Batch(() => tx.now(), this.listeners.size > 0);
      const r = await fn(tx, batch);
      for (const [ns, deltas] of batch.slotDeltas) await tx.adjustSlots(ns, deltas);
      // Other processes' workers learn of new work from the store, on commit only.
      if (tx.notifyReady)
        for (const [ns, types] of batch.readyByNamespace) await tx.notifyReady(ns, [...types]);
      return r;
    };
    if (external !== undefined) {
      if (!this.store.transactionWith)
        throw new ValidationError(
          `options.transaction: the ${this.store.kind} store cannot join a caller's transaction; use the PostgreSQL store`,
        );
      return this.store.transactionWith(external, body);
    }
    const out = await this.store.transaction(body, opts);
    this.tell(batch);
    return out;
  }

  /** Tells the listeners what a committed operation did. */
  tell(batch: Batch): void {
    // The transaction has committed: a listener's error must not turn it into a failure.
    const call = <T>(listeners: Set<(x: T) => void>, x: T) => {
      for (const l of listeners) {
        try {
          l(x);
        } catch (e) {
          this.onListenerError(e);
        }
      }
    };
    for (const e of batch.events) call(this.listeners, e);
    if (batch.readyTypes.size > 0) call(this.readyListeners, batch.readyTypes);
    if (batch.cancelledRunning.length > 0) call(this.cancelListeners, batch.cancelledRunning);
    if (batch.jobsSettled.length > 0) call(this.jobListeners, batch.jobsSettled);
  }

  typeConfig(namespace: string, type: string): TypeConfigRow | undefined {
    return this.typeConfigs.get(`${namespace}\0${type}`);
  }
}

/** The task `ref`'s attempt holds, or why not (NotFoundError, StaleAttemptError). */
export async function getRunning(tx: StoreTx, ref: AttemptRef): Promise<TaskCore> {
  tx.assertNotHeldByCaller?.(ref.id); // a ctx call while the handler's own transaction holds the task
  const [row] = await tx.getTasks([ref.id]);
  return heldBy(row, ref);
}

/**
 * getRunning, and in the same round trip (StoreTx.together) another read about the task that
 * does not need its row (wasted if the attempt no longer holds it).
 */
export async function getRunningWith<T>(
  tx: StoreTx,
  ref: AttemptRef,
  read: () => Promise<T>,
): Promise<[TaskCore, T]> {
  tx.assertNotHeldByCaller?.(ref.id);
  const [rows, other] = await together<[TaskCore[], T]>(tx, [() => tx.getTasks([ref.id]), read]);
  return [heldBy(rows[0], ref), other];
}

/** Operations of `tx` as if awaited one after the other; in one round trip where the store can. */
export async function together<T extends unknown[]>(
  tx: StoreTx,
  ops: { [K in keyof T]: () => Promise<T[K]> },
): Promise<T> {
  if (tx.together) return tx.together<T>(ops);
  const out: unknown[] = [];
  for (const op of ops) out.push(await op());
  return out as T;
}

function heldBy(row: TaskCore | undefined, ref: AttemptRef): TaskCore {
  if (!row) throw new NotFoundError(`task ${ref.id} not found`);
  if (row.state !== 'running' || row.run_token !== ref.token)
    throw new StaleAttemptError(
      `task ${ref.id} is no longer held by attempt token ${ref.token} (state ${row.state}, token ${row.run_token})`,
    );
  return row;
}

/** Loads the tasks that are still held by the given attempts; the others are stale. */
export async function heldRows(tx: StoreTx, refs: AttemptRef[]): Promise<Map<string, TaskCore>> {
  const rows = await tx.getTasks(refs.map((r) => r.id));
  const byId = new Map(rows.map((r) => [r.id, r]));
  const held = new Map<string, TaskCore>();
  for (const ref of refs) {
    const r = byId.get(ref.id);
    if (r && r.state === 'running' && r.run_token === ref.token) held.set(r.id, r);
  }
  return held;
}

/**
 * Of attempts that no longer hold their task, those whose outcome was recorded: the task
 * still carries their token (no later attempt claimed it) and `done` says it is theirs.
 */
export async function recorded(
  tx: StoreTx,
  refs: AttemptRef[],
  done: (r: TaskCore) => boolean,
): Promise<Set<string>> {
  if (!refs.length) return new Set();
  const token = new Map(refs.map((r) => [r.id, r.token]));
  const rows = await tx.getTasks([...token.keys()]);
  return new Set(
    rows.filter((r) => r.run_token === token.get(r.id) && r.state !== 'running' && done(r)).map((r) => r.id),
  );
}

/** A lease's end: `leaseMs` from now, but never past the task's timeout and its grace. */
export function leaseUntil(
  now: number,
  startedAt: number,
  timeoutMs: number | null,
  leaseMs: number,
): number {
  const lease = now + leaseMs;
  if (timeoutMs === null) return lease;
  return Math.min(lease, startedAt + timeoutMs + DEFAULTS.timeoutGraceMs);
}

/** The caller's transaction named by a batch's options: one for all of them, or none. */
export function sharedTransaction(given: unknown[], what: string): unknown {
  const set = new Set(given.filter((t) => t !== undefined));
  if (set.size > 1 || (set.size === 1 && given.includes(undefined)))
    throw new ValidationError(
      `${what}: every item of one call must name the same options.transaction, or none`,
    );
  return set.values().next().value;
}
