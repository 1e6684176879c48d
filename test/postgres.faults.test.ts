/**
 * Faults on Postgres (issue 3, point 7), with real processes (test/fixtures/pg-process.ts):
 *
 * - the server restarts in the middle of a running job: a dedicated private server (its own
 *   data folder, scripts/postgres.mjs) is stopped (fast shutdown: every connection is cut) and
 *   started again while workers are busy; the processes reconnect and the job completes with
 *   nothing lost;
 * - connections are dropped again and again while a job runs (pg_terminate_backend of every
 *   connection of the worker processes, in a loop): no task is ever half-moved, so every task
 *   settles exactly once, parents' counters end at zero, and the counts add up.
 *
 * Leases are short (2 s): an outcome whose COMMIT was cut off is unknown to its worker, which
 * drops it; the lease expires and the task runs again. That is the at-least-once contract, so
 * here, unlike test/postgres.multiprocess.test.ts, a task may run more than once: what must
 * hold is that the tree is exactly right once the job has settled.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { type PrivatePostgres, startPostgres } from '../scripts/postgres.mjs';
import type { JobInfo } from '../src/index.js';
import { CommitOutcomeUnknownError, PostgresStore } from '../src/store/postgres/postgres-store.js';
import type { NodePayload, PgProcessConfig } from './fixtures/pg-process.js';
import { checkTree, type Message, PgProcess, readRuns, treeSize } from './postgres/processes.js';
import { jobWithRoot } from './postgres/rows.js';
import { Schemas, withSchema } from './postgres/server.js';

// Like every Postgres test file, this one fails without a server given by the test command
// (npm test starts one), even though the restart test starts a dedicated server of its own.
const schemas = new Schemas();
afterAll(() => schemas.dropAll());

const LEASE_MS = 2000;
const JOB_TIMEOUT_MS = 90_000;

async function query<R extends pg.QueryResultRow>(
  url: string,
  text: string,
  values: unknown[] = [],
): Promise<R[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<R>(text, values)).rows;
  } finally {
    await c.end();
  }
}

describe('postgres faults: server restarts and dropped connections while a job runs', () => {
  const cleanup: Array<() => Promise<unknown> | unknown> = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  async function setup(serverUrl: string, workers: number, appName: string) {
    // (On the dedicated server the schema goes with the server; dropping it on the shared one is harmless.)
    const schema = schemas.fresh('faults');
    const database = `${withSchema(serverUrl, schema)}&application_name=${appName}`;
    const runsDir = await mkdtemp(join(tmpdir(), 'dynatask-pg-faults-'));
    cleanup.push(() => rm(runsDir, { recursive: true, force: true }));
    const spawn = (config: Omit<PgProcessConfig, 'runsDir'>) => {
      const p = new PgProcess({ runsDir, ...config });
      cleanup.push(async () => {
        p.kill();
        await p.exited;
      });
      return p;
    };
    const ws = Array.from({ length: workers }, () =>
      spawn({ role: 'worker', database, leaseMs: LEASE_MS, pollMs: 100, maxAttempts: 20 }),
    );
    // The engine process connects under another name: the connection killer leaves it alone.
    const engine = spawn({
      role: 'engine',
      database: `${withSchema(serverUrl, schema)}&application_name=${appName}_engine`,
      leaseMs: LEASE_MS,
    });
    await Promise.all([...ws, engine].map((p) => p.next('ready')));
    return { schema, runsDir, workers: ws, engine };
  }

  /** Polls (with short-lived connections) until `n` leaves of the job succeeded. */
  async function leavesDone(url: string, schema: string, jobId: string, n: number): Promise<void> {
    for (;;) {
      const [row] = await query<{ n: number }>(
        url,
        `SELECT count(*)::int AS n FROM "${schema}".tasks WHERE job_id = $1 AND state = 'succeeded'`,
        [jobId],
      );
      if (row!.n >= n) return;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  it('Postgres restarts in the middle of a job: processes reconnect and the job completes, nothing lost', async () => {
    const server: PrivatePostgres = await startPostgres();
    cleanup.push(() => server.stop());
    const shape = [20, 200];
    const total = treeSize(shape);
    const { schema, runsDir, workers, engine } = await setup(server.url, 3, 'dtrestart');
    engine.send({
      type: 'submit',
      ref: 'job',
      payload: { path: 'r', fan: shape, sleepMs: 2 } satisfies NodePayload,
    });
    const { jobId } = await engine.next<Message & { jobId: string }>('submitted');
    engine.send({ type: 'watch', jobId });

    await leavesDone(server.url, schema, jobId, Math.floor(total / 4));
    const [before] = await query<{ n: number }>(
      server.url,
      `SELECT count(*)::int AS n FROM "${schema}".tasks WHERE job_id = $1 AND state = 'succeeded'`,
      [jobId],
    );
    expect(before!.n).toBeLessThan(total);
    const t0 = Date.now();
    await server.restart(1000);
    const downMs = Date.now() - t0;

    const settled = await engine.next<Message & { job: JobInfo; loopErrors: number }>(
      'settled',
      JOB_TIMEOUT_MS,
    );
    const doneMs = Date.now() - t0;
    for (const w of workers) expect(await w.stop()).toBe(0);
    expect(await engine.stop()).toBe(0);
    expect(settled.job.state, JSON.stringify(settled.job.error)).toBe('succeeded');
    expect(settled.job.counts.succeeded).toBe(total);
    expect(settled.job.total).toBe(total);
    const check = await checkTree(server.url, schema, jobId, shape, await readRuns(runsDir), false);
    expect(check.problems).toEqual([]);
    console.log(
      `postgres restart: ${before!.n} of ${total} tasks done at the restart, server down ${downMs} ms, ` +
        `job done ${doneMs} ms after it; ${check.executions} executions; watcher errors ${settled.loopErrors}`,
    );
  }, 150_000);

  it('worker connections are terminated again and again during a job: every task settles exactly once', async () => {
    const url = schemas.url;
    const shape = [10, 300];
    const total = treeSize(shape);
    const appName = `dtkill_${process.pid}`;
    const { schema, runsDir, workers, engine } = await setup(url, 3, appName);
    engine.send({
      type: 'submit',
      ref: 'job',
      payload: { path: 'r', fan: shape, sleepMs: 1 } satisfies NodePayload,
    });
    const { jobId } = await engine.next<Message & { jobId: string }>('submitted');
    engine.send({ type: 'watch', jobId });

    // The killer: every 50 to 250 ms, cut every connection of the workers (busy or idle), for
    // 30 rounds. Bounded, so that on a loaded machine the job still gets to finish: what this
    // checks is that no cut leaves a task half-moved, not progress under endless cuts.
    let killing = true;
    let rounds = 0;
    let terminated = 0;
    const killer = (async () => {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        while (killing) {
          await new Promise((r) => setTimeout(r, 50 + Math.random() * 200));
          const r = await c.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM (
               SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1
             ) t`,
            [appName],
          );
          rounds++;
          terminated += r.rows[0]!.n;
          if (rounds >= 30) break;
        }
      } finally {
        await c.end();
      }
    })();
    cleanup.push(() => {
      killing = false;
      return killer;
    });

    const settled = await engine.next<Message & { job: JobInfo }>('settled', JOB_TIMEOUT_MS);
    killing = false;
    await killer;
    for (const w of workers) expect(await w.stop()).toBe(0);
    expect(await engine.stop()).toBe(0);
    expect(settled.job.state, JSON.stringify(settled.job.error)).toBe('succeeded');
    expect(settled.job.counts.succeeded).toBe(total);
    expect(settled.job.total).toBe(total);
    expect(terminated).toBeGreaterThan(0);
    const runs = await readRuns(runsDir);
    const check = await checkTree(url, schema, jobId, shape, runs, false);
    expect(check.problems).toEqual([]);
    console.log(
      `postgres dropped connections: ${total} tasks, ${rounds} rounds killed ${terminated} connections; ` +
        `${check.executions} executions`,
    );
  }, 150_000);

  it('a transaction whose connection is cut before COMMIT runs again on a new one; the store goes on', async () => {
    const appName = `dtcut_${process.pid}`;
    const store = new PostgresStore({ url: `${schemas.freshUrl('cut')}&application_name=${appName}` });
    cleanup.push(() => store.close());
    await store.migrate();
    const cut = () =>
      query(
        schemas.url,
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle in transaction'`,
        [appName],
      );
    // Cut while the transaction is open, between two of its statements.
    const { job, root } = jobWithRoot();
    let runs = 0;
    await store.transaction(async (tx) => {
      runs++;
      expect(await tx.getJobs([job.id])).toEqual([]);
      if (runs === 1) expect((await cut()).length).toBe(1);
      await tx.insertJobs([job]);
      await tx.insertTasks([root]);
      await tx.getJobs([job.id]);
    });
    expect(runs).toBe(2);
    expect((await store.getJob(job.id))?.id).toBe(job.id);
    expect((await store.getTask(root.id))?.id).toBe(root.id);

    // Cut just before COMMIT: either the store saw the connection break first (then it runs
    // the transaction again), or COMMIT went out on it (then the outcome is unknown to it, and
    // it says so instead of guessing). Never applied twice, never half.
    const second = jobWithRoot();
    runs = 0;
    let outcome: unknown;
    try {
      await store.transaction(async (tx) => {
        runs++;
        await tx.insertJobs([second.job]);
        await tx.insertTasks([second.root]);
        await tx.getJobs([second.job.id]);
        if (runs === 1) await cut();
      });
      outcome = 'committed';
    } catch (e) {
      outcome = e;
    }
    const stored = await store.getJob(second.job.id);
    if (outcome === 'committed') {
      expect(runs).toBe(2);
      expect(stored?.id).toBe(second.job.id);
    } else {
      expect(outcome).toBeInstanceOf(CommitOutcomeUnknownError);
      expect(runs).toBe(1);
      expect(stored).toBeUndefined(); // the server was gone before the COMMIT arrived
      expect(await store.getTask(second.root.id)).toBeUndefined();
    }
    // The pool replaced the broken connection.
    const third = jobWithRoot();
    await store.transaction(async (tx) => {
      await tx.insertJobs([third.job]);
      await tx.insertTasks([third.root]);
    });
    expect((await store.getJob(third.job.id))?.id).toBe(third.job.id);
  });
});
