/**
 * Column lists shared by every store: which columns each narrow read returns. Each list matches
 * a row type of store.ts (OutcomeRow, KeyedRow, ClaimRow, CompletedRow), so both stores read
 * exactly the same fields for the engine.
 */
import type { TaskRow } from './store.js';

type TaskColumn = keyof TaskRow;

/** The columns holding JSON texts; every other column is in a TaskCore. */
export const JSON_TEXT_COLUMNS: ReadonlySet<TaskColumn> = new Set<TaskColumn>([
  'payload',
  'result',
  'error',
  'progress',
]);

/** OutcomeRow: a child's outcome, for durable waits. */
export const OUTCOME_COLUMNS = [
  'id',
  'type',
  'parent_id',
  'spawn_key',
  'state',
  'result',
  'error',
  'observed',
  'ignore_failure',
] as const satisfies readonly TaskColumn[];

/** KeyedRow: a task found by spawn key or dedup key. */
export const KEYED_COLUMNS = [
  'id',
  'job_id',
  'type',
  'parent_id',
  'spawn_key',
  'dedup_key',
  'state',
] as const satisfies readonly TaskColumn[];

/** ClaimRow: what a worker needs of a claimed task. */
export const CLAIM_COLUMNS = [
  'id',
  'job_id',
  'namespace',
  'parent_id',
  'type',
  'payload',
  'state',
  'priority',
  'run_at',
  'attempt',
  'run_token',
  'timeout_ms',
  'concurrency_key',
  'slots_held',
  'started_at',
  'lease_expires_at',
] as const satisfies readonly TaskColumn[];

/** CompletedRow: a task after a guarded completion, with the counters its settling needs. */
export const COMPLETED_COLUMNS = [
  'id',
  'job_id',
  'namespace',
  'parent_id',
  'type',
  'state',
  'awaited',
  'ignore_failure',
  'observed',
  'slots_held',
  'concurrency_key',
  'open_children',
  'unobserved_failures',
  'children_settled_at',
] as const satisfies readonly TaskColumn[];
