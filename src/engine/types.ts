/**
 * Public types of dynatask: task and job states, spawn options, outcomes and events.
 * The state machine is drawn in docs/state-machine.md; the states themselves live in
 * src/core/states.ts, below both the engine and the stores.
 */
import type { JobState, TaskState } from '../core/states.js';

export { isSettled, type JobState, SETTLED_STATES, TASK_STATES, type TaskState } from '../core/states.js';

/** JSON-serialisable values: payloads, results and step values are stored as JSON. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A task error as stored and returned: always plain data, never an Error instance. */
export interface TaskError {
  name: string;
  message: string;
  stack?: string;
  /** False for errors that must not be retried (thrown as NonRetryableError). */
  retryable?: boolean;
  /** Set when a task failed because of a child: the child that failed first. */
  childTaskId?: string;
}

/** Retry policy; any field left out falls back to the type's policy, then to the defaults. */
export interface RetryPolicy {
  /** Total attempts including the first; 1 means no retry. Default 3. */
  maxAttempts?: number;
  /** Base delay of the exponential backoff, in ms. Default 1000. */
  backoffMs?: number;
  /** Cap on one backoff delay, in ms. Default 300000 (5 minutes). */
  maxBackoffMs?: number;
}

/** Options shared by submit and spawn. */
export interface TaskOptions extends RetryPolicy {
  /** Higher runs first among ready tasks. Default 0. */
  priority?: number;
  /** Do not run before this time (Date or epoch ms). */
  runAt?: Date | number;
  /** Do not run before this many ms from now. */
  delayMs?: number;
  /** Per-attempt timeout in ms; the handler's AbortSignal fires and the attempt fails. */
  timeoutMs?: number;
  /** At most `limit` running tasks with this key at once, across all workers. */
  concurrency?: { key: string; limit: number };
}

/** Options of a spawned child. */
export interface SpawnOptions extends TaskOptions {
  /**
   * Idempotency key among the parent's children. Defaults to the order of the spawn
   * calls in this handler run, so a handler that re-runs spawns the same children.
   */
  key?: string;
  /** Unique within the job: spawning a second task with the same dedup key returns the first. */
  dedupKey?: string;
  /** Run only after these tasks (ids, or spawn keys of siblings) have succeeded. */
  after?: Array<string | TaskHandle>;
  /** With `after`: run even if a dependency failed or was cancelled. */
  runRegardless?: boolean;
  /** A permanent failure of this child does not fail its parent. */
  ignoreFailure?: boolean;
  /**
   * A PostgreSQL client inside the caller's own transaction: the children are spawned in it
   * and exist if and only if it commits (see SubmitOptions.transaction).
   */
  transaction?: unknown;
}

/** Options of a job's submission. */
export interface SubmitOptions extends TaskOptions {
  namespace?: string;
  /**
   * The job's id, a UUID the caller chooses (v7 keeps ids in time order). Submitting again
   * with an id that exists returns that job instead of creating one: safe to retry.
   */
  jobId?: string;
  /**
   * A PostgreSQL client (`pg.Client` or `pg.PoolClient`) inside a transaction the caller
   * began, on the same database: the job is written in that transaction, so it exists if
   * and only if the caller commits. Workers are woken on commit. Events of the submission
   * are not delivered to in-process subscribers.
   */
  transaction?: unknown;
}

/** A reference to a spawned task. */
export interface TaskHandle {
  id: string;
  type: string;
  /** The spawn key the task was created under (explicit or `#n`). */
  key: string;
  /** False when an existing task was returned (re-run or dedup key) instead of a new one. */
  created: boolean;
  /** The parent of the task; differs from the caller when a dedup key matched another parent's child. */
  parentId: string | null;
}

/** The outcome of one awaited child, as `waitAllSettled` returns it. */
export type Outcome<R = unknown> =
  | { taskId: string; state: 'succeeded'; result: R }
  | { taskId: string; state: 'failed' | 'cancelled' | 'skipped'; error: TaskError };

/** A recorded failed attempt. The current/successful attempt's times are on the task itself. */
export interface AttemptRecord {
  attempt: number;
  startedAt: number;
  finishedAt: number;
  error: TaskError;
}

/** A task as queries return it. Times are epoch ms. */
export interface TaskInfo {
  id: string;
  jobId: string;
  parentId: string | null;
  type: string;
  key: string | null;
  dedupKey: string | null;
  state: TaskState;
  payload: unknown;
  result: unknown;
  error: TaskError | null;
  progress: unknown;
  attempt: number;
  maxAttempts: number | null;
  priority: number;
  runAt: number;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  settledAt: number | null;
  openChildren: number;
  /**
   * While the task is `running`: the worker that holds it (its id, `host:pid:uuid` for
   * dynatask's workers) and when its lease expires unless renewed. Null otherwise.
   */
  workerId: string | null;
  leaseExpiresAt: number | null;
  /** Present on `getTask`: every failed attempt with its error and timing. */
  attempts?: AttemptRecord[];
}

/** A job with its task counts. */
export interface JobInfo {
  id: string;
  namespace: string;
  type: string;
  rootTaskId: string;
  state: JobState;
  result: unknown;
  error: TaskError | null;
  createdAt: number;
  settledAt: number | null;
  /** Number of tasks in each state (states with none are 0). */
  counts: Record<TaskState, number>;
  total: number;
}

/** Events delivered in commit order to in-process subscribers. */
export type DynataskEvent =
  | { kind: 'task'; jobId: string; taskId: string; type: string; state: TaskState; at: number }
  | { kind: 'progress'; jobId: string; taskId: string; type: string; progress: unknown; at: number }
  | { kind: 'job'; jobId: string; state: JobState; at: number };
