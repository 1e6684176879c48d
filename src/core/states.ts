/**
 * Task and job states: shared by the engine and the stores (both import this module, neither
 * imports the other for it). src/engine/types.ts re-exports them as part of the public API.
 */

/** States of a task. Settled states are final. */
export type TaskState =
  /** Spawned with `after:` dependencies that have not all succeeded yet. */
  | 'blocked'
  /** Eligible to be claimed by a worker once `runAt` has passed. */
  | 'queued'
  /** Claimed by a worker that holds a lease on it. */
  | 'running'
  /** Its handler suspended in a durable wait; resumes (re-queued) when the awaited children settle. */
  | 'waiting'
  /** Its handler finished but some children are still unsettled; settles with the last of them. */
  | 'completing'
  /** Settled: handler and whole subtree done, no unobserved child failure. */
  | 'succeeded'
  /** Settled: handler failed permanently, or a child failed and the task did not observe it. */
  | 'failed'
  /** Settled: cancelled by an operator or because an ancestor was cancelled or failed. */
  | 'cancelled'
  /** Settled: a dependency failed or was cancelled, so it never ran. */
  | 'skipped';

export const SETTLED_STATES: readonly TaskState[] = ['succeeded', 'failed', 'cancelled', 'skipped'];
export const TASK_STATES: readonly TaskState[] = [
  'blocked',
  'queued',
  'running',
  'waiting',
  'completing',
  'succeeded',
  'failed',
  'cancelled',
  'skipped',
];

export function isSettled(state: TaskState): boolean {
  return state === 'succeeded' || state === 'failed' || state === 'cancelled' || state === 'skipped';
}

/** A job is `running` until its root task settles; then it takes the root's final state. */
export type JobState = 'running' | 'succeeded' | 'failed' | 'cancelled';
