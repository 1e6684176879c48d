/** dynatask: dependent, asynchronous job processing with task trees. */

export { HttpPort, type HttpPortOptions } from './client/http-port.js';
export { HttpError, PayloadTooLargeError } from './client/transport.js';
export type { HandlerOptions, OpenOptions, StartOptions } from './dynatask.js';
export { DEFAULT_DATABASE, Dynatask, isServerUrl, JobHandle, open } from './dynatask.js';
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
export { LocalPort } from './engine/local-port.js';
export type { DynataskPort, JobSummary, PortTask, WorkerPort } from './engine/port.js';
export * from './engine/types.js';
export type { Handler } from './engine/worker.js';
export { openStore } from './store/open.js';
export { PostgresStore, type PostgresStoreOptions } from './store/postgres/postgres-store.js';
export { SqliteStore } from './store/sqlite/sqlite-store.js';
export type { Store, StoreTx } from './store/store.js';
