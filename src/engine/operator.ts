/**
 * Operator actions: retrying a failed task (and reopening what its failure settled) and
 * cancelling a task or a job with everything below it.
 */
import type { TaskPatch } from '../store/store.js';
import { ConflictError, NotFoundError } from './errors.js';
import { terminate } from './settle.js';
import type { EngineState } from './state.js';
import { isSettled } from './types.js';

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
export async function retryTask(engine: EngineState, taskId: string, failedAttempt?: number): Promise<void> {
  await engine.run(async (tx, b) => {
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

/** Cancels a task and every unsettled task below it. Returns false if it had already settled. */
export async function cancelTask(
  engine: EngineState,
  taskId: string,
  reason = 'cancelled',
): Promise<boolean> {
  return engine.run(async (tx, b) => {
    const [row] = await tx.getTasks([taskId]);
    if (!row) throw new NotFoundError(`task ${taskId} not found`);
    if (isSettled(row.state)) return false;
    await terminate(tx, b, row, 'cancelled', { name: 'Cancelled', message: reason });
    return true;
  });
}

/** Cancels a job: its root task and everything below it. */
export async function cancelJob(
  engine: EngineState,
  jobId: string,
  reason = 'job cancelled',
): Promise<boolean> {
  const job = await engine.store.getJob(jobId);
  if (!job) throw new NotFoundError(`job ${jobId} not found`);
  return cancelTask(engine, job.root_task_id, reason);
}
