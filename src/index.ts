/** dynatask: dependent, asynchronous job processing with task trees. */

export type { HandlerOptions, OpenOptions, StartOptions } from './dynatask.js';
export { DEFAULT_DATABASE, Dynatask, JobHandle, open } from './dynatask.js';
export type { ChildSpec, TaskMap, TaskMeta } from './engine/context.js';
export { TaskContext } from './engine/context.js';
export { Engine } from './engine/engine.js';
export {
  ChildTaskFailedError,
  ConflictError,
  JobFailedError,
  NonRetryableError,
  NotFoundError,
  StaleAttemptError,
  ValidationError,
} from './engine/errors.js';
export * from './engine/types.js';
export type { Handler } from './engine/worker.js';
export { openStore } from './store/open.js';
export { PostgresStore, type PostgresStoreOptions } from './store/postgres/postgres-store.js';
export { SqliteStore } from './store/sqlite/sqlite-store.js';
export type { Store, StoreTx } from './store/store.js';
