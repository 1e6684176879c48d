/**
 * The engine: every state transition of tasks and jobs, written once, on top of the Store
 * interface. Each operation is one transaction and takes a batch. This class is the engine's
 * face (`dt.engine`, the server, the local port); the transitions live in one module per kind
 * of operation:
 *
 *   spawn.ts     submit, spawn: creating jobs and tasks (→ queued, blocked)
 *   claim.ts     claim: queued → running, within concurrency limits
 *   finish.ts    complete, fail, report, release, heartbeat, expireLeases: ending attempts
 *   wait.ts      wait (running → waiting), progress, steps
 *   operator.ts  retryTask, cancelTask, cancelJob
 *   settings.ts  type settings
 *   settle.ts    how a settled task propagates (parent, dependents, job); terminate
 *   state.ts     what they share: the store, listeners, and `run` (one transaction)
 *
 * Completion tracking is exact and O(1) amortised per task: a task's row counts its
 * unsettled children (`open_children`); when a task settles, its parent's counter is
 * adjusted in the same transaction, once per parent per batch, and the parent settles
 * (or resumes) when its counter reaches zero. Nothing ever scans a tree to decide this.
 */

import type { ReadyNotice, Store } from '../store/store.js';
import * as claiming from './claim.js';
import type {
  AttemptRef,
  ClaimedTask,
  EngineOptions,
  SpawnSpec,
  TypeConfigRow,
  WaitResult,
  WaitSpec,
} from './defs.js';
import * as finishing from './finish.js';
import * as operator from './operator.js';
import * as settings from './settings.js';
import * as spawning from './spawn.js';
import { EngineState } from './state.js';
import type { DynataskEvent, JobState, SubmitOptions, TaskError, TaskHandle } from './types.js';
import * as waiting from './wait.js';

// Importers of these from engine.ts keep working; the engine's modules import defs.ts.
export {
  type AttemptRef,
  type ClaimedTask,
  DEFAULTS,
  type EngineOptions,
  type SpawnSpec,
  type WaitResult,
  type WaitSpec,
} from './defs.js';

export class Engine {
  private readonly s: EngineState;

  constructor(store: Store, opts: EngineOptions = {}) {
    this.s = new EngineState(store, opts);
  }

  get store(): Store {
    return this.s.store;
  }

  /** Lease given to a claimed task; heartbeats extend it. */
  get leaseMs(): number {
    return this.s.leaseMs;
  }

  /** Where errors thrown by event listeners go; they never fail the operation that emitted. */
  get onListenerError(): (e: unknown) => void {
    return this.s.onListenerError;
  }

  set onListenerError(f: (e: unknown) => void) {
    this.s.onListenerError = f;
  }

  // ---------------------------------------------------------------- subscriptions

  /** Subscribes to events of transitions made by this process, in commit order. */
  subscribe(listener: (e: DynataskEvent) => void): () => void {
    this.s.listeners.add(listener);
    return () => this.s.listeners.delete(listener);
  }

  /** Called after a commit that made tasks of these types ready to claim. */
  onReady(listener: (types: Set<string>) => void): () => void {
    this.s.readyListeners.add(listener);
    return () => this.s.readyListeners.delete(listener);
  }

  /**
   * Called when another process made tasks ready (PostgreSQL's notifications; `null`: maybe
   * any). Undefined when the store cannot tell (SQLite): then nobody hears other processes.
   */
  onReadyElsewhere(listener: (notice: ReadyNotice) => void): (() => void) | undefined {
    return this.s.store.onReady?.(listener);
  }

  /** Whether `onReadyElsewhere` hears other processes' commits. */
  get hearsOtherProcesses(): boolean {
    return this.s.store.onReady !== undefined;
  }

  /**
   * Called after a commit that settled jobs. Unlike `subscribe`, listening here costs the
   * hot path nothing: task events are only built while someone subscribes to them.
   */
  onJobSettled(listener: (jobs: Array<{ jobId: string; state: JobState }>) => void): () => void {
    this.s.jobListeners.add(listener);
    return () => this.s.jobListeners.delete(listener);
  }

  /** Called after a commit that cancelled running tasks, so local handlers abort at once. */
  onCancelled(listener: (taskIds: string[]) => void): () => void {
    this.s.cancelListeners.add(listener);
    return () => this.s.cancelListeners.delete(listener);
  }

  // ---------------------------------------------------------------- type settings (settings.ts)

  /** Stores per-type settings shared by every process (retry policy, timeout, concurrency limit). */
  configureTypes(rows: TypeConfigRow[]): Promise<void> {
    return settings.configureTypes(this.s, rows);
  }

  /** Reloads a namespace's shared per-type settings (other processes may have registered types); returns them. */
  loadTypeConfigs(namespace: string): Promise<TypeConfigRow[]> {
    return settings.loadTypeConfigs(this.s, namespace);
  }

  /** Queued and running tasks by namespace and type, across every process on the database. */
  countTasks(): Promise<Array<{ namespace: string; type: string; state: 'queued' | 'running'; n: number }>> {
    return this.s.store.countTasks();
  }

  // ---------------------------------------------------------------- creating tasks (spawn.ts)

  /** Creates jobs, each with its root task, atomically; idempotent under `options.jobId`. */
  submit(
    specs: Array<{ type: string; payload?: unknown; options?: SubmitOptions }>,
  ): Promise<Array<{ jobId: string; rootTaskId: string; created: boolean }>> {
    return spawning.submit(this.s, specs);
  }

  /** Spawns children of a running task; `keys[i]` is the idempotency key of `specs[i]`. */
  spawn(parentRef: AttemptRef, specs: SpawnSpec[], keys: string[]): Promise<TaskHandle[]> {
    return spawning.spawn(this.s, parentRef, specs, keys);
  }

  /** Of these spawn keys, those a child of `parentId` has (committed, or in `external`). */
  spawnedKeys(parentId: string, keys: string[], external?: unknown): Promise<string[]> {
    return spawning.spawnedKeys(this.s, parentId, keys, external);
  }

  // ---------------------------------------------------------------- claiming (claim.ts)

  /** Claims up to `limit` ready tasks of the given types, best first, within concurrency limits. */
  claim(
    namespace: string,
    types: string[],
    limit: number,
    leaseMs?: number,
    workerId?: string | null,
  ): Promise<ClaimedTask[]> {
    return claiming.claim(this.s, namespace, types, limit, leaseMs, workerId);
  }

  /** Earliest time a queued task of these types becomes due (for the worker's timer). */
  nextRunAt(namespace: string, types: string[]): Promise<number | null> {
    return claiming.nextRunAt(this.s, namespace, types);
  }

  // ---------------------------------------------------------------- finishing attempts (finish.ts)

  /** Records successful handler returns; per item, whether the attempt still held the task. */
  complete(items: Array<AttemptRef & { result: unknown }>): Promise<boolean[]> {
    return finishing.complete(this.s, items);
  }

  /** A worker's round trip: completions, failures and the next claim in one transaction. */
  report(
    completed: Array<AttemptRef & { result: unknown }>,
    failed: Array<AttemptRef & { error: TaskError }>,
    next?: { namespace: string; types: string[]; limit: number; leaseMs?: number; workerId?: string },
  ): Promise<{ completed: boolean[]; failed: boolean[]; claimed: ClaimedTask[] }> {
    return finishing.report(this.s, completed, failed, next);
  }

  /** Records failed attempts: retried with backoff while allowed, else the task fails. */
  fail(items: Array<AttemptRef & { error: TaskError }>): Promise<boolean[]> {
    return finishing.fail(this.s, items);
  }

  /** Gives claimed tasks back, queued again at once without counting an attempt. */
  release(items: AttemptRef[]): Promise<boolean[]> {
    return finishing.release(this.s, items);
  }

  /** Renews the leases of running attempts; reports, per item, `ok`, `cancelled` or `lost`. */
  heartbeat(items: AttemptRef[], leaseMs?: number): Promise<Array<'ok' | 'cancelled' | 'lost'>> {
    return finishing.heartbeat(this.s, items, leaseMs);
  }

  /** Fails the attempts whose lease expired (crashed or stalled workers); returns how many. */
  expireLeases(limit?: number): Promise<number> {
    return finishing.expireLeases(this.s, limit);
  }

  // ---------------------------------------------------------------- waits, progress, steps (wait.ts)

  /** A durable wait: the awaited children's outcomes, or the task suspends until they settle. */
  wait(ref: AttemptRef, spec: WaitSpec): Promise<WaitResult> {
    return waiting.wait(this.s, ref, spec);
  }

  progress(ref: AttemptRef, value: unknown): Promise<void> {
    return waiting.progress(this.s, ref, value);
  }

  getStep(jobId: string, taskId: string, name: string): Promise<{ found: boolean; value: unknown }> {
    return waiting.getStep(this.s, jobId, taskId, name);
  }

  putStep(ref: AttemptRef, name: string, value: unknown): Promise<void> {
    return waiting.putStep(this.s, ref, name, value);
  }

  // ---------------------------------------------------------------- operator actions (operator.ts)

  /** Runs a failed task again with a fresh budget, reopening what its failure settled. */
  retryTask(taskId: string, failedAttempt?: number): Promise<void> {
    return operator.retryTask(this.s, taskId, failedAttempt);
  }

  /** Cancels a task and every unsettled task below it. Returns false if it had already settled. */
  cancelTask(taskId: string, reason?: string): Promise<boolean> {
    return operator.cancelTask(this.s, taskId, reason);
  }

  /** Cancels a job: its root task and everything below it. */
  cancelJob(jobId: string, reason?: string): Promise<boolean> {
    return operator.cancelJob(this.s, jobId, reason);
  }
}
