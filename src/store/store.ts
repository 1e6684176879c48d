/**
 * The storage seam. The engine (src/engine) decides every state transition; a store only
 * reads and writes rows, in batches, inside one transaction per engine operation.
 * Every store must pass the conformance suite in test/conformance.
 */
import type { JobState, TaskState } from '../core/states.js';

/** A task row, as the engine reads and writes it. JSON columns hold serialised text. */
export interface TaskRow {
  id: string;
  job_id: string;
  namespace: string;
  parent_id: string | null;
  spawn_key: string | null;
  dedup_key: string | null;
  type: string;
  payload: string | null;
  state: TaskState;
  priority: number;
  run_at: number;
  /** Current attempt number (1-based once claimed); resumes after a wait do not add one. */
  attempt: number;
  /** Attempts used when an operator last retried the task: its budget counts from here. */
  attempt_base: number;
  max_attempts: number | null;
  backoff_ms: number | null;
  max_backoff_ms: number | null;
  timeout_ms: number | null;
  /** Bumped on every claim; completions, heartbeats and spawns must present it (fencing). */
  run_token: number;
  lease_expires_at: number | null;
  concurrency_key: string | null;
  /** Bit 1: holds a slot of its type's limit; bit 2: holds a slot of its concurrency key. */
  slots_held: number;
  /** Children not yet settled. */
  open_children: number;
  /** 0: not waiting, 1: waiting for all children, 2: waiting for the children marked `awaited`. */
  wait_mode: number;
  /** In wait mode 2: awaited children not yet settled. */
  wait_remaining: number;
  /** 1 when the parent waits on this child in wait mode 2. */
  awaited: number;
  /** Failed children whose failure this task has not observed. */
  unobserved_failures: number;
  /** 1 once the parent has seen this (failed) task's outcome. */
  observed: number;
  ignore_failure: number;
  /** Dependencies (`after`) not yet settled. */
  deps_remaining: number;
  run_regardless: number;
  /** 1 once the handler has returned successfully (so a settle is pending on children only). */
  handler_done: number;
  result: string | null;
  error: string | null;
  progress: string | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  settled_at: number | null;
  /**
   * The latest `settled_at` among the task's children (null before the first settles): the
   * task never settles before it, whatever order overlapping transactions commit in.
   */
  children_settled_at: number | null;
  /** The worker that claimed it last, as the worker names itself; null if none said. */
  worker_id: string | null;
}

/** A task row without its JSON texts (payload, result, error, progress): what transitions read. */
export type TaskCore = Omit<TaskRow, 'payload' | 'result' | 'error' | 'progress'>;

/** What the settle cascade needs of a task. */
export type SettleRow = Pick<
  TaskCore,
  | 'id'
  | 'job_id'
  | 'namespace'
  | 'parent_id'
  | 'type'
  | 'state'
  | 'awaited'
  | 'ignore_failure'
  | 'observed'
  | 'children_settled_at'
>;

/** A task returned by a guarded completion, with the counters its settling needs. */
export type CompletedRow = SettleRow &
  Pick<TaskCore, 'slots_held' | 'concurrency_key' | 'open_children' | 'unobserved_failures'>;

/** A child's outcome, for durable waits. */
export type OutcomeRow = Pick<
  TaskRow,
  'id' | 'type' | 'parent_id' | 'spawn_key' | 'state' | 'result' | 'error' | 'observed' | 'ignore_failure'
>;

/** A task found by spawn key or dedup key. */
export type KeyedRow = Pick<
  TaskRow,
  'id' | 'job_id' | 'type' | 'parent_id' | 'spawn_key' | 'dedup_key' | 'state'
>;

/** What a worker needs of a claimed task. */
export type ClaimRow = Pick<
  TaskRow,
  | 'id'
  | 'job_id'
  | 'namespace'
  | 'parent_id'
  | 'type'
  | 'payload'
  | 'state'
  | 'priority'
  | 'run_at'
  | 'attempt'
  | 'run_token'
  | 'timeout_ms'
  | 'concurrency_key'
  | 'slots_held'
  | 'started_at'
  | 'lease_expires_at'
>;

export interface JobRow {
  id: string;
  namespace: string;
  type: string;
  root_task_id: string;
  state: JobState;
  created_at: number;
  settled_at: number | null;
}

export interface DepRow {
  job_id: string;
  task_id: string;
  depends_on: string;
}

export interface AttemptRow {
  job_id: string;
  task_id: string;
  attempt: number;
  started_at: number;
  finished_at: number;
  error: string;
}

/** Per-type settings shared by every process: retry policy, timeout and concurrency limit. */
export interface TypeConfigRow {
  namespace: string;
  type: string;
  max_attempts: number | null;
  backoff_ms: number | null;
  max_backoff_ms: number | null;
  timeout_ms: number | null;
  concurrency: number | null;
}

/** A concurrency slot: `running` tasks currently hold it, at most `max`. */
export interface SlotRow {
  namespace: string;
  key: string;
  max: number;
  running: number;
}

/** A patch of one task: the id and the columns to set. */
export type TaskPatch = { id: string } & Partial<Omit<TaskRow, 'id'>>;

export interface ClaimQuery {
  namespace: string;
  type: string;
  now: number;
  limit: number;
  /** Concurrency keys that are full: tasks carrying them are not candidates. */
  excludeKeys: string[];
  /** False when the namespace has no key slots: candidates need not carry their key. */
  withKeys: boolean;
}

/** A queued task considered by a claim. */
export type ClaimCandidate = Pick<TaskRow, 'id' | 'type' | 'priority' | 'run_at' | 'concurrency_key'>;

/** Claims chosen tasks in one statement: running, token bumped, leased. */
export interface ClaimReadyQuery {
  namespace: string;
  types: string[];
  now: number;
  limit: number;
  leaseMs: number;
  graceMs: number;
  typeTimeouts: Record<string, number>;
  /** The claiming worker, recorded on each task it claims. */
  workerId: string | null;
}

export interface ClaimByIdsQuery {
  ids: string[];
  now: number;
  leaseMs: number;
  /** Grace after a timeout before the lease expires. */
  graceMs: number;
  /** Default timeout per type (a task's own timeout wins). */
  typeTimeouts: Record<string, number>;
  /** Slot bits held per task id (absent: 0). */
  slotsHeld: Record<string, number>;
  /** The claiming worker, recorded on each task it claims. */
  workerId: string | null;
}

export interface ListJobsQuery {
  namespace?: string;
  state?: JobState;
  type?: string;
  createdAfter?: number;
  createdBefore?: number;
  /** Page cursor: the last job id of the previous page (jobs are listed newest first). */
  before?: string;
  limit: number;
}

/**
 * Operations that run inside one transaction. The engine reads rows, decides, then writes
 * them, so a store shared by several processes must make each operation's result hold until
 * commit, as if transactions ran one after another: rows read to be changed are locked
 * (getTasks, expiredLeases, unsettledSubtree, getSlots), and what a later read returns must
 * agree with an earlier one (see claimCandidates). The Postgres store shows how.
 */
export interface StoreTx {
  now(): number;
  insertJobs(rows: JobRow[]): Promise<void>;
  getJobs(ids: string[]): Promise<JobRow[]>;
  updateJobs(patches: Array<{ id: string; state: JobState; settled_at: number | null }>): Promise<void>;
  /**
   * Inserts rows whose spawn key and dedup key are free; returns the ids actually inserted.
   * A key another transaction took after the engine looked it up makes the engine give up
   * (StaleAttemptError); the store then runs the whole operation again.
   */
  insertTasks(rows: TaskRow[]): Promise<Set<string>>;
  /**
   * Throws ConflictError when an open transaction of the caller (`options.transaction`) in
   * this process holds the task's row, and this is not that transaction: waiting for the row
   * would wait for the caller, who is waiting for this call. Optional: only stores that join
   * callers' transactions (PostgreSQL) have it.
   */
  assertNotHeldByCaller?(taskId: string): void;
  /**
   * Runs these operations of this transaction (each one statement, none needing another's
   * answer) as if awaited one after the other, in one round trip where the store can.
   * Optional: see `together` in src/engine/state.ts, which falls back to one at a time.
   */
  together?<T extends unknown[]>(ops: { [K in keyof T]: () => Promise<T[K]> }): Promise<T>;
  /**
   * Tasks by id, locked until commit (in id order, so that lockers queue, not deadlock).
   * `skipLocked`: leaves out, without waiting, rows another transaction holds.
   */
  getTasks(ids: string[], opts?: { skipLocked?: boolean }): Promise<TaskCore[]>;
  updateTasks(patches: TaskPatch[]): Promise<void>;
  findChildrenByKey(parentId: string, keys: string[]): Promise<KeyedRow[]>;
  findByDedupKey(jobId: string, keys: string[]): Promise<KeyedRow[]>;
  /** Children of a task with their outcomes, in creation order. */
  children(parentId: string): Promise<OutcomeRow[]>;
  /** Tasks with their outcomes, by id. */
  outcomes(ids: string[]): Promise<OutcomeRow[]>;
  /**
   * Queued tasks of one type that are due, best first (priority, then run_at, then id), held
   * for this transaction (another claimer passes over them). Leaves out tasks whose concurrency
   * key the transaction's getSlots did not return: they were spawned after it.
   */
  claimCandidates(q: ClaimQuery): Promise<ClaimCandidate[]>;
  /** Claims and leases the given tasks, candidates of this transaction, if still queued; returns those claimed. */
  claimByIds(q: ClaimByIdsQuery): Promise<ClaimRow[]>;
  /**
   * Optional shortcut of a whole claim in one statement, for a namespace without concurrency
   * limits: the best `limit` due tasks of `types`, claimed and leased as claimByIds would.
   * Returns null when the namespace has limits: the engine then takes the general path. An
   * empty list means nothing is due, and is final. Worth having where a statement is a round
   * trip (PostgreSQL).
   */
  claimReady?(q: ClaimReadyQuery): Promise<ClaimRow[] | null>;
  /**
   * Guarded completion: for each item still running under its token, stores the result and
   * moves it to `succeeded` (no open children and no unobserved failure) or `completing`.
   * Returns the rows that matched.
   */
  completeRunning(
    items: Array<{ id: string; token: number; result: string | null }>,
    now: number,
  ): Promise<CompletedRow[]>;
  /** Running tasks whose lease expired before `now`, locked (another sweeper passes over them). */
  expiredLeases(now: number, limit: number): Promise<TaskCore[]>;
  /**
   * Unsettled tasks in the subtree rooted at `rootId` (the root included), locked: all of them,
   * including children spawned by a transaction that committed while this one waited.
   */
  unsettledSubtree(rootId: string): Promise<TaskCore[]>;
  insertDeps(rows: DepRow[]): Promise<void>;
  /** Dependency edges whose `depends_on` is one of `ids`. */
  dependents(tasks: Array<{ job_id: string; id: string }>): Promise<DepRow[]>;
  insertAttempts(rows: AttemptRow[]): Promise<void>;
  putStep(jobId: string, taskId: string, name: string, value: string): Promise<void>;
  /**
   * These concurrency slots of the namespace (those that exist), locked, in key order: a claim
   * reads how many are free and takes some. Only the slots of the types and keys it claims.
   */
  getSlots(namespace: string, keys: string[]): Promise<SlotRow[]>;
  /**
   * The namespace's key slots that are full (their tasks are passed over by a claim), and
   * whether it has key slots at all. Not locked: a slot found full that frees meanwhile only
   * waits for the next claim; one that fills meanwhile is seen when getSlots locks it.
   */
  fullKeySlots(namespace: string): Promise<{ any: boolean; full: string[] }>;
  /** Upserts a slot's maximum (keeps its running count); `null` removes the slot, and so the limit. */
  setSlotMax(namespace: string, key: string, max: number | null): Promise<void>;
  adjustSlots(namespace: string, deltas: Map<string, number>): Promise<void>;
  /**
   * Deletes up to `limit` key slots, of any namespace, that no task holds and no unsettled task
   * carries (a slot is created again with the next task that names its key). Returns how many.
   */
  dropUnusedKeySlots(limit: number): Promise<number>;
  upsertTypeConfigs(rows: TypeConfigRow[]): Promise<void>;
  /**
   * The per-type settings in force now, as the database holds them: a retry decision reads
   * them here, not from a process's copy, which another process's registration makes stale.
   */
  getTypeConfigs(keys: Array<{ namespace: string; type: string }>): Promise<TypeConfigRow[]>;
  /**
   * Tells other processes' workers, once this transaction commits (and only then), that tasks
   * of these types became ready in this namespace. Optional: a store without it (SQLite) is
   * only shared through the workers' safety-net poll.
   */
  notifyReady?(namespace: string, types: string[]): Promise<void>;
}

/**
 * A wake-up from another process: tasks of these types became ready in this namespace. Null
 * when notices may have been lost (the store was disconnected): anything may be ready.
 */
export type ReadyNotice = { namespace: string; types: string[] } | null;

export interface TaskPage {
  tasks: TaskRow[];
  /** Pass as `after` for the next page; null at the end. */
  next: string | null;
}

/**
 * A store: transactions plus read-only queries. Times passed to and returned by the queries
 * outside transactions (touchWorker, liveTypes, purgeJobs, nextRunAt) are on this process's
 * clock; a store whose transactions take the database's clock (StoreTx.now) converts them.
 */
export interface Store {
  readonly kind: 'sqlite' | 'postgres';
  /**
   * Applies the migrations not yet applied, in order; safe to call on every start, and from
   * several processes at once. Resolves with the versions it applied (none: up to date).
   */
  migrate(): Promise<string[]>;
  /** The migrations this version of dynatask has that the database has not applied. */
  pendingMigrations(): Promise<string[]>;
  /**
   * `clockLater`: the operation reads no time (StoreTx.now) before its first statement, so a
   * store may begin the transaction with that statement (PostgreSQL: one round trip fewer).
   */
  transaction<T>(fn: (tx: StoreTx) => Promise<T>, opts?: { clockLater?: boolean }): Promise<T>;
  /**
   * Runs `fn` inside a transaction the caller began on a connection of their own (`client`),
   * without committing it: the caller commits or rolls back. Optional: only stores that
   * can share a connection with the application (PostgreSQL) have it.
   */
  transactionWith?<T>(client: unknown, fn: (tx: StoreTx) => Promise<T>): Promise<T>;
  getJob(id: string): Promise<JobRow | undefined>;
  jobCounts(jobId: string): Promise<Array<{ state: TaskState; n: number }>>;
  listJobs(q: ListJobsQuery): Promise<JobRow[]>;
  getTask(id: string): Promise<TaskRow | undefined>;
  attempts(jobId: string, taskId: string): Promise<AttemptRow[]>;
  /** A job's tasks in creation order, `limit` at a time. */
  taskPage(jobId: string, after: string | null, limit: number): Promise<TaskPage>;
  typeConfigs(namespace: string): Promise<TypeConfigRow[]>;
  /**
   * StoreTx.claimReady on its own, as one operation that commits as it returns (one round
   * trip on PostgreSQL), on the store's clock: returns the time it used with the rows, or
   * null when the namespace has limits. Optional.
   */
  claimReady?(q: Omit<ClaimReadyQuery, 'now'>): Promise<{ now: number; rows: ClaimRow[] } | null>;
  /** Earliest run_at among queued tasks of these types, or null. */
  nextRunAt(namespace: string, types: string[]): Promise<number | null>;
  /** A memoised step's stored value (JSON), if any. */
  getStep(jobId: string, taskId: string, name: string): Promise<string | undefined>;
  /** As StoreTx.assertNotHeldByCaller, outside a transaction: before a step's function runs. */
  assertNotHeldByCaller?(taskId: string): void;
  /** Queued task counts by type. */
  queuedByType(namespace: string): Promise<Array<{ type: string; n: number }>>;
  /**
   * Queued and running tasks by namespace and type, in every namespace: the states a
   * partial index covers, so counting stays cheap however many settled tasks the table holds
   * (for metrics; settled tasks are counted as they settle).
   */
  countTasks(): Promise<Array<{ namespace: string; type: string; state: 'queued' | 'running'; n: number }>>;
  /** Records that a worker serving `types` is alive. */
  touchWorker(id: string, namespace: string, types: string[], now: number): Promise<void>;
  removeWorker(id: string): Promise<void>;
  /** Types served by a worker seen since `since`. */
  liveTypes(namespace: string, since: number): Promise<string[]>;
  /** Deletes up to `limit` jobs of a namespace settled before `before`, with all their rows; returns the count. */
  purgeJobs(namespace: string, before: number, limit: number): Promise<number>;
  /**
   * Calls `listener` when a transaction of another store (another process) that made tasks
   * ready commits; see StoreTx.notifyReady. This store's own transactions are not echoed: the
   * engine wakes its workers itself (so two engines sharing one store object wake each other only
   * by their poll). Optional, like notifyReady. Returns the unsubscribe function.
   */
  onReady?(listener: (notice: ReadyNotice) => void): () => void;
  close(): Promise<void>;
}
