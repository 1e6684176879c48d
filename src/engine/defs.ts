/**
 * The engine's own types and defaults, shared by its operation modules, its ports and the
 * server. Kept apart from engine.ts so that nothing the engine is built from imports it.
 */
import type { ClaimRow } from '../store/store.js';
import type { Outcome, SpawnOptions } from './types.js';

/** A type's settings as the engine stores them (the server reads them through the engine). */
export type { TypeConfigRow } from '../store/store.js';

/** Defaults used when neither the task nor its type says otherwise. */
export const DEFAULTS = {
  namespace: 'default',
  maxAttempts: 3,
  backoffMs: 1000,
  maxBackoffMs: 300_000,
  leaseMs: 30_000,
  /** Grace after a task's timeout before its lease expires, so the worker reports the timeout itself. */
  timeoutGraceMs: 1000,
};

/** One task to create: the type, its JSON payload and options. */
export interface SpawnSpec {
  type: string;
  payload?: unknown;
  options?: SpawnOptions;
}

/** A task handed to a worker by `claim`. */
export interface ClaimedTask {
  row: ClaimRow;
  token: number;
}

/** Identifies the attempt that holds a running task. */
export interface AttemptRef {
  id: string;
  token: number;
}

export type WaitSpec = { all: true } | { all: false; ids: string[] };

export type WaitResult = { suspended: true } | { suspended: false; outcomes: Outcome[] };

export interface EngineOptions {
  /** Lease given to a claimed task; heartbeats extend it. */
  leaseMs?: number;
}
