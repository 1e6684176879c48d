/**
 * Finishing attempts: completions, failures (retry with backoff, or fail for good), claims
 * given back, heartbeats (lease renewal) and the sweeper's expiry of lost leases. `report`
 * is a worker's round trip: outcomes and the next claim in one transaction.
 */
import type { StoreTx, TaskCore, TaskPatch } from '../store/store.js';
import { type Batch, releaseSlots } from './batch.js';
import { claimIn } from './claim.js';
import { type AttemptRef, type ClaimedTask, DEFAULTS } from './defs.js';
import { errorJson, serialiseResults } from './rows.js';
import { typeConfigsIn } from './settings.js';
import { type Settling, settle, settledByChildren, terminate } from './settle.js';
import { type EngineState, heldRows, leaseUntil, recorded } from './state.js';
import type { TaskError } from './types.js';

/**
 * Records successful handler returns. A task with no open children settles at once;
 * otherwise it waits in `completing` for the last of them. Returns, per item, whether
 * the attempt still held the task (false: stale, nothing changed).
 */
export async function complete(
  engine: EngineState,
  items: Array<AttemptRef & { result: unknown }>,
): Promise<boolean[]> {
  const { ok, bad } = serialiseResults(items);
  return engine.run(async (tx, b) => {
    const done = await completeIn(tx, b, items, ok);
    if (bad.length) await failIn(tx, b, bad);
    return done;
  });
}

/**
 * A worker's round trip: records completions and failures, then claims the next batch,
 * all in one transaction.
 */
export async function report(
  engine: EngineState,
  completed: Array<AttemptRef & { result: unknown }>,
  failed: Array<AttemptRef & { error: TaskError }>,
  next?: { namespace: string; types: string[]; limit: number; leaseMs?: number; workerId?: string },
): Promise<{ completed: boolean[]; failed: boolean[]; claimed: ClaimedTask[] }> {
  const { ok, bad } = serialiseResults(completed);
  const failing = bad.length ? failed.concat(bad) : failed;
  return engine.run(async (tx, b) => ({
    completed: completed.length ? await completeIn(tx, b, completed, ok) : [],
    failed: failing.length ? (await failIn(tx, b, failing)).slice(0, failed.length) : [],
    claimed: next
      ? await claimIn(
          engine,
          tx,
          b,
          next.namespace,
          next.types,
          next.limit,
          next.leaseMs ?? engine.leaseMs,
          next.workerId ?? null,
        )
      : [],
  }));
}

/**
 * Records failed attempts: retried with exponential backoff and jitter while attempts
 * remain and the error is retryable, otherwise the task fails and its unsettled
 * descendants are cancelled.
 */
export async function fail(
  engine: EngineState,
  items: Array<AttemptRef & { error: TaskError }>,
): Promise<boolean[]> {
  return engine.runReadingFirst((tx, b) => failIn(tx, b, items));
}

/**
 * Gives claimed tasks back: queued again at once, as if never claimed, without counting an
 * attempt. For a claim whose answer nobody received (the worker hung up) and for a worker
 * that stops before running what it holds. Per item, whether the attempt still held it.
 */
export async function release(engine: EngineState, items: AttemptRef[]): Promise<boolean[]> {
  if (!items.length) return [];
  return engine.runReadingFirst(async (tx, b) => {
    const held = await heldRows(tx, items);
    const patches: TaskPatch[] = [];
    for (const row of held.values()) {
      releaseSlots(b, row);
      // It keeps its run_at, its place in the queue: it never ran, and did nothing wrong.
      patches.push({
        id: row.id,
        state: 'queued',
        lease_expires_at: null,
        started_at: null,
        slots_held: 0,
      });
      b.taskEvent(row, 'queued');
      b.ready(row);
    }
    await tx.updateTasks(patches);
    return items.map((i) => held.has(i.id));
  });
}

/** Renews the leases of running attempts; reports, per item, `ok`, `cancelled` or `lost`. */
export async function heartbeat(
  engine: EngineState,
  items: AttemptRef[],
  leaseMs = engine.leaseMs,
): Promise<Array<'ok' | 'cancelled' | 'lost'>> {
  return engine.runReadingFirst(async (tx, b) => {
    // A row another transaction holds is passed over, not waited for: a heartbeat of many
    // tasks must not wait for a caller's transaction holding one (options.transaction).
    const ids = items.map((i) => i.id);
    const rows = new Map((await tx.getTasks(ids, { skipLocked: true })).map((r) => [r.id, r]));
    const missing = ids.filter((id) => !rows.has(id));
    // Passed over, not gone: not renewed this time (the sweeper passes over it too).
    const busy = new Set(missing.length ? (await tx.outcomes(missing)).map((r) => r.id) : []);
    const patches: TaskPatch[] = [];
    const out = items.map((item) => {
      const r = rows.get(item.id);
      if (!r) return busy.has(item.id) ? ('ok' as const) : ('lost' as const);
      if (r.state === 'running' && r.run_token === item.token) {
        patches.push({
          id: r.id,
          lease_expires_at: leaseUntil(b.now, r.started_at ?? b.now, r.timeout_ms, leaseMs),
        });
        return 'ok' as const;
      }
      return r.state === 'cancelled' ? ('cancelled' as const) : ('lost' as const);
    });
    await tx.updateTasks(patches);
    return out;
  });
}

/** Fails the attempts whose lease expired (crashed or stalled workers); returns how many. */
export async function expireLeases(engine: EngineState, limit = 1000): Promise<number> {
  return engine.run(async (tx, b) => {
    // The sweeper also deletes the slots of keys no task carries any longer, so that the
    // slots a claim reads stay few, whatever the number of keys ever used.
    await tx.dropUnusedKeySlots(limit);
    const rows = await tx.expiredLeases(b.now, limit);
    await failAttempts(
      tx,
      b,
      rows.map((row) => ({
        row,
        lost: true,
        error: {
          name: 'LeaseExpired',
          message: `attempt ${row.attempt} lost its lease: the worker crashed, stalled or timed out`,
        },
      })),
    );
    return rows.length;
  });
}

async function completeIn(
  tx: StoreTx,
  b: Batch,
  items: AttemptRef[],
  results: Array<{ id: string; token: number; result: string | null }>,
): Promise<boolean[]> {
  // One guarded statement per task moves it to succeeded or completing; stale attempts match nothing.
  const done = await tx.completeRunning(results, b.now);
  const ok = new Set<string>();
  const toSettle: Settling[] = [];
  for (const row of done) {
    ok.add(row.id);
    releaseSlots(b, { ...row, state: 'running' });
    if (row.state === 'succeeded') {
      toSettle.push({ row, state: 'succeeded', written: true });
    } else if (row.open_children === 0) {
      toSettle.push(settledByChildren(row)); // an unobserved child failure
    } else {
      b.taskEvent(row, 'completing');
    }
  }
  await settle(tx, b, toSettle);
  // A completion sent again after a lost answer: its attempt's result is already recorded.
  const again = await recorded(
    tx,
    items.filter((i) => !ok.has(i.id)),
    (r) => r.handler_done === 1,
  );
  const reported = new Set<string>();
  return items.map((i) => {
    if (reported.has(i.id)) return false; // the same attempt twice in one call counts once
    reported.add(i.id);
    return ok.has(i.id) || again.has(i.id);
  });
}

async function failIn(
  tx: StoreTx,
  b: Batch,
  items: Array<AttemptRef & { error: TaskError }>,
): Promise<boolean[]> {
  const held = await heldRows(tx, items);
  // A failure sent again after a lost answer: the attempt's failure is already recorded
  // (the task waits for its retry, or failed), unless its handler had completed instead.
  const again = await recorded(
    tx,
    items.filter((i) => !held.has(i.id)),
    (r) => r.handler_done === 0 && (r.state === 'queued' || r.state === 'failed'),
  );
  const failing: Array<{ row: TaskCore; error: TaskError }> = [];
  const seen = new Set<string>();
  const ok = items.map((item) => {
    if (seen.has(item.id)) return false; // the same attempt twice in one call counts once
    seen.add(item.id);
    const row = held.get(item.id);
    if (!row) return again.has(item.id);
    failing.push({ row, error: item.error });
    return true;
  });
  await failAttempts(tx, b, failing);
  return ok;
}

async function failAttempts(
  tx: StoreTx,
  b: Batch,
  failing: Array<{ row: TaskCore; error: TaskError; lost?: boolean }>,
) {
  await tx.insertAttempts(
    failing.map(({ row, error }) => ({
      job_id: row.job_id,
      task_id: row.id,
      attempt: row.attempt,
      started_at: row.started_at ?? b.now,
      finished_at: b.now,
      error: errorJson(error),
    })),
  );
  const retries: typeof failing = [];
  const permanent: typeof failing = [];
  const cfgs = await typeConfigsIn(
    tx,
    failing.map((f) => f.row),
  );
  for (const f of failing) {
    const cfg = cfgs.get(`${f.row.namespace}\0${f.row.type}`);
    const maxAttempts = f.row.max_attempts ?? cfg?.max_attempts ?? DEFAULTS.maxAttempts;
    // The budget counts from the last retryTask, which gives a fresh one.
    const used = f.row.attempt - f.row.attempt_base;
    (f.error.retryable !== false && used < maxAttempts ? retries : permanent).push(f);
  }
  // Permanent failures first: each cancels its subtree, which may hold other tasks of this
  // batch; those are settled now and must be neither retried nor failed a second time.
  for (const { row, error } of permanent) {
    if (b.terminated.has(row.id)) continue;
    releaseSlots(b, row);
    await terminate(tx, b, row, 'failed', error);
  }
  const patches: TaskPatch[] = [];
  for (const { row, error, lost } of retries) {
    if (b.terminated.has(row.id)) continue;
    releaseSlots(b, row);
    const cfg = cfgs.get(`${row.namespace}\0${row.type}`);
    const base = row.backoff_ms ?? cfg?.backoff_ms ?? DEFAULTS.backoffMs;
    const cap = row.max_backoff_ms ?? cfg?.max_backoff_ms ?? DEFAULTS.maxBackoffMs;
    const exp = Math.min(cap, base * 2 ** (row.attempt - row.attempt_base - 1));
    // "Equal jitter": at least half the delay, so retries of one burst spread out but never bunch at zero.
    const delay = Math.round(exp / 2 + Math.random() * (exp / 2));
    patches.push({
      id: row.id,
      state: 'queued',
      attempt: row.attempt + 1,
      // A task whose worker vanished did nothing wrong: it keeps its place in the queue (its
      // run_at, unchanged while it ran), instead of going behind all that was queued meanwhile.
      run_at: lost ? Math.min(row.run_at, b.now) : b.now + delay,
      lease_expires_at: null,
      wait_mode: 0,
      error: errorJson(error),
      finished_at: b.now,
    });
    b.taskEvent(row, 'queued');
    b.ready(row);
  }
  await tx.updateTasks(patches);
}
