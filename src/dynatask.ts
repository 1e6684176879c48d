/**
 * The TypeScript API: open a store, register handlers, start workers, submit jobs and
 * query them. Everything here delegates to the engine (transitions) and the store (queries).
 */
import { hostname } from 'node:os';
import type { TaskMap } from './engine/context.js';
import { DEFAULTS, Engine } from './engine/engine.js';
import { JobFailedError, NotFoundError, ValidationError } from './engine/errors.js';
import { newId } from './engine/ids.js';
import {
  type DynataskEvent,
  type JobInfo,
  type JobState,
  type RetryPolicy,
  type SubmitOptions,
  TASK_STATES,
  type TaskError,
  type TaskInfo,
  type TaskState,
} from './engine/types.js';
import { type Handler, Worker } from './engine/worker.js';
import { openStore } from './store/open.js';
import type { JobRow, ListJobsQuery, Store, TaskRow } from './store/store.js';

export interface OpenOptions {
  /**
   * Where to store: a SQLite file path, ':memory:', or a postgres:// URL (`?schema=` chooses the schema).
   * Defaults to $DYNATASK_DATABASE_URL, else `.dynatask/dynatask.db` in the working directory.
   */
  database?: string;
  /** Namespace of submitted jobs and served tasks. Default `default`. */
  namespace?: string;
  /** Lease of a claimed task; heartbeats renew it every third of it. Default 30 s. */
  leaseMs?: number;
  /** An already open store (tests, embedding). */
  store?: Store;
}

export interface HandlerOptions extends RetryPolicy {
  /** Per-attempt timeout of this type's tasks, in ms. */
  timeoutMs?: number;
  /** At most this many tasks of this type run at once, across all workers. */
  concurrency?: number;
}

export interface StartOptions {
  /** Handlers running at once in this process. Default 256. */
  concurrency?: number;
  /** Tasks claimed per transaction. Default 256. */
  batchSize?: number;
  /**
   * Safety-net poll interval when idle. Default 500 ms on SQLite; 5 s on Postgres, whose
   * workers are woken by notifications from every process.
   */
  pollMs?: number;
}

/** A submitted job. */
export class JobHandle<R = unknown> {
  constructor(
    private readonly dt: Dynatask,
    readonly id: string,
    readonly rootTaskId: string,
  ) {}

  /** Resolves with the root task's result once the job settles; rejects with JobFailedError otherwise. */
  async result(): Promise<R> {
    const job = await this.dt.waitForJob(this.id);
    if (job.state !== 'succeeded') throw new JobFailedError(this.id, job.state, job.error);
    return job.result as R;
  }

  /** The job with its task counts. */
  info(): Promise<JobInfo> {
    return this.dt.getJob(this.id);
  }

  cancel(reason?: string): Promise<boolean> {
    return this.dt.cancelJob(this.id, reason);
  }
}

function taskInfo(r: TaskRow): TaskInfo {
  const parse = (s: string | null) => (s === null ? null : JSON.parse(s));
  return {
    id: r.id,
    jobId: r.job_id,
    parentId: r.parent_id,
    type: r.type,
    key: r.spawn_key,
    dedupKey: r.dedup_key,
    state: r.state,
    payload: parse(r.payload),
    result: parse(r.result),
    error: parse(r.error) as TaskError | null,
    progress: parse(r.progress),
    attempt: r.attempt,
    maxAttempts: r.max_attempts,
    priority: r.priority,
    runAt: r.run_at,
    createdAt: r.created_at,
    startedAt: r.started_at,
    finishedAt: r.finished_at,
    settledAt: r.settled_at,
    openChildren: r.open_children,
  };
}

/** The default embedded database file, relative to the working directory. */
export const DEFAULT_DATABASE = '.dynatask/dynatask.db';

/**
 * Opens dynatask on a store and returns the API. `M` maps task types to payload and result
 * types, so handlers, spawns and submissions are typed end to end.
 */
export async function open<M extends TaskMap = TaskMap>(opts: OpenOptions = {}): Promise<Dynatask<M>> {
  const store =
    opts.store ?? (await openStore(opts.database ?? process.env.DYNATASK_DATABASE_URL ?? DEFAULT_DATABASE));
  await store.migrate();
  const dt = new Dynatask<M>(store, opts);
  await dt.engine.loadTypeConfigs(dt.namespace);
  return dt;
}

export class Dynatask<M extends TaskMap = TaskMap> {
  readonly engine: Engine;
  readonly namespace: string;
  private readonly handlers = new Map<string, Handler>();
  private readonly handlerOptions = new Map<string, HandlerOptions>();
  private worker: Worker | undefined;
  private sweeper: NodeJS.Timeout | undefined;
  private presence: NodeJS.Timeout | undefined;
  private readonly workerId = `${hostname()}:${process.pid}:${newId()}`;
  private readonly jobWaiters = new Map<string, Set<() => void>>();
  private jobUnsub: (() => void) | undefined;

  constructor(
    readonly store: Store,
    opts: OpenOptions = {},
  ) {
    this.engine = new Engine(store, opts.leaseMs !== undefined ? { leaseMs: opts.leaseMs } : {});
    this.namespace = opts.namespace ?? DEFAULTS.namespace;
  }

  /** Registers the handler of a task type. Call before `start`. */
  handle<K extends keyof M & string>(
    type: K,
    handler: Handler<M, M[K]['payload'], M[K]['result']>,
    options: HandlerOptions = {},
  ): this {
    if (typeof type !== 'string' || type === '')
      throw new ValidationError('handle: type must be a non-empty string');
    if (this.worker) throw new ValidationError(`handle('${type}'): register handlers before start()`);
    this.handlers.set(type, handler as unknown as Handler);
    this.handlerOptions.set(type, options);
    return this;
  }

  /** Starts serving the registered types: claims, runs, heartbeats and recovers expired leases. */
  async start(opts: StartOptions = {}): Promise<void> {
    if (this.worker) return;
    await this.engine.configureTypes(
      [...this.handlerOptions].map(([type, o]) => ({
        namespace: this.namespace,
        type,
        max_attempts: o.maxAttempts ?? null,
        backoff_ms: o.backoffMs ?? null,
        max_backoff_ms: o.maxBackoffMs ?? null,
        timeout_ms: o.timeoutMs ?? null,
        concurrency: o.concurrency ?? null,
      })),
    );
    this.worker = new Worker(this.engine, this.handlers, {
      namespace: this.namespace,
      concurrency: opts.concurrency ?? 256,
      batchSize: opts.batchSize ?? 256,
      pollMs: opts.pollMs ?? (this.store.onReady ? 5000 : 500),
      leaseMs: this.engine.leaseMs,
    });
    this.worker.start();
    const sweepEvery = Math.max(50, Math.min(5000, Math.floor(this.engine.leaseMs / 2)));
    this.sweeper = setInterval(() => {
      this.engine.expireLeases().catch((e) => console.error('dynatask lease sweeper:', e));
    }, sweepEvery);
    this.sweeper.unref();
    const touch = () =>
      this.store
        .touchWorker(this.workerId, this.namespace, [...this.handlers.keys()], Date.now())
        .catch(() => {});
    await touch();
    this.presence = setInterval(touch, 5000);
    this.presence.unref();
  }

  /**
   * Stops claiming and waits up to `graceMs` (default 30 s) for running handlers to finish;
   * handlers still running then are aborted and their tasks retried elsewhere once their
   * leases expire.
   */
  async stop(opts: { graceMs?: number } = {}): Promise<void> {
    clearInterval(this.sweeper);
    clearInterval(this.presence);
    if (this.worker) {
      await this.worker.stop(opts.graceMs);
      this.worker = undefined;
      await this.store.removeWorker(this.workerId);
    }
  }

  /** Stops (see `stop`) and closes the store. */
  async close(opts: { graceMs?: number } = {}): Promise<void> {
    await this.stop(opts);
    this.jobUnsub?.();
    await this.store.close();
  }

  // ---------------------------------------------------------------- submitting

  /** Submits a job: its root task of `type` with `payload`. */
  async submit<K extends keyof M & string>(
    type: K,
    payload: M[K]['payload'],
    options: SubmitOptions = {},
  ): Promise<JobHandle<M[K]['result']>> {
    const [h] = await this.submitMany([{ type, payload, options }]);
    return h as JobHandle<M[K]['result']>;
  }

  /** Submits many jobs in one transaction. */
  async submitMany(
    jobs: Array<{ type: keyof M & string; payload: unknown; options?: SubmitOptions }>,
  ): Promise<JobHandle[]> {
    const created = await this.engine.submit(
      jobs.map((j) => ({
        type: j.type,
        payload: j.payload,
        options: { namespace: this.namespace, ...j.options },
      })),
    );
    return created.map((c) => new JobHandle(this as unknown as Dynatask, c.jobId, c.rootTaskId));
  }

  // ---------------------------------------------------------------- queries

  /** A job with its result and task counts by state. */
  async getJob(jobId: string): Promise<JobInfo> {
    const job = await this.store.getJob(jobId);
    if (!job) throw new NotFoundError(`job ${jobId} not found`);
    return this.jobInfo(job);
  }

  private async jobInfo(job: JobRow): Promise<JobInfo> {
    const [root, counts] = await Promise.all([
      this.store.getTask(job.root_task_id),
      this.store.jobCounts(job.id),
    ]);
    const byState = Object.fromEntries(TASK_STATES.map((s) => [s, 0])) as Record<TaskState, number>;
    let total = 0;
    for (const c of counts) {
      byState[c.state] = c.n;
      total += c.n;
    }
    return {
      id: job.id,
      namespace: job.namespace,
      type: job.type,
      rootTaskId: job.root_task_id,
      state: job.state,
      result: root?.result ? JSON.parse(root.result) : null,
      error: root?.error && job.state !== 'succeeded' ? (JSON.parse(root.error) as TaskError) : null,
      createdAt: job.created_at,
      settledAt: job.settled_at,
      counts: byState,
      total,
    };
  }

  /** Jobs, newest first, filtered by state, type and creation time; page with `before`. */
  async listJobs(
    q: Partial<ListJobsQuery> = {},
  ): Promise<Array<Omit<JobInfo, 'counts' | 'total' | 'result' | 'error'>>> {
    const rows = await this.store.listJobs({
      namespace: this.namespace,
      ...q,
      limit: Math.min(q.limit ?? 100, 1000),
    });
    return rows.map((j) => ({
      id: j.id,
      namespace: j.namespace,
      type: j.type,
      rootTaskId: j.root_task_id,
      state: j.state,
      createdAt: j.created_at,
      settledAt: j.settled_at,
    }));
  }

  /** A task with its payload, result, error, attempts and timings. */
  async getTask(taskId: string): Promise<TaskInfo> {
    const row = await this.store.getTask(taskId);
    if (!row) throw new NotFoundError(`task ${taskId} not found`);
    const info = taskInfo(row);
    info.attempts = (await this.store.attempts(row.job_id, taskId)).map((a) => ({
      attempt: a.attempt,
      startedAt: a.started_at,
      finishedAt: a.finished_at,
      error: JSON.parse(a.error) as TaskError,
    }));
    return info;
  }

  /** A page of a job's tasks in creation order (each with its parentId, to build the tree). */
  async tree(
    jobId: string,
    page: { after?: string; limit?: number } = {},
  ): Promise<{ tasks: TaskInfo[]; next: string | null }> {
    const limit = Math.max(1, Math.min(page.limit ?? 1000, 10_000));
    const p = await this.store.taskPage(jobId, page.after ?? null, limit);
    return { tasks: p.tasks.map(taskInfo), next: p.next };
  }

  /** Queued tasks by type, and whether a live worker serves the type (unserved types wait visibly). */
  async queuedTypes(): Promise<Array<{ type: string; queued: number; served: boolean }>> {
    const [queued, live] = await Promise.all([
      this.store.queuedByType(this.namespace),
      this.store.liveTypes(this.namespace, Date.now() - 15_000),
    ]);
    const served = new Set(live);
    return queued.map((q) => ({ type: q.type, queued: q.n, served: served.has(q.type) }));
  }

  // ---------------------------------------------------------------- control

  cancelJob(jobId: string, reason?: string): Promise<boolean> {
    return this.engine.cancelJob(jobId, reason);
  }

  /** Cancels a task and its whole unsettled subtree. */
  cancelTask(taskId: string, reason?: string): Promise<boolean> {
    return this.engine.cancelTask(taskId, reason);
  }

  /** Deletes this namespace's jobs (with all their tasks) settled more than `olderThanMs` ago; returns the count. */
  async purge(opts: { olderThanMs: number }): Promise<number> {
    let total = 0;
    const before = Date.now() - opts.olderThanMs;
    for (;;) {
      const n = await this.store.purgeJobs(this.namespace, before, 500);
      total += n;
      if (n < 500) return total;
    }
  }

  /**
   * Subscribes to events of transitions committed by this process, in order; pass a job id
   * to receive only that job's events. Returns the unsubscribe function.
   */
  subscribe(listener: (e: DynataskEvent) => void, jobId?: string): () => void {
    return this.engine.subscribe(jobId ? (e) => e.jobId === jobId && listener(e) : listener);
  }

  /** Resolves when the job has settled (events from this process, with a poll for other processes). */
  async waitForJob(jobId: string, pollMs = 250): Promise<JobInfo> {
    this.jobUnsub ??= this.engine.onJobSettled((jobs) => {
      for (const j of jobs) for (const w of this.jobWaiters.get(j.jobId) ?? []) w();
    });
    for (;;) {
      let wake!: () => void;
      const woken = new Promise<void>((r) => {
        wake = r;
      });
      let set = this.jobWaiters.get(jobId);
      if (!set) {
        set = new Set();
        this.jobWaiters.set(jobId, set);
      }
      set.add(wake);
      try {
        const job = await this.store.getJob(jobId);
        if (!job) throw new NotFoundError(`job ${jobId} not found`);
        if (job.state !== 'running') return this.jobInfo(job);
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([woken, new Promise<void>((r) => (timer = setTimeout(r, pollMs)))]);
        clearTimeout(timer);
      } finally {
        set.delete(wake);
        if (set.size === 0) this.jobWaiters.delete(jobId);
      }
    }
  }
}

export type { JobState };
