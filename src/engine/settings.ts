/**
 * Type settings: registering a type's retry policy, timeout and concurrency limit (shared by
 * every process through the store), and reading them back.
 */
import type { StoreTx, TaskCore, TypeConfigRow } from '../store/store.js';
import { typeSlot } from './batch.js';
import type { EngineState } from './state.js';

/** Stores per-type settings shared by every process (retry policy, timeout, concurrency limit). */
export async function configureTypes(engine: EngineState, rows: TypeConfigRow[]): Promise<void> {
  await engine.run(async (tx) => {
    await tx.upsertTypeConfigs(rows);
    for (const r of rows) {
      // The last registration holds: one without a limit removes the type's limit.
      await tx.setSlotMax(r.namespace, typeSlot(r.type), r.concurrency);
      engine.typeConfigs.set(`${r.namespace}\0${r.type}`, r);
    }
  });
}

/**
 * Reloads a namespace's shared per-type settings (other processes may have registered types)
 * into this process's copy, and returns them (the server keeps its own copy of them).
 */
export async function loadTypeConfigs(engine: EngineState, namespace: string): Promise<TypeConfigRow[]> {
  const rows = await engine.store.typeConfigs(namespace);
  for (const r of rows) engine.typeConfigs.set(`${namespace}\0${r.type}`, r);
  return rows;
}

/**
 * The type settings in force in the database for these tasks' types (keyed namespace NUL
 * type), read in the transaction: retry decisions must not use this process's copy, which
 * misses types registered by other processes, and namespaces it never served (the sweeper
 * fails expired leases of every namespace). Only types some task takes a default from.
 */
export async function typeConfigsIn(
  tx: StoreTx,
  rows: Array<Pick<TaskCore, 'namespace' | 'type' | 'max_attempts' | 'backoff_ms' | 'max_backoff_ms'>>,
): Promise<Map<string, TypeConfigRow>> {
  const keys = new Map<string, { namespace: string; type: string }>();
  for (const r of rows)
    if (r.max_attempts === null || r.backoff_ms === null || r.max_backoff_ms === null)
      keys.set(`${r.namespace}\0${r.type}`, { namespace: r.namespace, type: r.type });
  if (!keys.size) return new Map();
  return new Map((await tx.getTypeConfigs([...keys.values()])).map((c) => [`${c.namespace}\0${c.type}`, c]));
}
