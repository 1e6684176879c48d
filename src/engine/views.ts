/**
 * Store rows as the API shows them: the in-process API and the HTTP server answer with these.
 * (The server's schemas decide what goes on the wire: a field added here appears there only
 * once its schema names it.)
 */
import type { JobRow, Store, TaskRow, TypeConfigRow } from '../store/store.js';
import { NotFoundError } from './errors.js';
import type { JobSummary, TypeSettings } from './port.js';
import { type JobInfo, TASK_STATES, type TaskError, type TaskInfo, type TaskState } from './types.js';

export const parseJson = (s: string | null): unknown => (s === null ? null : JSON.parse(s));

/** A job without counts, result or error, as lists show it. */
export function jobSummary(j: JobRow): JobSummary {
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
export async function jobInfo(store: Store, job: JobRow): Promise<JobInfo> {
  const [root, counts] = await Promise.all([store.getTask(job.root_task_id), store.jobCounts(job.id)]);
  const byState = Object.fromEntries(TASK_STATES.map((s) => [s, 0])) as Record<TaskState, number>;
  let total = 0;
  for (const c of counts) {
    byState[c.state] = c.n;
    total += c.n;
  }
  return {
    ...jobSummary(job),
    result: root?.result ? parseJson(root.result) : null,
    error: root?.error && job.state !== 'succeeded' ? (parseJson(root.error) as TaskError) : null,
    counts: byState,
    total,
  };
}

/** A task row as queries return it (without its attempts). */
export function taskInfo(r: TaskRow): TaskInfo {
  return {
    id: r.id,
    jobId: r.job_id,
    parentId: r.parent_id,
    type: r.type,
    key: r.spawn_key,
    dedupKey: r.dedup_key,
    state: r.state,
    payload: parseJson(r.payload),
    result: parseJson(r.result),
    error: parseJson(r.error) as TaskError | null,
    progress: parseJson(r.progress),
    attempt: r.attempt,
    // The last attempt it may have: its budget counts from the last retryTask.
    maxAttempts: r.max_attempts === null ? null : r.attempt_base + r.max_attempts,
    priority: r.priority,
    runAt: r.run_at,
    createdAt: r.created_at,
    startedAt: r.started_at,
    finishedAt: r.finished_at,
    settledAt: r.settled_at,
    openChildren: r.open_children,
    // Only a running task is held: a settled or queued one keeps its last claim's values.
    workerId: r.state === 'running' ? r.worker_id : null,
    leaseExpiresAt: r.state === 'running' ? r.lease_expires_at : null,
  };
}

/** A task with every failed attempt; throws NotFoundError. */
export async function taskWithAttempts(store: Store, taskId: string): Promise<TaskInfo> {
  const row = await store.getTask(taskId);
  if (!row) throw new NotFoundError(`task ${taskId} not found`);
  const info = taskInfo(row);
  info.attempts = (await store.attempts(row.job_id, taskId)).map((a) => ({
    attempt: a.attempt,
    startedAt: a.started_at,
    finishedAt: a.finished_at,
    error: parseJson(a.error) as TaskError,
  }));
  return info;
}

/** Per-type settings as the store keeps them (unset fields: the defaults). */
export function typeConfigRows(namespace: string, types: TypeSettings[]): TypeConfigRow[] {
  return types.map((t) => ({
    namespace,
    type: t.type,
    max_attempts: t.maxAttempts ?? null,
    backoff_ms: t.backoffMs ?? null,
    max_backoff_ms: t.maxBackoffMs ?? null,
    timeout_ms: t.timeoutMs ?? null,
    concurrency: t.concurrency ?? null,
  }));
}
