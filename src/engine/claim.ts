/**
 * Claiming: `queued` → `running` for the best ready tasks a worker serves, within the
 * concurrency limits of types and keys, with a lease and a new attempt token.
 */
import type { ClaimRow, StoreTx } from '../store/store.js';
import { Batch, SLOT_KEY, SLOT_TYPE, typeSlot } from './batch.js';
import { type ClaimedTask, DEFAULTS } from './defs.js';
import type { EngineState } from './state.js';

/**
 * Claims up to `limit` ready tasks of the given types, best first, honouring the
 * concurrency limits of types and keys across all workers, and leases them.
 */
export async function claim(
  engine: EngineState,
  namespace: string,
  types: string[],
  limit: number,
  leaseMs = engine.leaseMs,
  workerId: string | null = null,
): Promise<ClaimedTask[]> {
  if (limit <= 0 || types.length === 0) return [];
  const { store } = engine;
  if (store.claimReady && !((engine.limitedUntil.get(namespace) ?? 0) > Date.now())) {
    // One round trip where the store can: the one-statement claim, on its own.
    const claimed = await store.claimReady({
      namespace,
      types,
      limit,
      leaseMs,
      graceMs: DEFAULTS.timeoutGraceMs,
      typeTimeouts: typeTimeouts(engine, namespace, types),
      workerId,
    });
    if (claimed) {
      const b = new Batch(() => claimed.now, engine.listeners.size > 0);
      const out = claimedTasks(b, claimed.rows);
      engine.tell(b);
      return out;
    }
    engine.limitedUntil.set(namespace, Date.now() + 5000); // the general path, for a while
  }
  return engine.run((tx, b) => claimIn(engine, tx, b, namespace, types, limit, leaseMs, workerId));
}

/** Default timeouts of these types, from this process's copy of their settings. */
function typeTimeouts(engine: EngineState, namespace: string, types: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const type of types) {
    const t = engine.typeConfig(namespace, type)?.timeout_ms;
    if (t != null) out[type] = t;
  }
  return out;
}

/** Claimed rows, best first, as the worker takes them; their events. */
function claimedTasks(b: Batch, rows: ClaimRow[]): ClaimedTask[] {
  rows.sort((x, y) => y.priority - x.priority || x.run_at - y.run_at || (x.id < y.id ? -1 : 1));
  for (const row of rows) b.taskEvent(row, 'running');
  return rows.map((row) => ({ row, token: row.run_token }));
}

/** Earliest time a queued task of these types becomes due (for the worker's timer). */
export async function nextRunAt(
  engine: EngineState,
  namespace: string,
  types: string[],
): Promise<number | null> {
  return engine.store.nextRunAt(namespace, types);
}

export async function claimIn(
  engine: EngineState,
  tx: StoreTx,
  b: Batch,
  namespace: string,
  types: string[],
  limit: number,
  leaseMs: number,
  workerId: string | null,
): Promise<ClaimedTask[]> {
  if (limit <= 0 || types.length === 0) return [];
  const timeouts = typeTimeouts(engine, namespace, types);
  if (tx.claimReady && !((engine.limitedUntil.get(namespace) ?? 0) > Date.now())) {
    // One statement when the namespace has no concurrency limits (null: it has, take the
    // general path); nothing claimed then means nothing is due.
    const rows = await tx.claimReady({
      namespace,
      types,
      now: b.now,
      limit,
      leaseMs,
      graceMs: DEFAULTS.timeoutGraceMs,
      typeTimeouts: timeouts,
      workerId,
    });
    if (rows) return claimedTasks(b, rows);
  }
  // Only the slots this claim may take: its types' limits, locked now, and below the slots
  // of its candidates' keys; of the other keys, only the full ones (their tasks are passed over).
  const typeSlots = await tx.getSlots(namespace, types.map(typeSlot));
  const { any: withKeys, full: fullKeys } = await tx.fullKeySlots(namespace);
  // A namespace with limits skips the one-statement claim for a while: it would claim nothing.
  if (tx.claimReady && (typeSlots.length || withKeys)) engine.limitedUntil.set(namespace, Date.now() + 5000);
  const free = new Map<string, number>();
  for (const s of typeSlots) free.set(s.key, s.max - s.running);
  let candidates: Awaited<ReturnType<StoreTx['claimCandidates']>> = [];
  for (const type of types) {
    const want = Math.min(limit, free.get(typeSlot(type)) ?? limit);
    if (want <= 0) continue;
    const rows = await tx.claimCandidates({
      namespace,
      type,
      now: b.now,
      limit: want,
      excludeKeys: fullKeys,
      withKeys,
    });
    candidates = candidates.length ? candidates.concat(rows) : rows;
  }
  if (types.length > 1)
    candidates.sort((x, y) => y.priority - x.priority || x.run_at - y.run_at || (x.id < y.id ? -1 : 1));
  const keys = [
    ...new Set(candidates.flatMap((c) => (c.concurrency_key !== null ? [c.concurrency_key] : []))),
  ];
  // Read fresh under lock: a key's slot may have filled since fullKeySlots looked.
  for (const s of await tx.getSlots(namespace, keys)) free.set(s.key, s.max - s.running);
  // Choose within the free slots of each type and key; the rest stay queued.
  const ids: string[] = [];
  const slotsHeld: Record<string, number> = {};
  for (const c of candidates) {
    if (ids.length >= limit) break;
    let held = 0;
    const ts = typeSlot(c.type);
    const tFree = free.get(ts);
    if (tFree !== undefined) {
      if (tFree <= 0) continue;
      held |= SLOT_TYPE;
    }
    const kFree = c.concurrency_key !== null ? free.get(c.concurrency_key) : undefined;
    if (c.concurrency_key !== null) {
      // No slot: it was just deleted as unused, and the spawn of this task makes it again;
      // the task waits for the next claim rather than run without its limit.
      if (kFree === undefined || kFree <= 0) continue;
      held |= SLOT_KEY;
    }
    if (held & SLOT_TYPE) {
      free.set(ts, tFree! - 1);
      b.slot(namespace, ts, 1);
    }
    if (held & SLOT_KEY) {
      free.set(c.concurrency_key!, kFree! - 1);
      b.slot(namespace, c.concurrency_key!, 1);
    }
    if (held) slotsHeld[c.id] = held;
    ids.push(c.id);
  }
  if (!ids.length) return [];
  const rows = await tx.claimByIds({
    ids,
    now: b.now,
    leaseMs,
    graceMs: DEFAULTS.timeoutGraceMs,
    typeTimeouts: timeouts,
    slotsHeld,
    workerId,
  });
  if (types.length > 1 || rows.length > 1) {
    const order = new Map(ids.map((id, i) => [id, i]));
    rows.sort((x, y) => order.get(x.id)! - order.get(y.id)!);
  }
  for (const row of rows) b.taskEvent(row, 'running');
  return rows.map((row) => ({ row, token: row.run_token }));
}
