/**
 * The TypeScript API: open dynatask, register handlers, start workers, submit jobs and query
 * them. Everything here goes through an engine port: the engine and store in this process,
 * or a dynatask server over HTTP (`database: 'http://…'`), with the same behaviour.
 */
import { HttpPort } from './client/http-port.js';
import type { TaskMap } from './engine/context.js';
import { DEFAULTS } from './engine/defs.js';
import { Engine } from './engine/engine.js';
import { JobFailedError, ValidationError } from './engine/errors.js';
import { LocalPort } from './engine/local-port.js';
import type { DynataskPort, JobQuery, JobSummary } from './engine/port.js';
import type {
  DynataskEvent,
  JobInfo,
  JobState,
  RetryPolicy,
  SubmitOptions,
  TaskInfo,
} from './engine/types.js';
import { type Handler, Worker } from './engine/worker.js';
import { openStore } from './store/open.js';
import type { Store } from './store/store.js';

export interface OpenOptions {
  /**
   * Where to store: a SQLite file path, ':memory:', or a postgres:// URL (`?schema=` chooses the
   * schema); or the http:// (https://) URL of a dynatask server, to run everything through it.
   * Defaults to $DYNATASK_DATABASE_URL, else `.dynatask/dynatask.db` in the working directory.
   */
  database?: string;
  /** With a server URL: the bearer token sent with every request. Default $DYNATASK_TOKEN. */
  token?: string;
  /** Namespace of submitted jobs and served tasks. Default `default`. */
  namespace?: string;
  /**
   * Lease of a claimed task; heartbeats renew it every third of it. Default 30 s; against a
   * server, the server's (`dynatask server --lease-ms`).
   */
  leaseMs?: number;
  /**
   * Apply the schema migrations the database lacks on open (the default). With `false`, open
   * refuses a database whose schema is behind, and `dynatask migrate` is the deploy step
   * that migrates it.
   */
  migrate?: boolean;
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
  /** Handlers running at once in this process. Default 512 (two batches of 256). */
  concurrency?: number;
  /**
   * Tasks claimed per transaction. Default: half of `concurrency`, so that two batches
   * alternate, one running while the other's outcomes are stored.
   */
  batchSize?: number;
  /**
   * Safety-net poll interval when idle. Default 500 ms on SQLite; 5 s on Postgres, whose
   * workers are woken by notifications from every process. Against a server, idle workers
   * long-poll instead, and this is the pause after a failed claim.
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

/** The default embedded database file, relative to the working directory. */
export const DEFAULT_DATABASE = '.dynatask/dynatask.db';

/**
 * Opens dynatask on a store and returns the API. `M` maps task types to payload and result
 * types, so handlers, spawns and submissions are typed end to end.
 */
export async function open<M extends TaskMap = TaskMap>(opts: OpenOptions = {}): Promise<Dynatask<M>> {
  const database = opts.database ?? process.env.DYNATASK_DATABASE_URL ?? DEFAULT_DATABASE;
  if (!opts.store && isServerUrl(database)) {
    const port = new HttpPort({
      url: database,
      token: opts.token ?? process.env.DYNATASK_TOKEN,
      ...(opts.leaseMs !== undefined ? { leaseMs: opts.leaseMs } : {}),
    });
    try {
      await port.connect(database);
    } catch (e) {
      await port.close();
      throw e;
    }
    return new Dynatask<M>(port, opts);
  }
  const store = opts.store ?? (await openStore(database));
  if (opts.migrate === false) await requireMigrated(store);
  else await store.migrate();
  const engine = new Engine(store, opts.leaseMs !== undefined ? { leaseMs: opts.leaseMs } : {});
  const dt = new Dynatask<M>(new LocalPort(engine, store), opts);
  await engine.loadTypeConfigs(dt.namespace);
  return dt;
}

/** Throws, naming what to run, if the store's schema lacks migrations. */
async function requireMigrated(store: Store): Promise<void> {
  const pending = await store.pendingMigrations();
  if (pending.length) {
    await store.close();
    throw new ValidationError(
      `the ${store.kind} database lacks migrations ${pending.join(', ')}: run \`dynatask migrate\` (or open without migrate: false)`,
    );
  }
}

/** True for the http:// or https:// URL of a dynatask server. */
export const isServerUrl = (database: string) => /^https?:\/\//i.test(database);

export class Dynatask<M extends TaskMap = TaskMap> {
  readonly namespace: string;
  /** The lease given to open(), if any. */
  private readonly leaseMs: number | undefined;
  private readonly handlers = new Map<string, Handler>();
  private readonly handlerOptions = new Map<string, HandlerOptions>();
  private worker: Worker | undefined;
  private workerDone: (() => Promise<void>) | undefined;

  /** Use `open()`. `port` is where the engine runs: in this process, or a server. */
  constructor(
    readonly port: DynataskPort,
    opts: OpenOptions = {},
  ) {
    this.namespace = opts.namespace ?? DEFAULTS.namespace;
    this.leaseMs = opts.leaseMs;
  }

  /** True when this instance talks to a dynatask server over HTTP. */
  get remote(): boolean {
    return !(this.port instanceof LocalPort);
  }

  /** The engine of this process (tests, embedding); an instance on a server has none. */
  get engine(): Engine {
    return this.local('engine').engine;
  }

  /** The store of this process (tests, embedding); an instance on a server has none. */
  get store(): Store {
    return this.local('store').store;
  }

  private local(what: string): LocalPort {
    if (this.port instanceof LocalPort) return this.port;
    throw new ValidationError(
      `dt.${what}: this instance runs on the server ${this.port.where}, not in-process`,
    );
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
    await this.port.configureTypes(
      this.namespace,
      [...this.handlerOptions].map(([type, o]) => ({ type, ...o })),
    );
    const local = this.port instanceof LocalPort ? this.port : undefined;
    const concurrency = opts.concurrency ?? 512;
    this.worker = new Worker(this.port, this.handlers, {
      namespace: this.namespace,
      concurrency,
      // Two batches in flight: one's handlers run while the other's outcomes are stored.
      batchSize: opts.batchSize ?? Math.ceil(concurrency / 2),
      pollMs: opts.pollMs ?? (local && !local.store.onReady ? 500 : 5000),
      // Only a lease chosen here is asked for: else the engine's applies (a server's --lease-ms).
      leaseMs: this.leaseMs,
    });
    this.worker.start();
    this.workerDone = await this.port.workerStarted(this.namespace, [...this.handlers.keys()]);
  }

  /**
   * Stops claiming and waits up to `graceMs` (default 30 s) for running handlers to finish;
   * handlers still running then are aborted and their tasks retried elsewhere once their
   * leases expire.
   */
  async stop(opts: { graceMs?: number } = {}): Promise<void> {
    if (this.worker) {
      await this.worker.stop(opts.graceMs);
      this.worker = undefined;
      await this.workerDone?.();
      this.workerDone = undefined;
    }
  }

  /** Stops (see `stop`) and closes the store. */
  async close(opts: { graceMs?: number } = {}): Promise<void> {
    await this.stop(opts);
    await this.port.close();
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
    const created = await this.port.submit(
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
  getJob(jobId: string): Promise<JobInfo> {
    return this.port.getJob(jobId);
  }

  /** Jobs, newest first, filtered by state, type and creation time; page with `before`. */
  listJobs(q: Partial<JobQuery> = {}): Promise<JobSummary[]> {
    return this.port.listJobs({ namespace: this.namespace, ...q, limit: Math.min(q.limit ?? 100, 1000) });
  }

  /** A task with its payload, result, error, attempts and timings. */
  getTask(taskId: string): Promise<TaskInfo> {
    return this.port.getTask(taskId);
  }

  /** A page of a job's tasks in creation order (each with its parentId, to build the tree). */
  tree(
    jobId: string,
    page: { after?: string; limit?: number } = {},
  ): Promise<{ tasks: TaskInfo[]; next: string | null }> {
    return this.port.tree(jobId, page.after ?? null, Math.max(1, Math.min(page.limit ?? 1000, 10_000)));
  }

  /** Queued tasks by type, and whether a live worker serves the type (unserved types wait visibly). */
  queuedTypes(): Promise<Array<{ type: string; queued: number; served: boolean }>> {
    return this.port.queuedTypes(this.namespace);
  }

  // ---------------------------------------------------------------- control

  /** Cancels a job: its root task and every unsettled task below it; false if it had settled. */
  cancelJob(jobId: string, reason?: string): Promise<boolean> {
    return this.port.cancelJob(jobId, reason);
  }

  /** Cancels a task and its whole unsettled subtree. */
  cancelTask(taskId: string, reason?: string): Promise<boolean> {
    return this.port.cancelTask(taskId, reason);
  }

  /**
   * Runs a failed task again, as a new attempt; its failed ancestors and job reopen. Throws
   * ConflictError if the task has not failed (see `Engine.retryTask`).
   */
  retryTask(taskId: string): Promise<void> {
    return this.port.retryTask(taskId);
  }

  /** Deletes this namespace's jobs (with all their tasks) settled more than `olderThanMs` ago; returns the count. */
  purge(opts: { olderThanMs: number }): Promise<number> {
    return this.port.purge(this.namespace, Date.now() - opts.olderThanMs);
  }

  /**
   * Subscribes to events, in commit order; pass a job id to receive only that job's. In-process:
   * the transitions committed by this process. On a server: those committed by that server,
   * delivered by its event stream. Returns the unsubscribe function.
   */
  subscribe(listener: (e: DynataskEvent) => void, jobId?: string): () => void {
    return this.port.subscribe(listener, jobId);
  }

  /** Resolves when the job has settled (woken by events, with a poll for other processes). */
  waitForJob(jobId: string, pollMs = 250): Promise<JobInfo> {
    return this.port.waitForJob(jobId, pollMs);
  }
}

export type { JobState };
