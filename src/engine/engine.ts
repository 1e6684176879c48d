/**
 * The engine: every state transition of tasks and jobs, written once, on top of the Store
 * interface. Each public method is one transaction and takes a batch.
 *
 * Completion tracking is exact and O(1) amortised per task: a task's row counts its
 * unsettled children (`open_children`); when a task settles, its parent's counter is
 * adjusted in the same transaction, once per parent per batch, and the parent settles
 * (or resumes) when its counter reaches zero. Nothing ever scans a tree to decide this.
 */

import type {
  ClaimRow,
  JobRow,
  KeyedRow,
  OutcomeRow,
  Store,
  StoreTx,
  TaskCore,
  TaskPatch,
  TaskRow,
  TypeConfigRow,
} from '../store/store.js';
import { Batch, releaseSlots, SLOT_KEY, SLOT_TYPE, typeSlot } from './batch.js';
import { refuseCycles, refuseWaitsOnAncestors } from './dependencies.js';
import { ConflictError, NotFoundError, StaleAttemptError, ValidationError } from './errors.js';
import { newId } from './ids.js';
import {
  type DepInfo,
  dependencyError,
  errorJson,
  newTaskRow,
  outcomeOf,
  serialiseResults,
  toJson,
  validateOptions,
  validateType,
} from './rows.js';
import { type Settling, settle, settledByChildren, terminate } from './settle.js';
import {
  type DynataskEvent,
  isSettled,
  type JobState,
  type Outcome,
  type SpawnOptions,
  type SubmitOptions,
  type TaskError,
  type TaskHandle,
} from './types.js';

/** Defaults used when neither the task nor its type says otherwise. */
export const DEFAULTS = {
  namespace: 'default',
  maxAttempts: 3,
  backoffMs: 1000,
  maxBackoffMs: 300_000,
  leaseMs: 30_000,
  /** Grace after a task's timeout before its lease expires, so the worker reports the timeout itself. */
  timeoutGraceMs: 1000,
};

/** One task to create: the type, its JSON payload and options. */
export interface SpawnSpec {
  type: string;
  payload?: unknown;
  options?: SpawnOptions;
}

/** A task handed to a worker by `claim`. */
export interface ClaimedTask {
  row: ClaimRow;
  token: number;
}

/** Identifies the attempt that holds a running task. */
export interface AttemptRef {
  id: string;
  token: number;
}

export type WaitSpec = { all: true } | { all: false; ids: string[] };

export type WaitResult = { suspended: true } | { suspended: false; outcomes: Outcome[] };

export interface EngineOptions {
  /** Lease given to a claimed task; heartbeats extend it. */
  leaseMs?: number;
}

export class Engine {
  readonly leaseMs: number;
  private readonly listeners = new Set<(e: DynataskEvent) => void>();
  private readonly readyListeners = new Set<(types: Set<string>) => void>();
  private readonly cancelListeners = new Set<(taskIds: string[]) => void>();
  private readonly jobListeners = new Set<(jobs: Array<{ jobId: string; state: JobState }>) => void>();
  private readonly typeConfigs = new Map<string, TypeConfigRow>();
  /** Namespaces seen with concurrency limits, until when (see claimIn). */
  private readonly limitedUntil = new Map<string, number>();
  /** Where errors thrown by event listeners go; they never fail the operation that emitted. */
  onListenerError: (e: unknown) => void = (e) => console.error('dynatask: an event listener threw:', e);

  constructor(
    readonly store: Store,
    opts: EngineOptions = {},
  ) {
    this.leaseMs = opts.leaseMs ?? DEFAULTS.leaseMs;
  }

  // ---------------------------------------------------------------- subscriptions

  /** Subscribes to events of transitions made by this process, in commit order. */
  subscribe(listener: (e: DynataskEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Called after a commit that made tasks of these types ready to claim. */
  onReady(listener: (types: Set<string>) => void): () => void {
    this.readyListeners.add(listener);
    return () => this.readyListeners.delete(listener);
  }

  /**
   * Called after a commit that settled jobs. Unlike `subscribe`, listening here costs the
   * hot path nothing: task events are only built while someone subscribes to them.
   */
  onJobSettled(listener: (jobs: Array<{ jobId: string; state: JobState }>) => void): () => void {
    this.jobListeners.add(listener);
    return () => this.jobListeners.delete(listener);
  }

  /** Called after a commit that cancelled running tasks, so local handlers abort at once. */
  onCancelled(listener: (taskIds: string[]) => void): () => void {
    this.cancelListeners.add(listener);
    return () => this.cancelListeners.delete(listener);
  }

  /**
   * Runs `fn` in one store transaction, then tells listeners what it did. In the caller's own
   * transaction (`external`), nothing is told in-process: it has not committed yet, and may
   * never; other processes and this one's workers learn of new work from the store's
   * notifications, which PostgreSQL delivers on commit only.
   */
  private async run<T>(fn: (tx: StoreTx, b: Batch) => Promise<T>, external?: unknown): Promise<T> {
    let batch!: Batch;
    const body = async (tx: StoreTx) => {
      batch = new Batch(tx.now(), this.listeners.size > 0);
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
    const out = await this.store.transaction(body);
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
    return out;
  }

  // ---------------------------------------------------------------- type settings

  /** Stores per-type settings shared by every process (retry policy, timeout, concurrency limit). */
  async configureTypes(rows: TypeConfigRow[]): Promise<void> {
    await this.run(async (tx) => {
      await tx.upsertTypeConfigs(rows);
      for (const r of rows) {
        // The last registration holds: one without a limit removes the type's limit.
        await tx.setSlotMax(r.namespace, typeSlot(r.type), r.concurrency);
        this.typeConfigs.set(`${r.namespace}\0${r.type}`, r);
      }
    });
  }

  /** Reloads the shared per-type settings (other processes may have registered types). */
  async loadTypeConfigs(namespace: string): Promise<void> {
    for (const r of await this.store.typeConfigs(namespace))
      this.typeConfigs.set(`${namespace}\0${r.type}`, r);
  }

  private typeConfig(namespace: string, type: string): TypeConfigRow | undefined {
    return this.typeConfigs.get(`${namespace}\0${type}`);
  }

  /**
   * The type settings in force in the database for these tasks' types (keyed namespace NUL
   * type), read in the transaction: retry decisions must not use this process's copy, which
   * misses types registered by other processes, and namespaces it never served (the sweeper
   * fails expired leases of every namespace). Only types some task takes a default from.
   */
  private async typeConfigsIn(
    tx: StoreTx,
    rows: Array<Pick<TaskCore, 'namespace' | 'type' | 'max_attempts' | 'backoff_ms' | 'max_backoff_ms'>>,
  ): Promise<Map<string, TypeConfigRow>> {
    const keys = new Map<string, { namespace: string; type: string }>();
    for (const r of rows)
      if (r.max_attempts === null || r.backoff_ms === null || r.max_backoff_ms === null)
        keys.set(`${r.namespace}\0${r.type}`, { namespace: r.namespace, type: r.type });
    if (!keys.size) return new Map();
    return new Map(
      (await tx.getTypeConfigs([...keys.values()])).map((c) => [`${c.namespace}\0${c.type}`, c]),
    );
  }

  // ---------------------------------------------------------------- creating tasks

  /**
   * Creates jobs, each with its root task, atomically. A job whose `options.jobId` exists
   * already is returned as it is (`created: false`): resubmitting after a lost answer is safe.
   * With `options.transaction` (a PostgreSQL client inside the caller's BEGIN), the jobs are
   * written in the caller's transaction and exist if and only if it commits.
   */
  async submit(
    specs: Array<{ type: string; payload?: unknown; options?: SubmitOptions }>,
  ): Promise<Array<{ jobId: string; rootTaskId: string; created: boolean }>> {
    specs.forEach((s, i) => {
      validateType(s.type, `jobs[${i}]`);
      validateOptions(s.options, `jobs[${i}].options`);
    });
    const external = sharedTransaction(
      specs.map((s) => s.options?.transaction),
      'jobs',
    );
    return this.run(async (tx, b) => {
      const asked = specs.flatMap((s) => (s.options?.jobId ? [s.options.jobId.toLowerCase()] : []));
      const known = new Map<string, JobRow>();
      if (asked.length) for (const j of await tx.getJobs(asked)) known.set(j.id, j);
      const jobs: JobRow[] = [];
      const tasks: TaskRow[] = [];
      const out: Array<{ jobId: string; rootTaskId: string; created: boolean }> = [];
      for (const s of specs) {
        const existing = s.options?.jobId ? known.get(s.options.jobId.toLowerCase()) : undefined;
        if (existing) {
          out.push({ jobId: existing.id, rootTaskId: existing.root_task_id, created: false });
          continue;
        }
        const namespace = s.options?.namespace ?? DEFAULTS.namespace;
        const jobId = s.options?.jobId?.toLowerCase() ?? newId();
        const row = newTaskRow(jobId, namespace, null, null, s, b.now);
        const job: JobRow = {
          id: jobId,
          namespace,
          type: s.type,
          root_task_id: row.id,
          state: 'running',
          created_at: b.now,
          settled_at: null,
        };
        jobs.push(job);
        known.set(jobId, job); // the same id twice in one call: the second gets the first
        tasks.push(row);
        out.push({ jobId, rootTaskId: row.id, created: true });
        if (s.options?.concurrency)
          await tx.setSlotMax(namespace, row.concurrency_key!, s.options.concurrency.limit);
        b.taskEvent(row, 'queued');
        b.ready(row);
      }
      await tx.insertJobs(jobs);
      await tx.insertTasks(tasks);
      return out;
    }, external);
  }

  /**
   * Spawns children of a running task. `keys[i]` is the idempotency key of `specs[i]`
   * (explicit, or derived from the order of spawn calls by the caller). Existing children
   * with the same key, and tasks of the job with the same dedup key, are returned instead.
   */
  async spawn(parentRef: AttemptRef, specs: SpawnSpec[], keys: string[]): Promise<TaskHandle[]> {
    specs.forEach((s, i) => {
      validateType(s.type, `children[${i}]`);
      validateOptions(s.options, `children[${i}].options`);
    });
    const external = sharedTransaction(
      specs.map((s) => s.options?.transaction),
      'children',
    );
    return this.run(async (tx, b) => {
      const parent = await this.getRunning(tx, parentRef);
      const handles: TaskHandle[] = new Array(specs.length);
      const existing = new Map((await tx.findChildrenByKey(parent.id, keys)).map((r) => [r.spawn_key!, r]));
      const dedupKeys = specs.flatMap((s) => (s.options?.dedupKey !== undefined ? [s.options.dedupKey] : []));
      const dedup = new Map(
        dedupKeys.length
          ? (await tx.findByDedupKey(parent.job_id, dedupKeys)).map((r) => [r.dedup_key!, r])
          : [],
      );
      const fresh: Array<{ row: TaskRow; spec: SpawnSpec; index: number }> = [];
      const byKey = new Map<string, KeyedRow>();
      const seenDedup = new Map<string, TaskRow>();
      specs.forEach((spec, i) => {
        const key = keys[i]!;
        const found = existing.get(key) ?? dedup.get(spec.options?.dedupKey ?? '\0');
        const sameBatch =
          spec.options?.dedupKey !== undefined ? seenDedup.get(spec.options.dedupKey) : undefined;
        // A key repeated within this call names the task its first use created.
        const hit = found ?? sameBatch ?? byKey.get(key);
        if (hit) {
          handles[i] = {
            id: hit.id,
            type: hit.type,
            key: hit.spawn_key ?? key,
            created: false,
            parentId: hit.parent_id,
          };
          byKey.set(key, hit);
          return;
        }
        const row = newTaskRow(parent.job_id, parent.namespace, parent.id, key, spec, b.now);
        fresh.push({ row, spec, index: i });
        byKey.set(key, row);
        if (row.dedup_key !== null) seenDedup.set(row.dedup_key, row);
        handles[i] = { id: row.id, type: row.type, key, created: true, parentId: parent.id };
      });

      // Resolve `after` dependencies: task ids of this job, or spawn keys of siblings.
      const deps: Array<{ row: TaskRow; on: string[]; index: number }> = [];
      const depIds = new Set<string>();
      const refs = fresh.flatMap((f) =>
        (f.spec.options?.after ?? []).flatMap((r) => (typeof r === 'string' && !byKey.has(r) ? [r] : [])),
      );
      // Keys of siblings spawned by earlier calls; what is not a sibling's key must be a task id.
      if (refs.length)
        for (const r of await tx.findChildrenByKey(parent.id, refs)) byKey.set(r.spawn_key!, r);
      for (const f of fresh) {
        const after = f.spec.options?.after;
        if (!after?.length) continue;
        // A dependency named twice (by key and by handle, or in two lists spread together)
        // counts once: the stores keep one edge per pair.
        const on = new Set<string>();
        for (const ref of after) {
          const r = typeof ref === 'string' ? ref : ref.id;
          const sibling = byKey.get(r);
          const id = sibling ? sibling.id : r;
          if (id === f.row.id)
            throw new ValidationError(`children[${f.index}].after refers to the task itself`);
          on.add(id);
          depIds.add(id);
        }
        deps.push({ row: f.row, on: [...on], index: f.index });
      }
      const depRows = new Map<string, DepInfo & Pick<TaskCore, 'parent_id'>>();
      const freshIds = new Map(fresh.map((f) => [f.row.id, f.row]));
      const unknown = [...depIds].filter((id) => !freshIds.has(id));
      for (const r of unknown.length ? await tx.getTasks(unknown) : []) depRows.set(r.id, r);
      for (const [id, r] of freshIds) depRows.set(id, r);
      const skipNow: Array<{ row: TaskRow; error: TaskError }> = [];
      for (const d of deps) {
        let remaining = 0;
        let failedDep: DepInfo | undefined;
        for (const id of d.on) {
          const dep = depRows.get(id);
          if (!dep || dep.job_id !== parent.job_id) {
            throw new ValidationError(
              `after: ${JSON.stringify(id)} is neither a task of job ${parent.job_id} nor a sibling's spawn key`,
            );
          }
          if (!isSettled(dep.state) || freshIds.has(dep.id)) remaining++;
          else if (dep.state !== 'succeeded' && !d.row.run_regardless) failedDep ??= dep;
        }
        d.row.deps_remaining = remaining;
        if (remaining > 0) d.row.state = 'blocked';
        if (failedDep) {
          d.row.state = 'blocked';
          skipNow.push({ row: d.row, error: dependencyError(failedDep) });
        }
      }
      // Before anything is written: a dependency that could only settle after the new task
      // would leave both unsettled for ever.
      refuseCycles(deps, freshIds);
      await refuseWaitsOnAncestors(tx, parent, deps, depRows, freshIds);

      const rows = fresh.map((f) => f.row);
      for (const f of fresh) {
        const c = f.spec.options?.concurrency;
        if (c) await tx.setSlotMax(parent.namespace, f.row.concurrency_key!, c.limit);
      }
      const inserted = await tx.insertTasks(rows);
      if (inserted.size !== rows.length) {
        // Only another transaction racing on the same dedup key gets here (Postgres); the
        // caller retries and then finds the winner's task.
        throw new StaleAttemptError('a concurrent spawn took the same key; retry the spawn');
      }
      await tx.insertDeps(
        deps.flatMap((d) => d.on.map((on) => ({ job_id: parent.job_id, depends_on: on, task_id: d.row.id }))),
      );
      if (rows.length) {
        await tx.updateTasks([{ id: parent.id, open_children: parent.open_children + rows.length }]);
        parent.open_children += rows.length;
      }
      for (const r of rows) {
        b.taskEvent(r, r.state);
        if (r.state === 'queued') b.ready(r);
      }
      if (skipNow.length) {
        await settle(
          tx,
          b,
          skipNow.map((s) => ({ row: s.row, state: 'skipped' as const, error: s.error })),
        );
      }
      return handles;
    }, external);
  }

  /**
   * Of these spawn keys, those a child of `parentId` has: committed, or, in the caller's
   * transaction `external`, written by it too. Tells a handler's context whether its spawns
   * in a caller's transaction were kept or rolled back.
   */
  async spawnedKeys(parentId: string, keys: string[], external?: unknown): Promise<string[]> {
    if (!keys.length) return [];
    const find = (tx: StoreTx) => tx.findChildrenByKey(parentId, keys);
    const rows =
      external !== undefined && this.store.transactionWith
        ? await this.store.transactionWith(external, find)
        : await this.store.transaction(find);
    return rows.map((r) => r.spawn_key!);
  }

  // ---------------------------------------------------------------- claiming

  /**
   * Claims up to `limit` ready tasks of the given types, best first, honouring the
   * concurrency limits of types and keys across all workers, and leases them.
   */
  async claim(
    namespace: string,
    types: string[],
    limit: number,
    leaseMs = this.leaseMs,
    workerId: string | null = null,
  ): Promise<ClaimedTask[]> {
    if (limit <= 0 || types.length === 0) return [];
    return this.run((tx, b) => this.claimIn(tx, b, namespace, types, limit, leaseMs, workerId));
  }

  private async claimIn(
    tx: StoreTx,
    b: Batch,
    namespace: string,
    types: string[],
    limit: number,
    leaseMs: number,
    workerId: string | null,
  ): Promise<ClaimedTask[]> {
    if (limit <= 0 || types.length === 0) return [];
    const typeTimeouts: Record<string, number> = {};
    for (const type of types) {
      const t = this.typeConfig(namespace, type)?.timeout_ms;
      if (t != null) typeTimeouts[type] = t;
    }
    if (tx.claimReady && !((this.limitedUntil.get(namespace) ?? 0) > b.now)) {
      // One statement when the namespace has no concurrency limits; else the general path.
      const rows = await tx.claimReady({
        namespace,
        types,
        now: b.now,
        limit,
        leaseMs,
        graceMs: DEFAULTS.timeoutGraceMs,
        typeTimeouts,
        workerId,
      });
      if (rows.length) {
        rows.sort((x, y) => y.priority - x.priority || x.run_at - y.run_at || (x.id < y.id ? -1 : 1));
        for (const row of rows) b.taskEvent(row, 'running');
        return rows.map((row) => ({ row, token: row.run_token }));
      }
    }
    // Only the slots this claim may take: its types' limits, locked now, and below the slots
    // of its candidates' keys; of the other keys, only the full ones (their tasks are passed over).
    const typeSlots = await tx.getSlots(namespace, types.map(typeSlot));
    const { any: withKeys, full: fullKeys } = await tx.fullKeySlots(namespace);
    // A namespace with limits skips the one-statement claim for a while: it would claim nothing.
    if (tx.claimReady && (typeSlots.length || withKeys)) this.limitedUntil.set(namespace, b.now + 5000);
    const free = new Map<string, number>();
    for (const s of typeSlots) free.set(s.key, s.max - s.running);
    let candidates: Awaited<ReturnType<StoreTx['claimCandidates']>> = [];
    for (const type of types) {
      const want = Math.min(limit, free.get(typeSlot(type)) ?? limit);
      if (want <= 0) continue;
      const rows = await tx.claimCandidates({
        namespace,
        type,
        now: b.now,
        limit: want,
        excludeKeys: fullKeys,
        withKeys,
      });
      candidates = candidates.length ? candidates.concat(rows) : rows;
    }
    if (types.length > 1)
      candidates.sort((x, y) => y.priority - x.priority || x.run_at - y.run_at || (x.id < y.id ? -1 : 1));
    const keys = [
      ...new Set(candidates.flatMap((c) => (c.concurrency_key !== null ? [c.concurrency_key] : []))),
    ];
    // Read fresh under lock: a key's slot may have filled since fullKeySlots looked.
    for (const s of await tx.getSlots(namespace, keys)) free.set(s.key, s.max - s.running);
    // Choose within the free slots of each type and key; the rest stay queued.
    const ids: string[] = [];
    const slotsHeld: Record<string, number> = {};
    for (const c of candidates) {
      if (ids.length >= limit) break;
      let held = 0;
      const ts = typeSlot(c.type);
      const tFree = free.get(ts);
      if (tFree !== undefined) {
        if (tFree <= 0) continue;
        held |= SLOT_TYPE;
      }
      const kFree = c.concurrency_key !== null ? free.get(c.concurrency_key) : undefined;
      if (c.concurrency_key !== null) {
        // No slot: it was just deleted as unused, and the spawn of this task makes it again;
        // the task waits for the next claim rather than run without its limit.
        if (kFree === undefined || kFree <= 0) continue;
        held |= SLOT_KEY;
      }
      if (held & SLOT_TYPE) {
        free.set(ts, tFree! - 1);
        b.slot(namespace, ts, 1);
      }
      if (held & SLOT_KEY) {
        free.set(c.concurrency_key!, kFree! - 1);
        b.slot(namespace, c.concurrency_key!, 1);
      }
      if (held) slotsHeld[c.id] = held;
      ids.push(c.id);
    }
    if (!ids.length) return [];
    const rows = await tx.claimByIds({
      ids,
      now: b.now,
      leaseMs,
      graceMs: DEFAULTS.timeoutGraceMs,
      typeTimeouts,
      slotsHeld,
      workerId,
    });
    if (types.length > 1 || rows.length > 1) {
      const order = new Map(ids.map((id, i) => [id, i]));
      rows.sort((x, y) => order.get(x.id)! - order.get(y.id)!);
    }
    for (const row of rows) b.taskEvent(row, 'running');
    return rows.map((row) => ({ row, token: row.run_token }));
  }

  /** Earliest time a queued task of these types becomes due (for the worker's timer). */
  async nextRunAt(namespace: string, types: string[]): Promise<number | null> {
    return this.store.nextRunAt(namespace, types);
  }

  private leaseUntil(now: number, startedAt: number, timeoutMs: number | null, leaseMs: number): number {
    const lease = now + leaseMs;
    if (timeoutMs === null) return lease;
    return Math.min(lease, startedAt + timeoutMs + DEFAULTS.timeoutGraceMs);
  }

  private async getRunning(tx: StoreTx, ref: AttemptRef): Promise<TaskCore> {
    tx.assertNotHeldByCaller?.(ref.id); // a ctx call while the handler's own transaction holds the task
    const [row] = await tx.getTasks([ref.id]);
    if (!row) throw new NotFoundError(`task ${ref.id} not found`);
    if (row.state !== 'running' || row.run_token !== ref.token)
      throw new StaleAttemptError(
        `task ${ref.id} is no longer held by attempt token ${ref.token} (state ${row.state}, token ${row.run_token})`,
      );
    return row;
  }

  /** Loads the tasks that are still held by the given attempts; the others are stale. */
  private async heldRows(tx: StoreTx, refs: AttemptRef[]): Promise<Map<string, TaskCore>> {
    const rows = await tx.getTasks(refs.map((r) => r.id));
    const byId = new Map(rows.map((r) => [r.id, r]));
    const held = new Map<string, TaskCore>();
    for (const ref of refs) {
      const r = byId.get(ref.id);
      if (r && r.state === 'running' && r.run_token === ref.token) held.set(r.id, r);
    }
    return held;
  }

  // ---------------------------------------------------------------- finishing attempts

  /**
   * Records successful handler returns. A task with no open children settles at once;
   * otherwise it waits in `completing` for the last of them. Returns, per item, whether
   * the attempt still held the task (false: stale, nothing changed).
   */
  async complete(items: Array<AttemptRef & { result: unknown }>): Promise<boolean[]> {
    const { ok, bad } = serialiseResults(items);
    return this.run(async (tx, b) => {
      const done = await this.completeIn(tx, b, items, ok);
      if (bad.length) await this.failIn(tx, b, bad);
      return done;
    });
  }

  /**
   * A worker's round trip: records completions and failures, then claims the next batch,
   * all in one transaction.
   */
  async report(
    completed: Array<AttemptRef & { result: unknown }>,
    failed: Array<AttemptRef & { error: TaskError }>,
    next?: { namespace: string; types: string[]; limit: number; leaseMs?: number; workerId?: string },
  ): Promise<{ completed: boolean[]; failed: boolean[]; claimed: ClaimedTask[] }> {
    const { ok, bad } = serialiseResults(completed);
    const failing = bad.length ? failed.concat(bad) : failed;
    return this.run(async (tx, b) => ({
      completed: completed.length ? await this.completeIn(tx, b, completed, ok) : [],
      failed: failing.length ? (await this.failIn(tx, b, failing)).slice(0, failed.length) : [],
      claimed: next
        ? await this.claimIn(
            tx,
            b,
            next.namespace,
            next.types,
            next.limit,
            next.leaseMs ?? this.leaseMs,
            next.workerId ?? null,
          )
        : [],
    }));
  }

  private async completeIn(
    tx: StoreTx,
    b: Batch,
    items: AttemptRef[],
    results: Array<{ id: string; token: number; result: string | null }>,
  ): Promise<boolean[]> {
    // One guarded statement per task moves it to succeeded or completing; stale attempts match nothing.
    const done = await tx.completeRunning(results, b.now);
    const ok = new Set<string>();
    const toSettle: Settling[] = [];
    for (const row of done) {
      ok.add(row.id);
      releaseSlots(b, { ...row, state: 'running' });
      if (row.state === 'succeeded') {
        toSettle.push({ row, state: 'succeeded', written: true });
      } else if (row.open_children === 0) {
        toSettle.push(settledByChildren(row)); // an unobserved child failure
      } else {
        b.taskEvent(row, 'completing');
      }
    }
    await settle(tx, b, toSettle);
    // A completion sent again after a lost answer: its attempt's result is already recorded.
    const again = await this.recorded(
      tx,
      items.filter((i) => !ok.has(i.id)),
      (r) => r.handler_done === 1,
    );
    const reported = new Set<string>();
    return items.map((i) => {
      if (reported.has(i.id)) return false; // the same attempt twice in one call counts once
      reported.add(i.id);
      return ok.has(i.id) || again.has(i.id);
    });
  }

  /**
   * Of attempts that no longer hold their task, those whose outcome was recorded: the task
   * still carries their token (no later attempt claimed it) and `done` says it is theirs.
   */
  private async recorded(
    tx: StoreTx,
    refs: AttemptRef[],
    done: (r: TaskCore) => boolean,
  ): Promise<Set<string>> {
    if (!refs.length) return new Set();
    const token = new Map(refs.map((r) => [r.id, r.token]));
    const rows = await tx.getTasks([...token.keys()]);
    return new Set(
      rows
        .filter((r) => r.run_token === token.get(r.id) && r.state !== 'running' && done(r))
        .map((r) => r.id),
    );
  }

  /**
   * Records failed attempts: retried with exponential backoff and jitter while attempts
   * remain and the error is retryable, otherwise the task fails and its unsettled
   * descendants are cancelled.
   */
  async fail(items: Array<AttemptRef & { error: TaskError }>): Promise<boolean[]> {
    return this.run((tx, b) => this.failIn(tx, b, items));
  }

  private async failIn(
    tx: StoreTx,
    b: Batch,
    items: Array<AttemptRef & { error: TaskError }>,
  ): Promise<boolean[]> {
    const held = await this.heldRows(tx, items);
    // A failure sent again after a lost answer: the attempt's failure is already recorded
    // (the task waits for its retry, or failed), unless its handler had completed instead.
    const again = await this.recorded(
      tx,
      items.filter((i) => !held.has(i.id)),
      (r) => r.handler_done === 0 && (r.state === 'queued' || r.state === 'failed'),
    );
    const failing: Array<{ row: TaskCore; error: TaskError }> = [];
    const seen = new Set<string>();
    const ok = items.map((item) => {
      if (seen.has(item.id)) return false; // the same attempt twice in one call counts once
      seen.add(item.id);
      const row = held.get(item.id);
      if (!row) return again.has(item.id);
      failing.push({ row, error: item.error });
      return true;
    });
    await this.failAttempts(tx, b, failing);
    return ok;
  }

  private async failAttempts(
    tx: StoreTx,
    b: Batch,
    failing: Array<{ row: TaskCore; error: TaskError; lost?: boolean }>,
  ) {
    await tx.insertAttempts(
      failing.map(({ row, error }) => ({
        job_id: row.job_id,
        task_id: row.id,
        attempt: row.attempt,
        started_at: row.started_at ?? b.now,
        finished_at: b.now,
        error: errorJson(error),
      })),
    );
    const retries: typeof failing = [];
    const permanent: typeof failing = [];
    const cfgs = await this.typeConfigsIn(
      tx,
      failing.map((f) => f.row),
    );
    for (const f of failing) {
      const cfg = cfgs.get(`${f.row.namespace}\0${f.row.type}`);
      const maxAttempts = f.row.max_attempts ?? cfg?.max_attempts ?? DEFAULTS.maxAttempts;
      // The budget counts from the last retryTask, which gives a fresh one.
      const used = f.row.attempt - f.row.attempt_base;
      (f.error.retryable !== false && used < maxAttempts ? retries : permanent).push(f);
    }
    // Permanent failures first: each cancels its subtree, which may hold other tasks of this
    // batch; those are settled now and must be neither retried nor failed a second time.
    for (const { row, error } of permanent) {
      if (b.terminated.has(row.id)) continue;
      releaseSlots(b, row);
      await terminate(tx, b, row, 'failed', error);
    }
    const patches: TaskPatch[] = [];
    for (const { row, error, lost } of retries) {
      if (b.terminated.has(row.id)) continue;
      releaseSlots(b, row);
      const cfg = cfgs.get(`${row.namespace}\0${row.type}`);
      const base = row.backoff_ms ?? cfg?.backoff_ms ?? DEFAULTS.backoffMs;
      const cap = row.max_backoff_ms ?? cfg?.max_backoff_ms ?? DEFAULTS.maxBackoffMs;
      const exp = Math.min(cap, base * 2 ** (row.attempt - row.attempt_base - 1));
      // "Equal jitter": at least half the delay, so retries of one burst spread out but never bunch at zero.
      const delay = Math.round(exp / 2 + Math.random() * (exp / 2));
      patches.push({
        id: row.id,
        state: 'queued',
        attempt: row.attempt + 1,
        // A task whose worker vanished did nothing wrong: it keeps its place in the queue (its
        // run_at, unchanged while it ran), instead of going behind all that was queued meanwhile.
        run_at: lost ? Math.min(row.run_at, b.now) : b.now + delay,
        lease_expires_at: null,
        wait_mode: 0,
        error: errorJson(error),
        finished_at: b.now,
      });
      b.taskEvent(row, 'queued');
      b.ready(row);
    }
    await tx.updateTasks(patches);
  }

  /**
   * Gives claimed tasks back: queued again at once, as if never claimed, without counting an
   * attempt. For a claim whose answer nobody received (the worker hung up) and for a worker
   * that stops before running what it holds. Per item, whether the attempt still held it.
   */
  async release(items: AttemptRef[]): Promise<boolean[]> {
    if (!items.length) return [];
    return this.run(async (tx, b) => {
      const held = await this.heldRows(tx, items);
      const patches: TaskPatch[] = [];
      for (const row of held.values()) {
        releaseSlots(b, row);
        // It keeps its run_at, its place in the queue: it never ran, and did nothing wrong.
        patches.push({
          id: row.id,
          state: 'queued',
          lease_expires_at: null,
          started_at: null,
          slots_held: 0,
        });
        b.taskEvent(row, 'queued');
        b.ready(row);
      }
      await tx.updateTasks(patches);
      return items.map((i) => held.has(i.id));
    });
  }

  /** Renews the leases of running attempts; reports, per item, `ok`, `cancelled` or `lost`. */
  async heartbeat(items: AttemptRef[], leaseMs = this.leaseMs): Promise<Array<'ok' | 'cancelled' | 'lost'>> {
    return this.run(async (tx, b) => {
      // A row another transaction holds is passed over, not waited for: a heartbeat of many
      // tasks must not wait for a caller's transaction holding one (options.transaction).
      const ids = items.map((i) => i.id);
      const rows = new Map((await tx.getTasks(ids, { skipLocked: true })).map((r) => [r.id, r]));
      const missing = ids.filter((id) => !rows.has(id));
      // Passed over, not gone: not renewed this time (the sweeper passes over it too).
      const busy = new Set(missing.length ? (await tx.outcomes(missing)).map((r) => r.id) : []);
      const patches: TaskPatch[] = [];
      const out = items.map((item) => {
        const r = rows.get(item.id);
        if (!r) return busy.has(item.id) ? ('ok' as const) : ('lost' as const);
        if (r.state === 'running' && r.run_token === item.token) {
          patches.push({
            id: r.id,
            lease_expires_at: this.leaseUntil(b.now, r.started_at ?? b.now, r.timeout_ms, leaseMs),
          });
          return 'ok' as const;
        }
        return r.state === 'cancelled' ? ('cancelled' as const) : ('lost' as const);
      });
      await tx.updateTasks(patches);
      return out;
    });
  }

  /** Fails the attempts whose lease expired (crashed or stalled workers); returns how many. */
  async expireLeases(limit = 1000): Promise<number> {
    return this.run(async (tx, b) => {
      // The sweeper also deletes the slots of keys no task carries any longer, so that the
      // slots a claim reads stay few, whatever the number of keys ever used.
      await tx.dropUnusedKeySlots(limit);
      const rows = await tx.expiredLeases(b.now, limit);
      await this.failAttempts(
        tx,
        b,
        rows.map((row) => ({
          row,
          lost: true,
          error: {
            name: 'LeaseExpired',
            message: `attempt ${row.attempt} lost its lease: the worker crashed, stalled or timed out`,
          },
        })),
      );
      return rows.length;
    });
  }

  // ---------------------------------------------------------------- durable waits

  /**
   * The heart of a durable wait. If every awaited child has settled, returns their outcomes
   * (and marks their failures as observed). Otherwise suspends the task: it leaves `running`,
   * frees its worker and slot, and is re-queued when the last awaited child settles.
   */
  async wait(ref: AttemptRef, spec: WaitSpec): Promise<WaitResult> {
    return this.run(async (tx, b) => {
      const row = await this.getRunning(tx, ref);
      let children: OutcomeRow[];
      // Waiting on every child needs no per-child mark: the parent's open_children says it all.
      let all = spec.all;
      if (spec.all) {
        children = await tx.children(row.id);
      } else {
        const ids = [...new Set(spec.ids)];
        // A big set is read with one range scan over the children rather than a lookup per id.
        const scanned = ids.length > 64 ? await tx.children(row.id) : undefined;
        const got = new Map((scanned ?? (await tx.outcomes(ids))).map((r) => [r.id, r]));
        children = spec.ids.map((id, i) => {
          const c = got.get(id);
          if (!c || c.parent_id !== row.id)
            throw new ValidationError(
              c
                ? `wait: task ${id} (item ${i}) is not a child of task ${row.id}; only children can be awaited (a dedup key may have returned another parent's task)`
                : `wait: task ${id} (item ${i}) is not a child of task ${row.id}`,
            );
          return c;
        });
        all = scanned !== undefined && ids.length === scanned.length;
      }
      const open = children.filter((c) => !isSettled(c.state));
      if (open.length === 0) {
        const seen = [
          ...new Set(children.filter((c) => c.state === 'failed' && !c.observed && !c.ignore_failure)),
        ];
        if (seen.length) {
          await tx.updateTasks([
            ...seen.map((c) => ({ id: c.id, observed: 1 })),
            { id: row.id, unobserved_failures: Math.max(0, row.unobserved_failures - seen.length) },
          ]);
        }
        return { suspended: false, outcomes: children.map(outcomeOf) };
      }
      releaseSlots(b, row);
      const openIds = [...new Set(open.map((c) => c.id))];
      if (!all) await tx.updateTasks(openIds.map((id) => ({ id, awaited: 1 })));
      await tx.updateTasks([
        {
          id: row.id,
          state: 'waiting',
          wait_mode: all ? 1 : 2,
          wait_remaining: all ? 0 : openIds.length,
          lease_expires_at: null,
          slots_held: 0,
        },
      ]);
      b.taskEvent({ id: row.id, job_id: row.job_id, type: row.type }, 'waiting');
      return { suspended: true };
    });
  }

  // ---------------------------------------------------------------- progress and steps

  async progress(ref: AttemptRef, value: unknown): Promise<void> {
    const json = toJson(value, 'progress');
    await this.run(async (tx, b) => {
      const row = await this.getRunning(tx, ref);
      await tx.updateTasks([{ id: row.id, progress: json }]);
      if (b.wantEvents)
        b.events.push({
          kind: 'progress',
          jobId: row.job_id,
          taskId: row.id,
          type: row.type,
          progress: value,
          at: b.now,
        });
    });
  }

  async getStep(jobId: string, taskId: string, name: string): Promise<{ found: boolean; value: unknown }> {
    // Refused before the step's function runs, not only when its value is stored.
    this.store.assertNotHeldByCaller?.(taskId);
    const v = await this.store.getStep(jobId, taskId, name);
    if (v === undefined) return { found: false, value: undefined };
    // Stored as a one-element array, or an empty one for `undefined`, which JSON cannot hold.
    const arr = JSON.parse(v) as unknown[];
    return { found: true, value: arr.length ? arr[0] : undefined };
  }

  async putStep(ref: AttemptRef, name: string, value: unknown): Promise<void> {
    const json = value === undefined ? '[]' : `[${toJson(value, `step ${name}`)}]`;
    await this.run(async (tx) => {
      const row = await this.getRunning(tx, ref);
      await tx.putStep(row.job_id, row.id, name, json);
    });
  }

  // ---------------------------------------------------------------- cancellation

  /** Cancels a task and every unsettled task below it. Returns false if it had already settled. */
  /**
   * Runs a failed task again, with a fresh budget of attempts, and reopens what its failure
   * settled: each ancestor that failed because of it goes back to the state it left (waiting,
   * to run its handler again from the top once its children settle; or completing), and a
   * failed job runs again. Refused (ConflictError) when the task has not failed, failed only
   * because of a child (retry that child), or an ancestor has settled otherwise (it observed
   * the failure and succeeded, or was cancelled): a retry never rewrites a settled success.
   * Children the failure cancelled and dependents it skipped stay as they are.
   *
   * With `failedAttempt` (the attempt whose failure the caller saw), a call repeated after
   * its answer was lost is answered as done: the task records the attempt it was retried at.
   */
  async retryTask(taskId: string, failedAttempt?: number): Promise<void> {
    await this.run(async (tx, b) => {
      const [task] = await tx.getTasks([taskId]);
      if (!task) throw new NotFoundError(`task ${taskId} not found`);
      // The failure of `failedAttempt` has been retried already (this call repeated after a
      // lost answer): done, whatever the task has done since.
      if (failedAttempt !== undefined && task.attempt_base >= failedAttempt) return;
      if (task.state !== 'failed')
        throw new ConflictError(`task ${taskId} is ${task.state}: only a failed task can be retried`);
      if (task.handler_done === 1)
        throw new ConflictError(
          `task ${taskId} failed because a child failed after its handler had finished: retry that child instead`,
        );
      const patches: TaskPatch[] = [
        {
          id: task.id,
          state: 'queued',
          attempt: task.attempt + 1,
          // A fresh budget: attempts (and backoff) count from here, whatever retries came before.
          attempt_base: task.attempt,
          run_at: b.now,
          // `observed` stays: a failure its parent's wait already returned was handled there, and
          // the outcome of the retry cannot fail that parent any more (it may have returned).
          // `awaited` is cleared: the wait it belonged to is over, and a later wait of the parent
          // on other children must not count this task's settling as one of theirs.
          awaited: 0,
          settled_at: null,
          finished_at: null,
          lease_expires_at: null,
          wait_mode: 0,
          wait_remaining: 0,
          open_children: 0,
        },
      ];
      b.taskEvent(task, 'queued');
      b.ready(task);
      // Up the tree: every failed ancestor reopens; the first unsettled one counts the task's
      // branch as open again. Its failure counted as unobserved unless a wait had seen it.
      let child = task;
      let unobserved = task.ignore_failure === 0 && task.observed === 0;
      while (child.parent_id !== null) {
        const [parent] = await tx.getTasks([child.parent_id]);
        if (!parent) break;
        const failures = Math.max(0, parent.unobserved_failures - (unobserved ? 1 : 0));
        if (!isSettled(parent.state)) {
          patches.push({
            id: parent.id,
            open_children: parent.open_children + 1,
            unobserved_failures: failures,
          });
          break;
        }
        if (parent.state !== 'failed')
          throw new ConflictError(
            `task ${taskId} cannot be retried: its ancestor ${parent.id} (${parent.type}) has settled ${parent.state}`,
          );
        const state = parent.handler_done === 1 ? 'completing' : 'waiting';
        patches.push({
          id: parent.id,
          state,
          open_children: 1,
          unobserved_failures: failures,
          wait_mode: state === 'waiting' ? 1 : 0,
          wait_remaining: 0,
          settled_at: null,
          lease_expires_at: null,
        });
        b.taskEvent(parent, state);
        unobserved = parent.ignore_failure === 0 && parent.observed === 0;
        child = parent;
      }
      if (child.parent_id === null) {
        await tx.updateJobs([{ id: child.job_id, state: 'running', settled_at: null }]);
        if (b.wantEvents) b.events.push({ kind: 'job', jobId: child.job_id, state: 'running', at: b.now });
      }
      await tx.updateTasks(patches);
    });
  }

  async cancelTask(taskId: string, reason = 'cancelled'): Promise<boolean> {
    return this.run(async (tx, b) => {
      const [row] = await tx.getTasks([taskId]);
      if (!row) throw new NotFoundError(`task ${taskId} not found`);
      if (isSettled(row.state)) return false;
      await terminate(tx, b, row, 'cancelled', { name: 'Cancelled', message: reason });
      return true;
    });
  }

  /** Cancels a job: its root task and everything below it. */
  async cancelJob(jobId: string, reason = 'job cancelled'): Promise<boolean> {
    const job = await this.store.getJob(jobId);
    if (!job) throw new NotFoundError(`job ${jobId} not found`);
    return this.cancelTask(job.root_task_id, reason);
  }

  // ---------------------------------------------------------------- settling
}

/** The caller's transaction named by a batch's options: one for all of them, or none. */
function sharedTransaction(given: unknown[], what: string): unknown {
  const set = new Set(given.filter((t) => t !== undefined));
  if (set.size > 1 || (set.size === 1 && given.includes(undefined)))
    throw new ValidationError(
      `${what}: every item of one call must name the same options.transaction, or none`,
    );
  return set.values().next().value;
}

/** How a task is named in a dependency error: its spawn key (or id) and type. */
