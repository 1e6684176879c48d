/**
 * Creating tasks: `submit` (jobs with their root tasks) and `spawn` (children of a running
 * task, with their `after` dependencies), each idempotent under its keys.
 */
import type { JobRow, KeyedRow, StoreTx, TaskCore, TaskRow } from '../store/store.js';
import { type AttemptRef, DEFAULTS, type SpawnSpec } from './defs.js';
import { refuseCycles, refuseWaitsOnAncestors } from './dependencies.js';
import { StaleAttemptError, ValidationError } from './errors.js';
import { newId } from './ids.js';
import { type DepInfo, dependencyError, newTaskRow, validateOptions, validateType } from './rows.js';
import { settle } from './settle.js';
import { type EngineState, getRunningWith, sharedTransaction, together } from './state.js';
import { isSettled, type SubmitOptions, type TaskError, type TaskHandle } from './types.js';

/**
 * Creates jobs, each with its root task, atomically. A job whose `options.jobId` exists
 * already is returned as it is (`created: false`): resubmitting after a lost answer is safe.
 * With `options.transaction` (a PostgreSQL client inside the caller's BEGIN), the jobs are
 * written in the caller's transaction and exist if and only if it commits.
 */
export async function submit(
  engine: EngineState,
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
  return engine.run(async (tx, b) => {
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
    // A few jobs: both inserts in one round trip (their values inlined); a bulk submit binds them.
    if (jobs.length <= 8) await together(tx, [() => tx.insertJobs(jobs), () => tx.insertTasks(tasks)]);
    else {
      await tx.insertJobs(jobs);
      await tx.insertTasks(tasks);
    }
    return out;
  }, external);
}

/**
 * Spawns children of a running task. `keys[i]` is the idempotency key of `specs[i]`
 * (explicit, or derived from the order of spawn calls by the caller). Existing children
 * with the same key, and tasks of the job with the same dedup key, are returned instead.
 */
export async function spawn(
  engine: EngineState,
  parentRef: AttemptRef,
  specs: SpawnSpec[],
  keys: string[],
): Promise<TaskHandle[]> {
  specs.forEach((s, i) => {
    validateType(s.type, `children[${i}]`);
    validateOptions(s.options, `children[${i}].options`);
  });
  const external = sharedTransaction(
    specs.map((s) => s.options?.transaction),
    'children',
  );
  return engine.runReadingFirst(async (tx, b) => {
    const [parent, children] = await getRunningWith(tx, parentRef, () =>
      tx.findChildrenByKey(parentRef.id, keys),
    );
    const handles: TaskHandle[] = new Array(specs.length);
    const existing = new Map(children.map((r) => [r.spawn_key!, r]));
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
    if (refs.length) for (const r of await tx.findChildrenByKey(parent.id, refs)) byKey.set(r.spawn_key!, r);
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
export async function spawnedKeys(
  engine: EngineState,
  parentId: string,
  keys: string[],
  external?: unknown,
): Promise<string[]> {
  if (!keys.length) return [];
  const find = (tx: StoreTx) => tx.findChildrenByKey(parentId, keys);
  const rows =
    external !== undefined && engine.store.transactionWith
      ? await engine.store.transactionWith(external, find)
      : await engine.store.transaction(find);
  return rows.map((r) => r.spawn_key!);
}
