/** Small factories of store rows, for tests that drive a store directly. */
import { newId } from '../../src/engine/ids.js';
import type { JobRow, TaskRow } from '../../src/store/store.js';

/** A queued task of `job_id` with every counter at zero; `over` sets the rest. */
export function taskRow(over: Partial<TaskRow> & Pick<TaskRow, 'job_id'>): TaskRow {
  return {
    id: newId(),
    namespace: 'default',
    parent_id: null,
    spawn_key: null,
    dedup_key: null,
    type: 'work',
    payload: null,
    state: 'queued',
    priority: 0,
    run_at: 0,
    attempt: 0,
    max_attempts: null,
    backoff_ms: null,
    max_backoff_ms: null,
    timeout_ms: null,
    run_token: 0,
    lease_expires_at: null,
    concurrency_key: null,
    slots_held: 0,
    open_children: 0,
    wait_mode: 0,
    wait_remaining: 0,
    awaited: 0,
    unobserved_failures: 0,
    observed: 0,
    ignore_failure: 0,
    deps_remaining: 0,
    run_regardless: 0,
    handler_done: 0,
    result: null,
    error: null,
    progress: null,
    created_at: Date.now(),
    started_at: null,
    finished_at: null,
    settled_at: null,
    ...over,
  };
}

/** A running job with its root task (running too). */
export function jobWithRoot(over: Partial<TaskRow> = {}): { job: JobRow; root: TaskRow } {
  const id = newId();
  const root = taskRow({ job_id: id, state: 'running', ...over });
  return {
    job: {
      id,
      namespace: root.namespace,
      type: root.type,
      root_task_id: root.id,
      state: 'running',
      created_at: root.created_at,
      settled_at: null,
    },
    root,
  };
}
