/**
 * Store rows as the wire shows them (schemas.ts): the API's views (src/engine/views.ts), whose
 * fields the route schemas filter, and the claimed task, which only workers over HTTP see.
 */
import type { ClaimedTask } from '../engine/defs.js';
import { parseJson } from '../engine/views.js';

export { jobInfo, jobSummary, taskInfo, taskWithAttempts, typeConfigRows } from '../engine/views.js';

/** A claimed task for the worker; `typeTimeout` is its type's timeout, used when the task has none. */
export function claimedTask(c: ClaimedTask, typeTimeout: number | null) {
  const r = c.row;
  return {
    id: r.id,
    jobId: r.job_id,
    parentId: r.parent_id,
    namespace: r.namespace,
    type: r.type,
    payload: parseJson(r.payload),
    attempt: r.attempt,
    token: c.token,
    timeoutMs: r.timeout_ms ?? typeTimeout,
    startedAt: r.started_at ?? 0,
    leaseExpiresAt: r.lease_expires_at ?? 0,
  };
}

/** A claimed task as the wire shows it. */
export type ClaimedTaskView = ReturnType<typeof claimedTask>;
