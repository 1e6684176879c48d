/**
 * What the worker, the handler context and the public API need from an engine: the seam
 * between "what dynatask does" and "where the engine runs". Two implementations:
 *
 * - `LocalPort` (local-port.ts): the Engine and its Store in this process;
 * - `HttpPort` (src/client/http-port.ts): a dynatask server, over its HTTP API.
 *
 * Every call takes a batch where the worker has one, so each call stays one transaction (and,
 * remotely, one HTTP request): the worker's round trip (outcomes of the handlers that finished,
 * then the next claim) is `report`.
 */
import type { AttemptRef, SpawnSpec, WaitResult, WaitSpec } from './defs.js';
import type { DynataskEvent, JobInfo, SubmitOptions, TaskError, TaskHandle, TaskInfo } from './types.js';

/**
 * A claim: up to `limit` ready tasks of `types` in `namespace`, leased for `leaseMs`, else for
 * the engine's (the server's) default lease.
 */
export interface ClaimQuery {
  namespace: string;
  types: string[];
  limit: number;
  leaseMs?: number | undefined;
}

/** A task a worker holds: what its handler and the worker's timers need. */
export interface PortTask {
  id: string;
  jobId: string;
  parentId: string | null;
  type: string;
  /** 1 for the first attempt; resumes after a wait keep the number. */
  attempt: number;
  /** The attempt token: every later call about this attempt presents it. */
  token: number;
  /** The payload, parsed. */
  payload: unknown;
  /** The attempt's timeout (the task's, else its type's), or null. */
  timeoutMs: number | null;
  /** When the attempt started, on this process's clock: its timeout counts from here. */
  startedAt: number;
}

/** Per item: the lease renewed, the task cancelled, or the attempt no longer holds it. */
export type HeartbeatStatus = 'ok' | 'cancelled' | 'lost';

/** A worker's round trip: whether each outcome was recorded (false: stale), and the next claim. */
export interface ReportResult {
  completed: boolean[];
  failed: boolean[];
  claimed: PortTask[];
}

/** Shared per-type settings, stored by `start()` for every process of the namespace. */
export interface TypeSettings {
  type: string;
  maxAttempts?: number;
  backoffMs?: number;
  maxBackoffMs?: number;
  timeoutMs?: number;
  concurrency?: number;
}

/** The calls a worker and its handlers' contexts make. */
export interface WorkerPort {
  /** The lease a claimed task gets when the worker asks for none (remote: as the server grants). */
  readonly leaseMs: number;
  /**
   * Claims ready tasks. With `waitMs` (ports that long-poll, see `longPoll`), waits up to that
   * long for some to become ready; `signal` ends the wait early.
   */
  claim(q: ClaimQuery & { waitMs?: number }, signal?: AbortSignal): Promise<PortTask[]>;
  /** Records outcomes and claims the next batch, in one transaction. */
  report(
    completed: Array<AttemptRef & { result: unknown }>,
    failed: Array<AttemptRef & { error: TaskError }>,
    next?: ClaimQuery,
  ): Promise<ReportResult>;
  /**
   * Gives back claimed tasks this worker will not start (it stops): queued again at once,
   * without counting an attempt. Per item, whether the attempt still held its task.
   */
  release(items: AttemptRef[]): Promise<boolean[]>;
  /** Renews the leases of running attempts, by `leaseMs`, else by the engine's default lease. */
  heartbeat(items: AttemptRef[], leaseMs?: number): Promise<HeartbeatStatus[]>;
  /**
   * True when idle workers should wait inside `claim` (remote: the server long-polls); false
   * when they sleep until `onReady`, `nextRunAt` or their poll (in-process).
   */
  readonly longPoll: boolean;
  /** Earliest time a queued task of these types becomes due (in-process only). */
  nextRunAt?(namespace: string, types: string[]): Promise<number | null>;
  /** Calls `listener` when work of these types may have become ready (in-process only). */
  onReady?(namespace: string, types: string[], listener: () => void): () => void;
  /**
   * True when `onReady` hears every task made ready, by this process or another (PostgreSQL):
   * a worker whose claim came back short then knows no claim can find more until a wake-up
   * or the next due time, and skips both.
   */
  readonly hearsAllReady?: boolean;
  /** Calls `listener` with running tasks just cancelled, so local handlers abort at once. */
  onCancelled?(listener: (taskIds: string[]) => void): () => void;
  /**
   * Longest time between heartbeats while handlers run, when a port has no `onCancelled`:
   * heartbeats are then how a handler learns that its task was cancelled.
   */
  readonly cancelPollMs?: number;

  /** Spawns children of a running task; `keys[i]` is the idempotency key of `specs[i]`. */
  spawn(parent: AttemptRef, specs: SpawnSpec[], keys: string[]): Promise<TaskHandle[]>;
  /**
   * Of these spawn keys, those a child of the task has: committed ones, or with `transaction`
   * (a caller's, in-process only) also those its open transaction wrote.
   */
  spawnedKeys?(parent: AttemptRef, keys: string[], transaction?: unknown): Promise<string[]>;
  /** A durable wait: the children's outcomes, or `suspended` (the task left `running`). */
  wait(ref: AttemptRef, spec: WaitSpec): Promise<WaitResult>;
  getStep(task: AttemptRef & { jobId: string }, name: string): Promise<{ found: boolean; value: unknown }>;
  putStep(ref: AttemptRef, name: string, value: unknown): Promise<void>;
  progress(ref: AttemptRef, value: unknown): Promise<void>;
}

/** A job as `listJobs` returns it: without counts, result or error. */
export type JobSummary = Omit<JobInfo, 'counts' | 'total' | 'result' | 'error'>;

/** Filters of `listJobs`. */
export interface JobQuery {
  namespace: string;
  state?: JobInfo['state'];
  type?: string;
  createdAfter?: number;
  createdBefore?: number;
  /** A job id: the page after it. */
  before?: string;
  limit: number;
}

/** A job to submit. */
export interface JobSpec {
  type: string;
  payload?: unknown;
  options?: SubmitOptions;
}

/** Everything `Dynatask` needs: the worker's calls, and the operator's and reader's. */
export interface DynataskPort extends WorkerPort {
  /** Where it runs, for messages: `sqlite`, `postgres`, or the server's URL. */
  readonly where: string;
  /** Creates jobs (each with its root task) atomically. */
  submit(jobs: JobSpec[]): Promise<Array<{ jobId: string; rootTaskId: string }>>;
  getJob(jobId: string): Promise<JobInfo>;
  listJobs(q: JobQuery): Promise<JobSummary[]>;
  getTask(taskId: string): Promise<TaskInfo>;
  tree(
    jobId: string,
    after: string | null,
    limit: number,
  ): Promise<{ tasks: TaskInfo[]; next: string | null }>;
  queuedTypes(namespace: string): Promise<Array<{ type: string; queued: number; served: boolean }>>;
  cancelJob(jobId: string, reason?: string): Promise<boolean>;
  cancelTask(taskId: string, reason?: string): Promise<boolean>;
  /** Queues a failed task again for a new attempt (its settled ancestors and job reopen). */
  retryTask(taskId: string): Promise<void>;
  /** Deletes the namespace's jobs settled before `before`; the count. */
  purge(namespace: string, before: number): Promise<number>;
  /** Stores per-type settings shared by every process of the namespace. */
  configureTypes(namespace: string, types: TypeSettings[]): Promise<void>;
  /**
   * A worker of these types starts in this process: keep what it needs running beside it
   * (in-process: the lease sweeper and the presence record behind `queuedTypes().served`).
   * Returns the function that ends it.
   */
  workerStarted(namespace: string, types: string[]): Promise<() => Promise<void>>;
  /** Events, with `jobId` only that job's; returns the unsubscribe function. */
  subscribe(listener: (e: DynataskEvent) => void, jobId?: string): () => void;
  /** Resolves with the job once it has settled. */
  waitForJob(jobId: string, pollMs: number): Promise<JobInfo>;
  close(): Promise<void>;
}
