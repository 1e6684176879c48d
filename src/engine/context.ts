/**
 * What a handler sees: its task, an AbortSignal, and the calls that spawn children, wait
 * for them durably, memoise steps and report progress.
 *
 * The execution model: a handler that waits for unsettled children is suspended (its
 * worker slot is freed) and later runs again from the top. Spawns are idempotent (by key,
 * or by the order of spawn calls), so the re-run gets the same children back; work that
 * must not repeat goes in `ctx.step`.
 */
import type { SpawnSpec } from './defs.js';
import { ChildTaskFailedError, SuspendSignal, ValidationError } from './errors.js';
import { MAX_STEP_NAME_LENGTH } from './limits.js';
import type { WorkerPort } from './port.js';
import { checkText } from './rows.js';
import type { Outcome, SpawnOptions, TaskHandle } from './types.js';

/** Maps task types to their payload and result types, for a typed API end to end. */
export type TaskMap = Record<string, { payload: unknown; result: unknown }>;

/** The task a handler runs. */
export interface TaskMeta<P = unknown> {
  id: string;
  jobId: string;
  parentId: string | null;
  type: string;
  /** 1 for the first attempt; resumes after a wait keep the number. */
  attempt: number;
  payload: P;
}

/** A child to spawn, for `spawnMany`. */
export type ChildSpec<M extends TaskMap, K extends keyof M & string = keyof M & string> = {
  [T in K]: { type: T; payload: M[T]['payload']; options?: SpawnOptions };
}[K];

export class TaskContext<M extends TaskMap = TaskMap, P = unknown> {
  /** The next implicit key number never handed out in this run. */
  private spawnSeq = 0;
  /** Implicit key numbers given back by spawns that wrote nothing: handed out first, lowest first. */
  private freeSeqs: number[] = [];
  /**
   * Spawns made in a caller's transaction, which may yet roll back: their numbers are given
   * back if their children turn out not to exist (see settleTentative).
   */
  private tentative: Array<{ seqs: number[]; keys: string[]; transaction: unknown }> = [];
  /** Set once the handler suspended: whatever it does afterwards is ignored. */
  suspended = false;

  constructor(
    private readonly port: WorkerPort,
    readonly task: TaskMeta<P>,
    private readonly token: number,
    private readonly abort: { readonly signal: AbortSignal },
  ) {}

  /** Fires when the task is cancelled, times out, or its lease is lost. */
  get signal(): AbortSignal {
    return this.abort.signal;
  }

  private get ref() {
    return { id: this.task.id, token: this.token };
  }

  /** Spawns one child task and returns its handle; idempotent across re-runs. */
  async spawn<K extends keyof M & string>(
    type: K,
    payload: M[K]['payload'],
    options?: SpawnOptions,
  ): Promise<TaskHandle> {
    const [h] = await this.spawnMany([{ type, payload, ...(options ? { options } : {}) } as ChildSpec<M>]);
    return h!;
  }

  /**
   * Spawns many children in one transaction.
   *
   * Children without an explicit key get `#0`, `#1`, ... in the order of the spawns that
   * succeed in this run of the handler, so that a re-run after a wait, which makes the same
   * calls, gets the same children back: a spawn that fails, or whose caller's transaction
   * rolls back, gives its numbers back to the next spawn. Numbers are taken when the call is
   * made (after a spawn in a caller's transaction, once it is known whether that one was
   * kept), so concurrent spawns keep the order of their calls.
   */
  async spawnMany(children: Array<ChildSpec<M>>): Promise<TaskHandle[]> {
    this.throwIfSuspended();
    children.forEach((c, i) => {
      const k = c.options?.key;
      if (k !== undefined && (typeof k !== 'string' || k === '' || k.startsWith('#')))
        throw new ValidationError(
          `children[${i}].options.key must be a non-empty string not starting with '#'`,
        );
    });
    const transaction = children.find((c) => c.options?.transaction !== undefined)?.options?.transaction;
    if (this.tentative.length) await this.settleTentative(transaction);
    const seqs: number[] = [];
    const keys = children.map((c) => {
      if (c.options?.key !== undefined) return c.options.key;
      const n = this.freeSeqs.length ? this.freeSeqs.shift()! : this.spawnSeq++;
      seqs.push(n);
      return `#${n}`;
    });
    let handles: TaskHandle[];
    try {
      handles = await this.port.spawn(this.ref, children as SpawnSpec[], keys);
    } catch (e) {
      this.giveBack(seqs);
      throw e;
    }
    if (transaction !== undefined && seqs.length)
      this.tentative.push({ seqs, keys: seqs.map((n) => `#${n}`), transaction });
    return handles;
  }

  private giveBack(seqs: number[]) {
    if (!seqs.length) return;
    this.freeSeqs.push(...seqs);
    this.freeSeqs.sort((a, b) => a - b);
  }

  /**
   * Spawns made in a caller's transaction: those whose children exist (committed) keep their
   * numbers; those whose children are not there either (rolled back) give them back. Ones
   * seen only inside `transaction`, the transaction of the spawn about to be made, are still
   * open and stay tentative. A port that cannot look (remote: no caller's transactions) has
   * none of them.
   */
  private async settleTentative(transaction: unknown) {
    const spawnedKeys = this.port.spawnedKeys?.bind(this.port);
    if (!spawnedKeys) return;
    // Taken out at once: a concurrent spawn must not give the same numbers back a second time.
    const groups = this.tentative.splice(0);
    let committed: Set<string>;
    let inside = new Set<string>();
    try {
      committed = new Set(
        await spawnedKeys(
          this.ref,
          groups.flatMap((t) => t.keys),
        ),
      );
      const unseen = groups.filter((t) => !t.keys.every((k) => committed.has(k))).flatMap((t) => t.keys);
      if (unseen.length && transaction !== undefined)
        inside = new Set(await spawnedKeys(this.ref, unseen, transaction));
    } catch (e) {
      this.tentative.push(...groups); // not known yet: ask again at the next spawn
      throw e;
    }
    for (const t of groups) {
      if (t.keys.every((k) => committed.has(k))) continue;
      if (t.keys.some((k) => inside.has(k))) this.tentative.push(t);
      else this.giveBack(t.seqs);
    }
  }

  /**
   * Waits durably for children (all of this task's children when `handles` is omitted) and
   * returns every outcome, like Promise.allSettled. If some are unsettled, the handler is
   * suspended here and runs again from the top once they have all settled.
   */
  async waitAllSettled(handles?: TaskHandle[]): Promise<Outcome[]> {
    this.throwIfSuspended();
    const r = await this.port.wait(
      this.ref,
      handles ? { all: false, ids: handles.map((h) => h.id) } : { all: true },
    );
    if (r.suspended) {
      this.suspended = true;
      throw new SuspendSignal();
    }
    return r.outcomes;
  }

  /**
   * Waits durably like `waitAllSettled`, then returns the results in order, or throws
   * ChildTaskFailedError if any awaited child did not succeed (like Promise.all).
   */
  async waitAll<R = unknown>(handles?: TaskHandle[]): Promise<R[]> {
    const outcomes = await this.waitAllSettled(handles);
    const failures = outcomes.filter((o) => o.state !== 'succeeded');
    if (failures.length) throw new ChildTaskFailedError(failures);
    return outcomes.map((o) => (o as { result: R }).result);
  }

  /**
   * Runs `fn` once per task, whatever the number of re-runs: its result is stored and
   * returned again when the handler re-runs after a wait or a retry.
   */
  async step<T>(name: string, fn: () => Promise<T> | T): Promise<T> {
    this.throwIfSuspended();
    // The same bound in-process as on the wire, checked before `fn` runs.
    checkText(name ?? null, 'step name', MAX_STEP_NAME_LENGTH);
    const got = await this.port.getStep({ ...this.ref, jobId: this.task.jobId }, name);
    if (got.found) return got.value as T;
    const value = await fn();
    await this.port.putStep(this.ref, name, value);
    return value;
  }

  /** Reports progress (any JSON value); subscribers see it as a `progress` event. */
  async progress(value: unknown): Promise<void> {
    this.throwIfSuspended();
    await this.port.progress(this.ref, value);
  }

  private throwIfSuspended() {
    if (this.suspended) throw new SuspendSignal();
  }
}
