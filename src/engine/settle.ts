/**
 * Settling: how a task reaching a final state propagates, in the same transaction, to its
 * parent (counters, resume, settle), to tasks that depend on it (release or skip), and to
 * its job. Also `terminate`, which ends a task at once and cancels everything below it.
 */
import type { DepRow, SettleRow, StoreTx, TaskCore, TaskPatch } from '../store/store.js';
import { type Batch, releaseSlots } from './batch.js';
import { type DepInfo, dependencyError, errorJson, parseJson } from './rows.js';
import { together } from './state.js';
import { isSettled, type JobState, type TaskError } from './types.js';

export interface Settling {
  row: SettleRow;
  state: 'succeeded' | 'failed' | 'cancelled' | 'skipped';
  /** The row's own state change is already written (a guarded completion did it). */
  written?: boolean;
  /** For `failed` without an error: the failure of an unobserved child, looked up when settling. */
  error?: TaskError | undefined;
  /** Settles no earlier than this: tasks below it settled in this transaction at that time (terminate). */
  notBefore?: number;
}

/**
 * When a task settles in this transaction: the transaction's time, but never before any of its
 * children settled. Transactions overlap (several per process on PostgreSQL, and those of other
 * processes), each stamped with its clock at BEGIN; one that began first may settle a parent
 * after seeing the last child settled by one that began later, and would stamp the parent
 * earlier than that child. The parent's row carries its children's latest settle time
 * (children_settled_at, read under the row lock) to prevent that; its job settles with it.
 */
export function settleTime(b: Batch, row: Pick<SettleRow, 'children_settled_at'>, notBefore = 0): number {
  return Math.max(b.now, row.children_settled_at ?? 0, notBefore);
}

/**
 * Ends a task now with `state` (failed or cancelled): its unsettled descendants are
 * cancelled first (no orphans), then the task settles.
 */
export async function terminate(
  tx: StoreTx,
  b: Batch,
  row: TaskCore,
  state: 'failed' | 'cancelled',
  error: TaskError,
) {
  const subtree = await tx.unsettledSubtree(row.id);
  for (const r of subtree) b.terminated.add(r.id);
  b.terminated.add(row.id);
  const descendants = subtree.filter((r) => r.id !== row.id);
  // One time for the whole subtree, after every child any of its tasks has seen settle: each
  // task then settles no earlier than its children (see settleTime).
  let at = settleTime(b, row);
  for (const d of descendants) at = Math.max(at, settleTime(b, d));
  let skipped: Settling[] = [];
  if (descendants.length) {
    const cancelled: TaskError = { name: 'Cancelled', message: `ancestor ${row.id} ${state}` };
    const json = errorJson(cancelled);
    for (const d of descendants) {
      if (d.state === 'running') b.cancelledRunning.push(d.id);
      releaseSlots(b, d);
      d.state = 'cancelled';
      b.taskEvent(d, 'cancelled', at);
    }
    await tx.updateTasks(
      descendants.map((d) => ({
        id: d.id,
        state: 'cancelled' as const,
        error: json,
        settled_at: at,
        lease_expires_at: null,
        slots_held: 0,
        open_children: 0,
      })),
    );
    // Descendants' own parents are all inside the subtree and settle with it, so their
    // counters need no update; only tasks elsewhere that depend on them are affected.
    skipped = await releaseDependents(tx, b, descendants);
  }
  // The caller may already have released the task's slots (a failing attempt): `row` says.
  if (row.state === 'running' && state === 'cancelled') b.cancelledRunning.push(row.id);
  releaseSlots(b, row);
  await settle(tx, b, [{ row, state, error, notBefore: at }, ...skipped]);
}

/** A task whose handler is done and whose children have all settled: its final state. */
export function settledByChildren(row: SettleRow & Pick<TaskCore, 'unobserved_failures'>): Settling {
  return row.unobserved_failures > 0
    ? { row, state: 'failed', error: undefined }
    : { row, state: 'succeeded' };
}

/**
 * Settles tasks and propagates upwards and sideways, in waves: each wave adjusts the
 * parents' counters once per parent, resumes waiting parents, settles completing ones,
 * and releases or skips dependents. Waves repeat for the tasks that settled in turn.
 */
export async function settle(tx: StoreTx, b: Batch, wave: Settling[]): Promise<void> {
  while (wave.length) {
    const next: Settling[] = [];
    const patches: TaskPatch[] = [];
    const jobs: Array<{ id: string; state: JobState; settled_at: number }> = [];
    /** Each task's settle time, for its parent's children_settled_at. */
    const settledAt = new Map<string, number>();
    for (const s of wave) {
      const { row } = s;
      // A guarded completion (`written`) computed the same time in its statement.
      const at = settleTime(b, row, s.notBefore);
      settledAt.set(row.id, at);
      if (s.state === 'failed' && s.error === undefined) s.error = await childFailureError(tx, row);
      row.state = s.state;
      if (!s.written) {
        const patch: TaskPatch = {
          id: row.id,
          state: s.state,
          settled_at: at,
          lease_expires_at: null,
          open_children: 0,
          wait_mode: 0,
        };
        if (s.error) patch.error = errorJson(s.error);
        patches.push(patch);
      }
      b.taskEvent(row, s.state, at);
      if (row.parent_id === null) {
        const js: JobState = s.state === 'skipped' ? 'failed' : s.state;
        jobs.push({ id: row.job_id, state: js, settled_at: at });
        b.jobsSettled.push({ jobId: row.job_id, state: js });
        if (b.wantEvents) b.events.push({ kind: 'job', jobId: row.job_id, state: js, at });
      }
    }
    await tx.updateTasks(patches);
    if (jobs.length) await tx.updateJobs(jobs);

    // Parents: one read and one write per parent per wave, however many children settled.
    const perParent = new Map<string, { open: number; awaited: number; failures: number; latest: number }>();
    for (const { row } of wave) {
      if (row.parent_id === null) continue;
      let d = perParent.get(row.parent_id);
      if (!d) {
        d = { open: 0, awaited: 0, failures: 0, latest: 0 };
        perParent.set(row.parent_id, d);
      }
      d.open++;
      d.latest = Math.max(d.latest, settledAt.get(row.id)!);
      if (row.awaited) d.awaited++;
      if (row.state === 'failed' && !row.ignore_failure && !row.observed) d.failures++;
    }
    // The dependents' edges are read with the parents (one round trip where the store can).
    const settled = wave.map((s) => s.row);
    const [parents, edges] = await together<[TaskCore[], DepRow[]]>(tx, [
      () => (perParent.size ? tx.getTasks([...perParent.keys()]) : Promise.resolve([])),
      () => tx.dependents(settled),
    ]);
    if (perParent.size) {
      const parentPatches: TaskPatch[] = [];
      for (const p of parents) {
        if (isSettled(p.state)) continue; // settled by a cancellation in this transaction
        const d = perParent.get(p.id)!;
        p.open_children = Math.max(0, p.open_children - d.open);
        p.unobserved_failures += d.failures;
        p.children_settled_at = Math.max(p.children_settled_at ?? 0, d.latest);
        const patch: TaskPatch = {
          id: p.id,
          open_children: p.open_children,
          unobserved_failures: p.unobserved_failures,
          children_settled_at: p.children_settled_at,
        };
        if (p.wait_mode === 2 && p.state === 'waiting') {
          p.wait_remaining = Math.max(0, p.wait_remaining - d.awaited);
          patch.wait_remaining = p.wait_remaining;
        }
        if (
          p.state === 'waiting' &&
          ((p.wait_mode === 1 && p.open_children === 0) || (p.wait_mode === 2 && p.wait_remaining === 0))
        ) {
          // Resume: the awaited children have all settled; the handler runs again from the top.
          Object.assign(patch, { state: 'queued', run_at: b.now, wait_mode: 0, wait_remaining: 0 });
          p.state = 'queued';
          b.taskEvent(p, 'queued');
          b.ready(p);
        } else if (p.state === 'completing' && p.open_children === 0) {
          next.push(settledByChildren(p));
        }
        parentPatches.push(patch);
      }
      await tx.updateTasks(parentPatches);
    }

    next.push(...(await releaseDependents(tx, b, settled, edges)));
    wave = next;
  }
}

/**
 * Dependents of settled tasks: released when their last dependency succeeds, else skipped.
 * One lookup for the whole wave, whatever the number of jobs in it.
 */
export async function releaseDependents(
  tx: StoreTx,
  b: Batch,
  settled: DepInfo[],
  /** Their dependents' edges, if already read. */
  read?: DepRow[],
): Promise<Settling[]> {
  const skipped: Settling[] = [];
  if (!settled.length) return skipped;
  const edges = read ?? (await tx.dependents(settled));
  if (!edges.length) return skipped;
  const byId = new Map(settled.map((r) => [r.id, r]));
  const dependents = new Map(
    (await tx.getTasks([...new Set(edges.map((e) => e.task_id))])).map((r) => [r.id, r]),
  );
  const patches = new Map<string, TaskPatch>();
  for (const e of edges) {
    const t = dependents.get(e.task_id);
    const dep = byId.get(e.depends_on)!;
    if (t?.state !== 'blocked') continue;
    if (dep.state === 'succeeded' || t.run_regardless) {
      t.deps_remaining = Math.max(0, t.deps_remaining - 1);
      const p = patches.get(t.id) ?? { id: t.id };
      p.deps_remaining = t.deps_remaining;
      if (t.deps_remaining === 0) {
        t.state = 'queued';
        p.state = 'queued';
        p.run_at = Math.max(t.run_at, b.now);
        b.taskEvent(t, 'queued');
        b.ready(t);
      }
      patches.set(t.id, p);
    } else {
      t.state = 'skipped'; // guards against a second failing dependency in this batch
      patches.delete(t.id);
      skipped.push({ row: t, state: 'skipped', error: dependencyError(dep) });
    }
  }
  await tx.updateTasks([...patches.values()]);
  return skipped;
}

export async function childFailureError(tx: StoreTx, row: { id: string }): Promise<TaskError> {
  const child = (await tx.children(row.id)).find(
    (c) => c.state === 'failed' && !c.observed && !c.ignore_failure,
  );
  const cause = child ? (parseJson(child.error) as TaskError | null) : null;
  return {
    name: 'ChildTaskFailed',
    message: child
      ? `child task ${child.id} (${child.type}) failed and was not awaited: ${cause?.message ?? 'unknown error'}`
      : 'a child task failed and was not awaited',
    ...(child ? { childTaskId: child.id } : {}),
  };
}
