/**
 * The columns of the tasks table as TypeScript sees them: names checked against TaskRow, with
 * the Postgres type each array parameter is cast to in batched statements (`unnest($1::text[])`).
 * test/postgres.schema.test.ts checks these against the migrated table.
 */
import { JSON_TEXT_COLUMNS } from '../columns.js';
import type { TaskRow } from '../store.js';

export { CLAIM_COLUMNS, COMPLETED_COLUMNS, KEYED_COLUMNS, OUTCOME_COLUMNS } from '../columns.js';

/** A column's Postgres type, and `null` when it is nullable. */
export type ColumnType = 'text' | 'text null' | 'integer' | 'integer null' | 'bigint' | 'bigint null';

export const TASK_COLUMN_TYPES = {
  job_id: 'text',
  id: 'text',
  namespace: 'text',
  parent_id: 'text null',
  spawn_key: 'text null',
  dedup_key: 'text null',
  type: 'text',
  payload: 'text null',
  state: 'text',
  priority: 'integer',
  run_at: 'bigint',
  attempt: 'integer',
  attempt_base: 'integer',
  max_attempts: 'integer null',
  backoff_ms: 'bigint null',
  max_backoff_ms: 'bigint null',
  timeout_ms: 'bigint null',
  run_token: 'integer',
  lease_expires_at: 'bigint null',
  concurrency_key: 'text null',
  slots_held: 'integer',
  open_children: 'integer',
  wait_mode: 'integer',
  wait_remaining: 'integer',
  awaited: 'integer',
  unobserved_failures: 'integer',
  observed: 'integer',
  ignore_failure: 'integer',
  deps_remaining: 'integer',
  run_regardless: 'integer',
  handler_done: 'integer',
  result: 'text null',
  error: 'text null',
  progress: 'text null',
  created_at: 'bigint',
  started_at: 'bigint null',
  finished_at: 'bigint null',
  settled_at: 'bigint null',
  children_settled_at: 'bigint null',
  worker_id: 'text null',
} as const satisfies Record<keyof TaskRow, ColumnType>;

export type TaskColumn = keyof typeof TASK_COLUMN_TYPES;

export const TASK_COLUMNS = Object.keys(TASK_COLUMN_TYPES) as TaskColumn[];

/** The array type a column's values are bound as. */
export const arrayType = (c: TaskColumn) => `${TASK_COLUMN_TYPES[c].replace(' null', '')}[]`;

export const isNullable = (c: TaskColumn) => TASK_COLUMN_TYPES[c].endsWith(' null');

/** TaskCore: everything but the JSON texts. */
export const CORE_COLUMNS = TASK_COLUMNS.filter((c) => !JSON_TEXT_COLUMNS.has(c));

/** A column list for SQL, optionally qualified by a table alias. */
export const list = (cols: readonly string[], alias?: string) =>
  cols.map((c) => (alias ? `${alias}.${c}` : c)).join(', ');
