/**
 * The errors the engine and the stores both throw: below both, so a store need not import the
 * engine. src/engine/errors.ts re-exports them with the errors users throw and catch.
 */

/** An operation named a task or job that does not exist. */
export class NotFoundError extends Error {
  override name = 'NotFoundError';
}

/** A completion, heartbeat or spawn from an attempt that no longer holds the task (fencing). */
export class StaleAttemptError extends Error {
  override name = 'StaleAttemptError';
}

/** The operation does not apply to the task or job in its present state (e.g. retrying one that has not failed). */
export class ConflictError extends Error {
  override name = 'ConflictError';
}

/** Bad input from the caller: the message says what was wrong and where. */
export class ValidationError extends Error {
  override name = 'ValidationError';
}
