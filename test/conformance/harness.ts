/**
 * What every conformance test shares: the target under test (a factory of Dynatask
 * instances on fresh databases), clean-up of what a test opened, and helpers that wait
 * for events instead of sleeping. Only the public API (src/index.ts) is used here.
 */
import { it } from 'vitest';
import type { Dynatask, DynataskEvent, JobHandle, JobInfo, TaskInfo, TaskState } from '../../src/index.js';

export interface TargetOptions {
  /** Lease of claimed tasks (heartbeats every third of it). */
  leaseMs?: number;
  /** Namespace of the instance's submissions and workers. */
  namespace?: string;
}

/** The store under test, as the conformance suite sees it. */
export interface ConformanceTarget {
  /** Opens dynatask on a new, empty database. */
  open(opts?: TargetOptions): Promise<Dynatask>;
  /**
   * Opens another instance on the same database as `dt`, with its own engine and worker,
   * as a second process would. Its `close()` must leave `dt` usable.
   */
  openPeer(dt: Dynatask, opts?: TargetOptions): Promise<Dynatask>;
  /**
   * False for instances that reach their engine through a server (`open` with an http://
   * URL): the tests that drive `dt.engine` directly, as a worker's internals would, and
   * `purge`, which runs where the database is, are not registered for them. The HTTP
   * protocol's own tests (test/server.*.test.ts) cover those calls on the wire.
   */
  inProcess?: boolean;
  /**
   * True for stores that run several transactions of one instance at once (PostgreSQL): the
   * events of unrelated tasks may then come out of the order of their times (docs/api.md,
   * Events). A task's own events, and a parent's settling after its children's, stay ordered.
   */
  overlapping?: boolean;
}

export interface Deferred<T = void> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(e: unknown): void;
}

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {});
  return { promise, resolve, reject };
}

/** Real time passing, for tests of time itself (delays, backoff, leases); never for synchronisation. */
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Rejects with a message naming what did not happen if `p` takes longer than `ms`. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, rej) => {
        timer = setTimeout(() => rej(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `check` (for facts no event announces) until it returns a value other than undefined/false. */
export async function pollUntil<T>(
  check: () => Promise<T | undefined | false>,
  what: string,
  ms = 5000,
  every = 10,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(every);
  }
}

/** Waits for a job to settle, failing with its task counts if it does not within `ms`. */
export async function settled(dt: Dynatask, job: JobHandle | string, ms = 5000): Promise<JobInfo> {
  const id = typeof job === 'string' ? job : job.id;
  try {
    return await within(dt.waitForJob(id, 50), ms, `job ${id} to settle`);
  } catch (e) {
    const info = await dt.getJob(id).catch(() => null);
    const counts = info ? Object.entries(info.counts).filter(([, n]) => n > 0) : 'unknown';
    throw new Error(`${(e as Error).message}; job state ${info?.state}, tasks ${JSON.stringify(counts)}`);
  }
}

/** Every task of a job, paging through `dt.tree`. */
export async function allTasks(dt: Dynatask, jobId: string, limit = 1000): Promise<TaskInfo[]> {
  const out: TaskInfo[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await dt.tree(jobId, after === undefined ? { limit } : { after, limit });
    out.push(...page.tasks);
    if (page.next === null) return out;
    after = page.next;
  }
}

export const SETTLED: readonly TaskState[] = ['succeeded', 'failed', 'cancelled', 'skipped'];

/** Tasks of the job that have not settled (should be none once the job has). */
export async function unsettledTasks(dt: Dynatask, jobId: string): Promise<TaskInfo[]> {
  return (await allTasks(dt, jobId)).filter((t) => !SETTLED.includes(t.state));
}

/**
 * Resolves with the task once it is in one of `states`: checked now, then on every event
 * of `dt` (the instance whose engine makes the transition), with a slow poll as a safety net.
 */
export async function untilState(
  dt: Dynatask,
  taskId: string,
  states: TaskState | TaskState[],
  ms = 5000,
): Promise<TaskInfo> {
  const want = Array.isArray(states) ? states : [states];
  let wake!: () => void;
  let woken = new Promise<void>((r) => (wake = r));
  const unsub = dt.subscribe((e) => {
    if (e.kind === 'task' && e.taskId === taskId) wake();
  });
  const deadline = Date.now() + ms;
  try {
    for (;;) {
      const t = await dt.getTask(taskId);
      if (want.includes(t.state)) return t;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`task ${taskId} (${t.type}) is ${t.state}, not ${want.join('|')}`);
      await Promise.race([woken, sleep(Math.min(100, left))]);
      woken = new Promise<void>((r) => (wake = r));
    }
  } finally {
    unsub();
  }
}

/** Records the events of one instance (optionally of one job) from now on. */
export class EventLog {
  readonly events: DynataskEvent[] = [];
  private waiters: Array<{ pred: (e: DynataskEvent) => boolean; done: (e: DynataskEvent) => void }> = [];
  readonly stop: () => void;

  constructor(dt: Dynatask, jobId?: string) {
    this.stop = dt.subscribe((e) => {
      this.events.push(e);
      this.waiters = this.waiters.filter((w) => {
        if (!w.pred(e)) return true;
        w.done(e);
        return false;
      });
    }, jobId);
  }

  /** The first event (already recorded or future) that matches. */
  async next(pred: (e: DynataskEvent) => boolean, ms = 5000, what = 'an event'): Promise<DynataskEvent> {
    const seen = this.events.find(pred);
    if (seen) return seen;
    const d = deferred<DynataskEvent>();
    this.waiters.push({ pred, done: d.resolve });
    return within(d.promise, ms, what);
  }

  /** The states a task went through, in order. */
  statesOf(taskId: string): TaskState[] {
    return this.events.flatMap((e) => (e.kind === 'task' && e.taskId === taskId ? [e.state] : []));
  }
}

/** Tracks the most handlers running at once, overall and per label. */
export class ConcurrencyMeter {
  private running = new Map<string, number>();
  readonly max = new Map<string, number>();

  async run<T>(label: string, fn: () => Promise<T>): Promise<T> {
    const n = (this.running.get(label) ?? 0) + 1;
    this.running.set(label, n);
    this.max.set(label, Math.max(this.max.get(label) ?? 0, n));
    try {
      return await fn();
    } finally {
      this.running.set(label, (this.running.get(label) ?? 1) - 1);
    }
  }

  maxOf(label: string): number {
    return this.max.get(label) ?? 0;
  }
}

/**
 * One per suite: opens instances for a test and closes them after it. Handlers should
 * block on `h.gate()` or `h.hold(signal)`, which clean-up releases, so a failing test never
 * leaves a handler hanging that would stall `close()`.
 */
export class Harness {
  private opened: Dynatask[] = [];
  private gates: Array<Deferred<unknown>> = [];
  private done = new AbortController();

  constructor(readonly target: ConformanceTarget) {}

  /** Whether one instance runs several transactions at once (see ConformanceTarget.overlapping). */
  get overlapping(): boolean {
    return this.target.overlapping === true;
  }

  /** Whether instances have their engine in this process (see ConformanceTarget.inProcess). */
  get inProcess(): boolean {
    return this.target.inProcess !== false;
  }

  /** Registers a test only for in-process targets: it drives `dt.engine` or purges. */
  inProcessIt(name: string, fn: () => Promise<void>): void {
    if (this.inProcess) it(name, fn);
  }

  async open(opts?: TargetOptions): Promise<Dynatask> {
    const dt = await this.target.open(opts);
    this.opened.push(dt);
    return dt;
  }

  async peer(dt: Dynatask, opts?: TargetOptions): Promise<Dynatask> {
    const p = await this.target.openPeer(dt, opts);
    this.opened.push(p);
    return p;
  }

  /** A promise the test resolves; released at clean-up at the latest. */
  gate<T = void>(): Deferred<T> {
    const d = deferred<T>();
    this.gates.push(d as Deferred<unknown>);
    return d;
  }

  /** Resolves when `signal` aborts (with its reason), or at clean-up. */
  hold(signal: AbortSignal): Promise<unknown> {
    return new Promise((resolve) => {
      if (signal.aborted) return resolve(signal.reason);
      signal.addEventListener('abort', () => resolve(signal.reason), { once: true });
      this.done.signal.addEventListener('abort', () => resolve('test over'), { once: true });
    });
  }

  async cleanup(): Promise<void> {
    this.done.abort();
    for (const g of this.gates.splice(0)) g.resolve(undefined);
    for (const dt of this.opened.splice(0).reverse()) {
      await within(dt.close(), 5000, 'close()').catch((e) => console.warn('conformance clean-up:', e));
    }
    this.done = new AbortController();
  }
}
