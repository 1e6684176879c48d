/**
 * The engine port in this process: the Engine and its Store, with the read side (job and
 * task queries) and the worker's companions (lease sweeper, presence). A thin adapter: every
 * transition stays in the engine's modules (see engine.ts).
 */
import { hostname } from 'node:os';
import type { ClaimRow, JobRow, Store } from '../store/store.js';
import type { AttemptRef, SpawnSpec, WaitSpec } from './defs.js';
import type { Engine } from './engine.js';
import { NotFoundError } from './errors.js';
import { newId } from './ids.js';
import type {
  ClaimQuery,
  DynataskPort,
  HeartbeatStatus,
  JobQuery,
  JobSpec,
  JobSummary,
  PortTask,
  ReportResult,
  TypeSettings,
} from './port.js';
import type { DynataskEvent, JobInfo, TaskError, TaskInfo } from './types.js';
import { jobInfo, jobSummary, parseJson, taskInfo, taskWithAttempts, typeConfigRows } from './views.js';

function portTask(row: ClaimRow, token: number): PortTask {
  return {
    id: row.id,
    jobId: row.job_id,
    parentId: row.parent_id,
    type: row.type,
    attempt: row.attempt,
    token,
    payload: parseJson(row.payload),
    timeoutMs: row.timeout_ms,
    // The claim started it just now. On this process's clock, which the worker's timeout timer
    // reads: the row's time is the store's (on PostgreSQL, the database's clock).
    startedAt: Date.now(),
  };
}

export class LocalPort implements DynataskPort {
  readonly longPoll = false;
  /** Other processes' wake-ups reach this one's workers only where the store carries them. */
  get hearsAllReady(): boolean {
    return this.store.onReady !== undefined;
  }
  private readonly workerId = `${hostname()}:${process.pid}:${newId()}`;
  private readonly jobWaiters = new Map<string, Set<() => void>>();
  private jobUnsub: (() => void) | undefined;

  constructor(
    readonly engine: Engine,
    readonly store: Store,
  ) {}

  get leaseMs(): number {
    return this.engine.leaseMs;
  }

  get where(): string {
    return this.store.kind;
  }

  // ---------------------------------------------------------------- worker

  async claim(q: ClaimQuery): Promise<PortTask[]> {
    const claimed = await this.engine.claim(q.namespace, q.types, q.limit, q.leaseMs, this.workerId);
    return claimed.map((c) => portTask(c.row, c.token));
  }

  async report(
    completed: Array<AttemptRef & { result: unknown }>,
    failed: Array<AttemptRef & { error: TaskError }>,
    next?: ClaimQuery,
  ): Promise<ReportResult> {
    const r = await this.engine.report(completed, failed, next && { ...next, workerId: this.workerId });
    return {
      completed: r.completed,
      failed: r.failed,
      claimed: r.claimed.map((c) => portTask(c.row, c.token)),
    };
  }

  release(items: AttemptRef[]): Promise<boolean[]> {
    return this.engine.release(items);
  }

  heartbeat(items: AttemptRef[], leaseMs?: number): Promise<HeartbeatStatus[]> {
    return this.engine.heartbeat(items, leaseMs);
  }

  nextRunAt(namespace: string, types: string[]): Promise<number | null> {
    return this.engine.nextRunAt(namespace, types);
  }

  onReady(namespace: string, types: string[], listener: () => void): () => void {
    const served = new Set(types);
    const offEngine = this.engine.onReady((ready) => {
      for (const t of ready) if (served.has(t)) return listener();
    });
    // Work made ready by other processes, when the store can tell (Postgres: LISTEN/NOTIFY).
    const offStore = this.store.onReady?.((notice) => {
      if (notice === null || (notice.namespace === namespace && notice.types.some((t) => served.has(t))))
        listener();
    });
    return () => {
      offEngine();
      offStore?.();
    };
  }

  onCancelled(listener: (taskIds: string[]) => void): () => void {
    return this.engine.onCancelled(listener);
  }

  spawn(parent: AttemptRef, specs: SpawnSpec[], keys: string[]) {
    return this.engine.spawn(parent, specs, keys);
  }

  spawnedKeys(parent: AttemptRef, keys: string[], transaction?: unknown) {
    return this.engine.spawnedKeys(parent.id, keys, transaction);
  }

  wait(ref: AttemptRef, spec: WaitSpec) {
    return this.engine.wait(ref, spec);
  }

  getStep(task: AttemptRef & { jobId: string }, name: string) {
    return this.engine.getStep(task.jobId, task.id, name);
  }

  putStep(ref: AttemptRef, name: string, value: unknown) {
    return this.engine.putStep(ref, name, value);
  }

  progress(ref: AttemptRef, value: unknown) {
    return this.engine.progress(ref, value);
  }

  // ---------------------------------------------------------------- operators and readers

  async submit(jobs: JobSpec[]) {
    return this.engine.submit(jobs);
  }

  async getJob(jobId: string): Promise<JobInfo> {
    const job = await this.store.getJob(jobId);
    if (!job) throw new NotFoundError(`job ${jobId} not found`);
    return this.jobInfo(job);
  }

  private jobInfo(job: JobRow): Promise<JobInfo> {
    return jobInfo(this.store, job);
  }

  async listJobs(q: JobQuery): Promise<JobSummary[]> {
    const rows = await this.store.listJobs(q);
    return rows.map(jobSummary);
  }

  getTask(taskId: string): Promise<TaskInfo> {
    return taskWithAttempts(this.store, taskId);
  }

  async tree(jobId: string, after: string | null, limit: number) {
    const p = await this.store.taskPage(jobId, after, limit);
    return { tasks: p.tasks.map(taskInfo), next: p.next };
  }

  async queuedTypes(namespace: string) {
    const [queued, live] = await Promise.all([
      this.store.queuedByType(namespace),
      this.store.liveTypes(namespace, Date.now() - 15_000),
    ]);
    const served = new Set(live);
    return queued.map((q) => ({ type: q.type, queued: q.n, served: served.has(q.type) }));
  }

  cancelJob(jobId: string, reason?: string): Promise<boolean> {
    return this.engine.cancelJob(jobId, reason);
  }

  cancelTask(taskId: string, reason?: string): Promise<boolean> {
    return this.engine.cancelTask(taskId, reason);
  }

  retryTask(taskId: string): Promise<void> {
    return this.engine.retryTask(taskId);
  }

  async purge(namespace: string, before: number): Promise<number> {
    let total = 0;
    for (;;) {
      const n = await this.store.purgeJobs(namespace, before, 500);
      total += n;
      if (n < 500) return total;
    }
  }

  configureTypes(namespace: string, types: TypeSettings[]): Promise<void> {
    return this.engine.configureTypes(typeConfigRows(namespace, types));
  }

  async workerStarted(namespace: string, types: string[]): Promise<() => Promise<void>> {
    // Every started instance sweeps expired leases, so a crashed process's tasks are retried.
    const sweepEvery = Math.max(50, Math.min(5000, Math.floor(this.engine.leaseMs / 2)));
    const sweeper = setInterval(() => {
      this.engine.expireLeases().catch((e) => console.error('dynatask lease sweeper:', e));
    }, sweepEvery);
    sweeper.unref();
    const touch = () => this.store.touchWorker(this.workerId, namespace, types, Date.now()).catch(() => {});
    await touch();
    const presence = setInterval(touch, 5000);
    presence.unref();
    return async () => {
      clearInterval(sweeper);
      clearInterval(presence);
      await this.store.removeWorker(this.workerId);
    };
  }

  subscribe(listener: (e: DynataskEvent) => void, jobId?: string): () => void {
    return this.engine.subscribe(jobId ? (e) => e.jobId === jobId && listener(e) : listener);
  }

  async waitForJob(jobId: string, pollMs: number): Promise<JobInfo> {
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

  async close(): Promise<void> {
    this.jobUnsub?.();
    await this.store.close();
  }
}
