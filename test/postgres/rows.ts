/** Small factories of store rows, for tests that drive a store directly. */
import { newId } from '../../src/engine/ids.js';
import { newTaskRow } from '../../src/engine/rows.js';
import type { JobRow, TaskRow } from '../../src/store/store.js';

/** A queued task of `job_id` with every counter at zero (as the engine builds it); `over` sets the rest. */
export function taskRow(over: Partial<TaskRow> & Pick<TaskRow, 'job_id'>): TaskRow {
  const base = newTaskRow(over.job_id, 'default', null, null, { type: 'work' }, Date.now());
  return { ...base, run_at: 0, ...over };
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
