/**
 * Transactional submit and spawn (issue 3, point 6): with `options.transaction`, a job (or a
 * child) is written in the caller's own PostgreSQL transaction, beside the caller's rows, and
 * exists if and only if that transaction commits. Workers hear of it on commit.
 */
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ConflictError, type Dynatask, NotFoundError, open, ValidationError } from '../src/index.js';
import { deferred, settled, sleep, untilState, within } from './conformance/harness.js';
import { Schemas, withSchema } from './postgres/server.js';

const schemas = new Schemas();
afterAll(() => schemas.dropAll());

const opened: Array<{ close(): Promise<void> }> = [];
afterEach(async () => {
  for (const o of opened.splice(0).reverse()) await o.close();
});

/** An instance on a fresh schema, a client of the application's own, and its orders table. */
async function setup(leaseMs?: number): Promise<{ dt: Dynatask; app: pg.Client; schema: string }> {
  const schema = schemas.fresh('txn');
  const dt = await open({ database: withSchema(schemas.url, schema), ...(leaseMs ? { leaseMs } : {}) });
  opened.push(dt);
  const app = new pg.Client({ connectionString: schemas.url });
  await app.connect();
  opened.push({ close: () => app.end() });
  await app.query(`CREATE TABLE "${schema}".orders (id int PRIMARY KEY, job_id text)`);
  return { dt, app, schema };
}

describe('postgres: submit and spawn inside the caller’s transaction', () => {
  it('a job submitted in a transaction that rolls back never exists and never runs', async () => {
    const { dt, app, schema } = await setup();
    let ran = 0;
    dt.handle('ship', () => {
      ran++;
      return null;
    });
    await dt.start({ pollMs: 60_000 });
    await app.query('BEGIN');
    const job = await dt.submit('ship', { order: 1 }, { transaction: app });
    await app.query(`INSERT INTO "${schema}".orders VALUES (1, $1)`, [job.id]);
    // Not visible outside the transaction before it commits.
    await expect(dt.getJob(job.id)).rejects.toBeInstanceOf(NotFoundError);
    await app.query('ROLLBACK');
    await expect(dt.getJob(job.id)).rejects.toBeInstanceOf(NotFoundError);
    expect((await app.query(`SELECT count(*)::int AS n FROM "${schema}".orders`)).rows[0].n).toBe(0);
    // A job submitted after it runs, so the worker was listening: the rolled-back one never came.
    expect((await settled(dt, await dt.submit('ship', { order: 2 }))).state).toBe('succeeded');
    expect(ran).toBe(1);
  });

  it('a job submitted in a transaction that commits exists with the caller’s rows, and a worker starts it on commit', async () => {
    const { dt, app, schema } = await setup();
    dt.handle('ship', (ctx) => ({ shipped: (ctx.task.payload as { order: number }).order }));
    // A 60 s poll: the job can only start in time if the commit's notification wakes the worker.
    await dt.start({ pollMs: 60_000 });
    await app.query('BEGIN');
    await app.query(`INSERT INTO "${schema}".orders VALUES (7, NULL)`);
    const [job] = await dt.submitMany([
      { type: 'ship', payload: { order: 7 }, options: { transaction: app } },
    ]);
    await app.query(`UPDATE "${schema}".orders SET job_id = $1 WHERE id = 7`, [job!.id]);
    await app.query('COMMIT');
    const info = await within(dt.waitForJob(job!.id, 50), 10_000, 'the committed job to settle');
    expect(info).toMatchObject({ state: 'succeeded', result: { shipped: 7 } });
    const row = (await app.query(`SELECT job_id FROM "${schema}".orders WHERE id = 7`)).rows[0];
    expect(row.job_id).toBe(job!.id);
  });

  it('a handler spawns children in its own transaction: kept on commit, gone on rollback', async () => {
    const { dt, schema } = await setup();
    const pool = new pg.Pool({ connectionString: schemas.url, max: 2 });
    opened.push({ close: () => pool.end() });
    dt.handle('order', async (ctx) => {
      const { keep } = ctx.task.payload as { keep: boolean };
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        await client.query(`INSERT INTO "${schema}".orders VALUES ($1, $2)`, [keep ? 1 : 2, ctx.task.jobId]);
        await ctx.spawn('line', 'a', { transaction: client, key: 'a' });
        await client.query(keep ? 'COMMIT' : 'ROLLBACK');
      } finally {
        client.release();
      }
      return keep;
    });
    dt.handle('line', (ctx) => ctx.task.payload);
    await dt.start();
    const kept = await settled(dt, await dt.submit('order', { keep: true }));
    expect(kept).toMatchObject({ state: 'succeeded', total: 2 });
    expect(kept.counts.succeeded).toBe(2);
    const dropped = await settled(dt, await dt.submit('order', { keep: false }));
    expect(dropped).toMatchObject({ state: 'succeeded', total: 1 });
    const orders = await pool.query(`SELECT id FROM "${schema}".orders ORDER BY id`);
    expect(orders.rows.map((r) => r.id)).toEqual([1]);
  });

  it('a spawn whose transaction rolled back uses up no implicit key: the re-run after a wait ships once', async () => {
    const { dt } = await setup();
    const pool = new pg.Pool({ connectionString: schemas.url, max: 2 });
    opened.push({ close: () => pool.end() });
    const release = deferred();
    let runs = 0;
    let shipped = 0;
    dt.handle('order', async (ctx) => {
      runs++;
      const client = await pool.connect();
      try {
        // The first run's first try rolls back (as a serialisation failure would); the second commits.
        for (let attempt = 1; ; attempt++) {
          await client.query('BEGIN');
          await ctx.spawn('ship', null, { transaction: client });
          if (runs === 1 && attempt === 1) {
            await client.query('ROLLBACK');
            continue;
          }
          // Within one open transaction, a second spawn counts on the first one's number.
          await ctx.spawn('label', null, { transaction: client });
          await client.query('COMMIT');
          break;
        }
      } finally {
        client.release();
      }
      await ctx.spawn('gate', null); // keeps the wait open, so the handler runs again
      await ctx.waitAll();
      return 'done';
    });
    dt.handle('ship', () => {
      shipped++;
      return 'shipped';
    });
    dt.handle('label', () => 'labelled');
    dt.handle('gate', () => release.promise);
    await dt.start();
    const job = await dt.submit('order', null);
    await untilState(dt, job.rootTaskId, 'waiting');
    release.resolve();
    const info = await settled(dt, job);
    expect(info).toMatchObject({ state: 'succeeded', result: 'done', total: 4 });
    expect(runs).toBe(2);
    expect(shipped).toBe(1);
    const kids = (await dt.tree(job.id)).tasks.filter((t) => t.parentId !== null);
    expect(kids.map((t) => [t.key, t.type])).toEqual([
      ['#0', 'ship'],
      ['#1', 'label'],
      ['#2', 'gate'],
    ]);
  });

  it('a ctx call made while the handler’s own transaction holds the task is refused at once; other work goes on', async () => {
    const { dt, schema } = await setup();
    const pool = new pg.Pool({ connectionString: schemas.url, max: 2 });
    opened.push({ close: () => pool.end() });
    const refused: unknown[] = [];
    let stepRan = false;
    const holding = deferred();
    const go = deferred();
    dt.handle('order', async (ctx) => {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        await client.query(`INSERT INTO "${schema}".orders VALUES (1, $1)`, [ctx.task.jobId]);
        await ctx.spawn('line', 'a', { transaction: client, key: 'a' });
        // The spawn locked this task's row in the caller's transaction: these would wait for
        // the caller, who waits for them (before: the whole process hung here).
        for (const call of <Array<() => Promise<unknown>>>[
          () => ctx.progress(0.5),
          () =>
            ctx.step('s', () => {
              stepRan = true; // refused before its function runs
              return 1;
            }),
          () => ctx.spawn('line', 'b', { key: 'b' }),
        ])
          refused.push(await within(call(), 5000, 'the ctx call to return').catch((e) => e));
        holding.resolve();
        await go.promise;
        await client.query('COMMIT');
      } catch (e) {
        await client.query('ROLLBACK');
        throw e;
      } finally {
        client.release();
      }
      await ctx.progress(1); // committed: the task is free again
      return 'ok';
    });
    dt.handle('line', (ctx) => ctx.task.payload);
    dt.handle('other', () => 'done');
    await dt.start();
    const job = await dt.submit('order', null);
    await within(holding.promise, 10_000, 'the handler to hold its transaction open');
    expect(refused).toHaveLength(3);
    expect(stepRan).toBe(false);
    for (const e of refused) {
      expect(e).toBeInstanceOf(ConflictError);
      expect((e as Error).message).toMatch(/options\.transaction.*has not committed/);
    }
    // Unrelated work of the process does not wait for the open transaction.
    expect((await settled(dt, await dt.submit('other', null), 10_000)).state).toBe('succeeded');
    go.resolve();
    const info = await settled(dt, job, 10_000);
    expect(info).toMatchObject({ state: 'succeeded', total: 2 });
  });

  it('a task row locked by someone else’s transaction stalls nothing else of the process', async () => {
    // Heartbeats every 200 ms: each one needs the locked row of the running task.
    const { dt, app, schema } = await setup(600);
    const running = deferred();
    const release = deferred();
    dt.handle('held', async () => {
      running.resolve();
      await release.promise;
      return 'held';
    });
    dt.handle('other', () => 'done');
    await dt.start();
    const held = await dt.submit('held', null);
    await within(running.promise, 10_000, 'the held task to run');
    await app.query('BEGIN');
    await app.query(`SELECT id FROM "${schema}".tasks WHERE id = $1 FOR UPDATE`, [held.rootTaskId]);
    try {
      // Before: the heartbeat waited for the row inside the store's one-at-a-time order, and
      // every other operation of the process waited behind it.
      await sleep(300); // let a heartbeat start waiting for the row
      for (let i = 0; i < 3; i++)
        expect((await settled(dt, await dt.submit('other', i), 5000)).state).toBe('succeeded');
    } finally {
      await app.query('ROLLBACK');
    }
    release.resolve();
    expect((await settled(dt, held, 10_000)).state).toBe('succeeded');
  });

  it('one call may not mix transactions, and a non-client is refused before anything is written', async () => {
    const { dt, app } = await setup();
    await expect(
      dt.submitMany([
        { type: 'x', payload: null, options: { transaction: app } },
        { type: 'x', payload: null },
      ]),
    ).rejects.toThrow(/same options.transaction/);
    await expect(dt.submit('x', null, { transaction: { not: 'a client' } })).rejects.toBeInstanceOf(
      ValidationError,
    );
    expect(await dt.listJobs()).toHaveLength(0);
  });
});

describe('sqlite: transactional submit', () => {
  it('is refused with an error naming the PostgreSQL store', async () => {
    const dt = await open({ database: ':memory:' });
    opened.push(dt);
    await expect(dt.submit('x', null, { transaction: {} })).rejects.toThrow(/use the PostgreSQL store/);
    expect(await dt.listJobs()).toHaveLength(0);
  });
});
