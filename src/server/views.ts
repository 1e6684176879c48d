/**
 * Store rows as the wire shows them (schemas.ts). Kept here, not borrowed from the TypeScript
 * API, so the HTTP contract changes only when this file does.
 */
import type { ClaimedTask } from '../engine/engine.js';
import { TASK_STATES, type TaskError, type TaskState } from '../engine/types.js';
import type { JobRow, Store, TaskRow } from '../store/store.js';

const parse = (s: string | null): unknown => (s === null ? null : JSON.parse(s));

/** A job without counts, result or error, as lists show it. */
export function jobSummary(j: JobRow) {
  return {
    id: j.id,
    namespace: j.namespace,
    type: j.type,
    rootTaskId: j.root_task_id,
    state: j.state,
    createdAt: j.created_at,
    settledAt: j.settled_at,
  };
}

/** A job with its root's result or error and its tasks counted by state. */
export async function jobInfo(store: Store, job: JobRow) {
  const [root, counts] = await Promise.all([store.getTask(job.root_task_id), store.jobCounts(job.id)]);
  const byState = Object.fromEntries(TASK_STATES.map((s) => [s, 0])) as Record<TaskState, number>;
  let total = 0;
  for (const c of counts) {
    byState[c.state] = c.n;
    total += c.n;
  }
  return {
    ...jobSummary(job),
    result: root?.result ? parse(root.result) : null,
    error: root?.error && job.state !== 'succeeded' ? (parse(root.error) as TaskError) : null,
    counts: byState,
    total,
  };
}

export function taskInfo(r: TaskRow) {
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

/** A claimed task for the worker; `typeTimeout` is its type's timeout, used when the task has none. */
export function claimedTask(c: ClaimedTask, typeTimeout: number | null) {
  const r = c.row;
  return {
    id: r.id,
    jobId: r.job_id,
    parentId: r.parent_id,
    namespace: r.namespace,
    type: r.type,
    payload: parse(r.payload),
    attempt: r.attempt,
    token: c.token,
    timeoutMs: r.timeout_ms ?? typeTimeout,
    startedAt: r.started_at ?? 0,
    leaseExpiresAt: r.lease_expires_at ?? 0,
  };
}
