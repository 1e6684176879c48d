/**
 * The bounds of what a caller may pass, in one place: the engine checks them in-process
 * (rows.ts), the remote client checks them before sending, and the server's wire schemas
 * (src/server/schemas.ts) declare the same numbers, so a value is accepted or refused alike
 * in every mode, with the same message naming the API's own field.
 */

/**
 * The longest spawn key, dedup key or `after` reference, in characters: room for real URLs
 * (2,048 and well beyond). The stores index a hash of longer keys' text where they must.
 */
export const MAX_KEY_LENGTH = 8192;
/** The longest task type, namespace or concurrency key. */
export const MAX_NAME_LENGTH = 200;
/** maxAttempts: 1 to this. */
export const MAX_ATTEMPTS = 1000;
/** A duration in ms (backoff, timeout, delay): about 31 years, far within int64 and JS numbers. */
export const MAX_MS = 1e12;
/** runAt, epoch ms. */
export const MAX_EPOCH_MS = 1e14;
/** Priorities are int32 (the column type). */
export const MIN_PRIORITY = -2147483648;
export const MAX_PRIORITY = 2147483647;
/** concurrency.limit: 1 to this. */
export const MAX_CONCURRENCY = 1_000_000;
/** `after` references of one task. */
export const MAX_AFTER = 1000;
/** A step's name (`ctx.step(name, fn)`): 1 to this many characters. */
export const MAX_STEP_NAME_LENGTH = 1000;
