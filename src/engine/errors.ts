/** Errors users throw or catch, and how errors become stored data. */
import { ValidationError } from '../core/errors.js';
import type { Outcome, TaskError } from './types.js';

export { ConflictError, NotFoundError, StaleAttemptError, ValidationError } from '../core/errors.js';

/** Throw this from a handler to fail the task at once, without retries. */
export class NonRetryableError extends Error {
  override name = 'NonRetryableError';
}

/** Thrown by `ctx.waitAll` when an awaited child did not succeed. */
export class ChildTaskFailedError extends Error {
  override name = 'ChildTaskFailedError';
  constructor(
    /** The outcomes of the children that did not succeed. */
    readonly failures: Outcome[],
  ) {
    const first = failures[0];
    const what =
      first && first.state !== 'succeeded' ? `${first.taskId} ${first.state}: ${first.error.message}` : '';
    super(`${failures.length} awaited child task(s) did not succeed; first: ${what}`);
  }
}

/** Rejection of `job.result()` when the job did not succeed. */
export class JobFailedError extends Error {
  override name = 'JobFailedError';
  constructor(
    readonly jobId: string,
    readonly state: string,
    readonly error: TaskError | null,
  ) {
    super(`job ${jobId} ${state}${error ? `: ${error.message}` : ''}`);
  }
}

/**
 * Thrown inside a handler to unwind it when it suspends in a durable wait.
 * Handlers must not swallow it: the worker treats the task as suspended, not failed.
 */
export class SuspendSignal extends Error {
  override name = 'SuspendSignal';
  constructor() {
    super('task suspended in a durable wait; it resumes when the awaited children settle');
  }
}

/** Converts anything thrown into stored error data. */
export function toTaskError(e: unknown): TaskError {
  if (e instanceof Error) {
    const out: TaskError = { name: e.name, message: e.message };
    if (e.stack) out.stack = e.stack;
    // A child's failure is final, and bad input to a ctx call is a bug in the handler: a re-run
    // would fail the same way, so retrying only delays the failure.
    if (e instanceof NonRetryableError || e instanceof ChildTaskFailedError || e instanceof ValidationError)
      out.retryable = false;
    return out;
  }
  return { name: 'Error', message: typeof e === 'string' ? e : (JSON.stringify(e) ?? String(e)) };
}
