/** Building task rows from user input, validating it, and turning rows back into outcomes. */
import type { OutcomeRow, TaskCore, TaskRow } from '../store/store.js';
import { keySlot } from './batch.js';
import type { AttemptRef, SpawnSpec } from './engine.js';
import { ValidationError } from './errors.js';
import { newId } from './ids.js';
import type { Outcome, TaskError, TaskOptions } from './types.js';

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

export function validateOptions(o: TaskOptions | undefined, where: string): void {
  if (!o) return;
  const nonNegInt = (v: unknown, name: string, min = 0) => {
    if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < min))
      throw new ValidationError(`${where}.${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  };
  nonNegInt(o.maxAttempts, 'maxAttempts', 1);
  nonNegInt(o.backoffMs, 'backoffMs');
  nonNegInt(o.maxBackoffMs, 'maxBackoffMs');
  nonNegInt(o.timeoutMs, 'timeoutMs', 1);
  nonNegInt(o.delayMs, 'delayMs');
  if (o.priority !== undefined && (typeof o.priority !== 'number' || !Number.isInteger(o.priority)))
    throw new ValidationError(`${where}.priority must be an integer, got ${JSON.stringify(o.priority)}`);
  if (o.concurrency !== undefined) {
    if (typeof o.concurrency.key !== 'string' || o.concurrency.key === '')
      throw new ValidationError(`${where}.concurrency.key must be a non-empty string`);
    nonNegInt(o.concurrency.limit, 'concurrency.limit', 1);
  }
}

export function validateType(type: unknown, where: string): asserts type is string {
  if (typeof type !== 'string' || type === '' || type.length > 200)
    throw new ValidationError(`${where}.type must be a non-empty string of at most 200 characters`);
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
    worker_id: null,
  };
}
