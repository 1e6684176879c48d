/** Building task rows from user input, validating it, and turning rows back into outcomes. */
import type { OutcomeRow, TaskCore, TaskRow } from '../store/store.js';
import { keySlot } from './batch.js';
import type { AttemptRef, SpawnSpec } from './defs.js';
import { ValidationError } from './errors.js';
import { newId } from './ids.js';
import {
  MAX_AFTER,
  MAX_ATTEMPTS,
  MAX_CONCURRENCY,
  MAX_EPOCH_MS,
  MAX_KEY_LENGTH,
  MAX_MS,
  MAX_NAME_LENGTH,
  MAX_PRIORITY,
  MIN_PRIORITY,
} from './limits.js';
import type { Outcome, SpawnOptions, SubmitOptions, TaskError, TaskOptions } from './types.js';

export function parseJson(s: string | null): unknown {
  return s === null ? null : JSON.parse(s);
}

export function errorJson(e: TaskError): string {
  return JSON.stringify(e);
}

/** Serialises a payload or result; `undefined` is stored as null. */
export function toJson(value: unknown, what: string): string | null {
  if (value === undefined) return null;
  try {
    return JSON.stringify(value) ?? null;
  } catch (e) {
    throw new ValidationError(`${what} is not JSON-serialisable: ${(e as Error).message}`);
  }
}

/** What a dependency check needs of a task. */
export type DepInfo = Pick<TaskCore, 'id' | 'job_id' | 'type' | 'state'>;

export function outcomeOf(row: OutcomeRow): Outcome {
  if (row.state === 'succeeded') return { taskId: row.id, state: 'succeeded', result: parseJson(row.result) };
  const error = (parseJson(row.error) as TaskError | null) ?? { name: 'Error', message: row.state };
  return { taskId: row.id, state: row.state as 'failed' | 'cancelled' | 'skipped', error };
}

/** A UUID in its canonical text form, any version. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A bounded integer option, or why not. */
function checkInt(v: unknown, field: string, min: number, max: number): void {
  if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max))
    throw new ValidationError(`${field} must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
}

/** A bounded text option (a key, a name), or why not; NUL cannot be stored in PostgreSQL text. */
export function checkText(v: unknown, field: string, max: number): void {
  if (v === undefined) return;
  if (typeof v !== 'string' || v === '' || v.length > max || v.includes('\0'))
    throw new ValidationError(
      `${field} must be a non-empty string of at most ${max} characters without NUL, got ${
        typeof v === 'string' && v.length > 100 ? `${v.length} characters` : JSON.stringify(v)
      }`,
    );
}

/**
 * Checks task options against the limits of src/engine/limits.ts, which the server's wire
 * schemas declare too: in-process, the remote client (before it sends) and the server refuse
 * the same values with the same message, naming the API's field (`where` is its path).
 */
export function validateOptions(options: TaskOptions | undefined, where: string): void {
  if (!options) return;
  const o = options as SpawnOptions & SubmitOptions;
  checkInt(o.maxAttempts, `${where}.maxAttempts`, 1, MAX_ATTEMPTS);
  checkInt(o.backoffMs, `${where}.backoffMs`, 0, MAX_MS);
  checkInt(o.maxBackoffMs, `${where}.maxBackoffMs`, 0, MAX_MS);
  checkInt(o.timeoutMs, `${where}.timeoutMs`, 1, MAX_MS);
  checkInt(o.delayMs, `${where}.delayMs`, 0, MAX_MS);
  checkInt(o.priority, `${where}.priority`, MIN_PRIORITY, MAX_PRIORITY);
  if (o.runAt !== undefined && !(o.runAt instanceof Date))
    checkInt(o.runAt, `${where}.runAt`, 0, MAX_EPOCH_MS);
  if (o.concurrency !== undefined) {
    if (typeof o.concurrency !== 'object' || o.concurrency === null)
      throw new ValidationError(`${where}.concurrency must be an object { key, limit }`);
    if (o.concurrency.key === undefined)
      throw new ValidationError(`${where}.concurrency.key must be a non-empty string`);
    checkText(o.concurrency.key, `${where}.concurrency.key`, MAX_NAME_LENGTH);
    if (o.concurrency.limit === undefined)
      throw new ValidationError(`${where}.concurrency.limit must be an integer from 1 to ${MAX_CONCURRENCY}`);
    checkInt(o.concurrency.limit, `${where}.concurrency.limit`, 1, MAX_CONCURRENCY);
  }
  checkText(o.namespace, `${where}.namespace`, MAX_NAME_LENGTH);
  if (o.jobId !== undefined && (typeof o.jobId !== 'string' || !UUID.test(o.jobId)))
    throw new ValidationError(
      `${where}.jobId must be a UUID (e.g. 0190f5c2-7b1e-7cc0-8f3e-1d2b3c4d5e6f), got ${JSON.stringify(o.jobId)}`,
    );
  checkText(o.key, `${where}.key`, MAX_KEY_LENGTH);
  checkText(o.dedupKey, `${where}.dedupKey`, MAX_KEY_LENGTH);
  if (o.after !== undefined) {
    if (!Array.isArray(o.after) || o.after.length > MAX_AFTER)
      throw new ValidationError(
        `${where}.after must be an array of at most ${MAX_AFTER} task handles, ids or keys`,
      );
    o.after.forEach((a, i) => {
      if (typeof a === 'string' || typeof a !== 'object' || a === null)
        checkText(a, `${where}.after[${i}]`, MAX_KEY_LENGTH);
    });
  }
}

export function validateType(type: unknown, where: string): asserts type is string {
  if (typeof type !== 'string' || type === '' || type.length > MAX_NAME_LENGTH || type.includes('\0'))
    throw new ValidationError(
      `${where}.type must be a non-empty string of at most ${MAX_NAME_LENGTH} characters without NUL`,
    );
}

/**
 * Serialises handler results before the transaction. A result that JSON cannot hold fails
 * its own task (at once: a retry would return the same value), never the whole batch.
 */
export function serialiseResults(items: Array<AttemptRef & { result: unknown }>) {
  const seen = new Set<string>();
  const ok: Array<{ id: string; token: number; result: string | null }> = [];
  const bad: Array<AttemptRef & { error: TaskError }> = [];
  for (const i of items) {
    if (seen.has(i.id)) continue;
    seen.add(i.id);
    try {
      ok.push({ id: i.id, token: i.token, result: toJson(i.result, `result of task ${i.id}`) });
    } catch (e) {
      bad.push({
        id: i.id,
        token: i.token,
        error: { name: 'InvalidResult', message: (e as Error).message, retryable: false },
      });
    }
  }
  return { ok, bad };
}

export function dependencyError(dep: DepInfo): TaskError {
  return {
    name: 'DependencyFailed',
    message: `dependency ${dep.id} (${dep.type}) ${dep.state}`,
  };
}

/** A new task row from a spawn or submit spec, with every counter at its start value. */
export function newTaskRow(
  jobId: string,
  namespace: string,
  parentId: string | null,
  spawnKey: string | null,
  spec: SpawnSpec,
  now: number,
): TaskRow {
  const o = spec.options ?? {};
  const runAt = o.runAt !== undefined ? +o.runAt : now + (o.delayMs ?? 0);
  return {
    id: newId(),
    job_id: jobId,
    namespace,
    parent_id: parentId,
    spawn_key: spawnKey,
    dedup_key: o.dedupKey ?? null,
    type: spec.type,
    payload: toJson(spec.payload, 'payload'),
    state: 'queued',
    priority: o.priority ?? 0,
    run_at: Number.isFinite(runAt) ? runAt : now,
    attempt: 0,
    attempt_base: 0,
    max_attempts: o.maxAttempts ?? null,
    backoff_ms: o.backoffMs ?? null,
    max_backoff_ms: o.maxBackoffMs ?? null,
    timeout_ms: o.timeoutMs ?? null,
    run_token: 0,
    lease_expires_at: null,
    concurrency_key: o.concurrency ? keySlot(o.concurrency.key) : null,
    slots_held: 0,
    open_children: 0,
    wait_mode: 0,
    wait_remaining: 0,
    awaited: 0,
    unobserved_failures: 0,
    observed: 0,
    ignore_failure: o.ignoreFailure ? 1 : 0,
    deps_remaining: 0,
    run_regardless: o.runRegardless ? 1 : 0,
    handler_done: 0,
    result: null,
    error: null,
    progress: null,
    created_at: now,
    started_at: null,
    finished_at: null,
    settled_at: null,
    children_settled_at: null,
    worker_id: null,
  };
}
