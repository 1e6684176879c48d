/**
 * Settle times stay ordered when transactions overlap. Each transaction is stamped with the
 * database's clock at BEGIN; here one (B) begins, pauses, and another (A) begins later, settles
 * a child and commits; B then settles the parent. Without children_settled_at the parent would
 * be stamped with B's earlier time, before the child it waited for.
 */
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { type Dynatask, type DynataskEvent, open } from '../src/index.js';
import type { StoreTx } from '../src/store/store.js';
import { Schemas } from './postgres/server.js';

const schemas = new Schemas();
afterAll(() => schemas.dropAll());

const opened: Dynatask[] = [];
afterEach(async () => {
  vi.restoreAllMocks();
  for (const dt of opened.splice(0).reverse()) await dt.close();
});

/**
 * The next transaction of `dt` stops right after BEGIN (its time is read) until `go` is called.
 * Resolves `began` with that time.
 */
function pauseNextTransaction(dt: Dynatask) {
  const store = dt.engine.store;
  const real = store.transaction.bind(store);
  let go!: () => void;
  const gate = new Promise<void>((r) => (go = r));
  let began!: (now: number) => void;
  const started = new Promise<number>((r) => (began = r));
  vi.spyOn(store, 'transaction').mockImplementationOnce(<T>(fn: (tx: StoreTx) => Promise<T>) =>
    real(async (tx) => {
      began(tx.now());
      await gate;
      return fn(tx);
    }),
  );
  return { began: started, go };
}

/** Waits until the database's clock is past `t` (its times are whole milliseconds). */
async function clockPast(t: number): Promise<void> {
  await schemas.withClient(async (c) => {
    for (;;) {
      const { rows } = await c.query<{ now: string }>(
        'SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::int8 AS now',
      );
      if (Number(rows[0]!.now) > t) return;
    }
  });
}

/** Two instances on one schema (two processes, as far as the database can tell), and a root with children. */
async function setup(children: number) {
  const url = schemas.freshUrl('stamps');
  const a = await open({ database: url });
  const b = await open({ database: url });
  opened.push(a, b);
  const job = await a.submit('root', null);
  const [root] = await a.engine.claim(a.namespace, ['root'], 1);
  const rootRef = { id: root!.row.id, token: root!.token };
  await a.engine.spawn(
    rootRef,
    Array.from({ length: children }, () => ({ type: 'leaf' })),
    Array.from({ length: children }, (_, i) => `#${i}`),
  );
  const leaves = (await a.engine.claim(a.namespace, ['leaf'], children)).map((c) => ({
    id: c.row.id,
    token: c.token,
  }));
  expect(leaves).toHaveLength(children);
  return { a, b, job, rootRef, leaves };
}

describe('postgres: settle times when transactions overlap', () => {
  it('a parent settled by a transaction that began first is not stamped before the child another settled', async () => {
    const { a, b, job, rootRef, leaves } = await setup(2);
    await a.engine.complete([{ ...rootRef, result: 'root' }]); // completing: two children open
    const events: DynataskEvent[] = [];
    b.subscribe((e) => events.push(e));

    // B: completes the second leaf, but begins first and waits.
    const paused = pauseNextTransaction(b);
    const second = b.engine.complete([{ ...leaves[1]!, result: 2 }]);
    const tB = await paused.began;
    await clockPast(tB);
    // A: begins later, completes the first leaf, commits.
    expect(await a.engine.complete([{ ...leaves[0]!, result: 1 }])).toEqual([true]);
    paused.go();
    expect(await second).toEqual([true]);

    const first = await a.getTask(leaves[0]!.id);
    const root = await a.getTask(rootRef.id);
    const info = await a.getJob(job.id);
    expect(first.settledAt!).toBeGreaterThan(tB);
    expect(root.state).toBe('succeeded');
    expect(root.settledAt!).toBeGreaterThanOrEqual(first.settledAt!);
    expect(info.settledAt).toBe(root.settledAt);
    // B's events carry the same times.
    const rootEvent = events.find(
      (e) => e.kind === 'task' && e.taskId === rootRef.id && e.state === 'succeeded',
    );
    expect(rootEvent?.at).toBe(root.settledAt);
    expect(events.find((e) => e.kind === 'job')?.at).toBe(root.settledAt);
  });

  it('a parent cancelled by a transaction that began first is not stamped before the child another settled', async () => {
    const { a, b, rootRef, leaves } = await setup(1);

    // B: cancels the root (its handler still running), but begins first and waits.
    const paused = pauseNextTransaction(b);
    const cancelled = b.engine.cancelTask(rootRef.id);
    const tB = await paused.began;
    await clockPast(tB);
    // A: begins later, completes the leaf, commits.
    expect(await a.engine.complete([{ ...leaves[0]!, result: 1 }])).toEqual([true]);
    paused.go();
    expect(await cancelled).toBe(true);

    const leaf = await a.getTask(leaves[0]!.id);
    const root = await a.getTask(rootRef.id);
    expect(leaf).toMatchObject({ state: 'succeeded' });
    expect(root.state).toBe('cancelled');
    expect(root.settledAt!).toBeGreaterThanOrEqual(leaf.settledAt!);
    expect((await a.getJob(root.jobId)).settledAt).toBe(root.settledAt);
  });
});
