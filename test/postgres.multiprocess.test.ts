/**
 * Many processes, one Postgres database (issue 3, point 2): 4 worker processes and 2 engine
 * processes (they submit, cancel and watch jobs, and run no handler) share one fresh schema.
 * One engine submits a tree of 50,051 tasks (1 root, 50 parents, 50 x 1,000 leaves; parents
 * wait for their children), the other submits a second, slower job and cancels it while it
 * runs; both watch their job until it settles, checking that its counts only move forwards.
 *
 * Then, from the database and from the executions the workers logged (test/fixtures/pg-process.ts):
 * no task was ever held by two workers at once (no overlapping executions of one task, no
 * attempt token used twice, one execution per claim), no task lost, no duplicate child, the
 * right counts; and the cancelled job left nothing behind.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { JobInfo } from '../src/index.js';
import type { NodePayload, PgProcessConfig } from './fixtures/pg-process.js';
import { checkTree, type Message, PgProcess, readRuns, treeSize } from './postgres/processes.js';
import { Schemas, withSchema } from './postgres/server.js';

const schemas = new Schemas();
afterAll(() => schemas.dropAll());

/** 1 root, 50 parents, 50,000 leaves. */
const SHAPE = [50, 1000];
const TOTAL = treeSize(SHAPE);
/** The job the second engine cancels: slow leaves, so it is still running when cancelled. */
const CANCEL_SHAPE = [4, 100];
const WORKERS = 4;
const JOB_TIMEOUT_MS = 150_000;

describe('postgres: 4 worker processes and 2 engine processes on one database', () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  it(`runs a ${TOTAL}-task tree to completion, each task held by one worker at a time, nothing lost or doubled`, async () => {
    const t0 = Date.now();
    const schema = schemas.fresh('multi');
    const database = withSchema(schemas.url, schema);
    const runsDir = await mkdtemp(join(tmpdir(), 'dynatask-pg-multi-'));
    cleanup.push(() => rm(runsDir, { recursive: true, force: true }));
    await mkdir(runsDir, { recursive: true });
    const spawn = (config: Omit<PgProcessConfig, 'database' | 'runsDir'>) => {
      const p = new PgProcess({ database, runsDir, ...config });
      cleanup.push(async () => {
        p.kill();
        await p.exited;
      });
      return p;
    };

    // The schema is migrated by whichever process gets there first: all start at once.
    const workers = Array.from({ length: WORKERS }, () =>
      spawn({ role: 'worker', leaseMs: 30_000, pollMs: 200 }),
    );
    const engines = [spawn({ role: 'engine', leaseMs: 30_000 }), spawn({ role: 'engine', leaseMs: 30_000 })];
    await Promise.all([...workers, ...engines].map((p) => p.next('ready')));
    const tReady = Date.now();

    const [big, other] = engines as [PgProcess, PgProcess];
    big.send({ type: 'submit', ref: 'big', payload: { path: 'r', fan: SHAPE } satisfies NodePayload });
    other.send({
      type: 'submit',
      ref: 'cancel',
      payload: { path: 'c', fan: CANCEL_SHAPE, sleepMs: 200 } satisfies NodePayload,
    });
    const { jobId } = await big.next<Message & { jobId: string }>('submitted');
    const { jobId: cancelId } = await other.next<Message & { jobId: string }>('submitted');
    big.send({ type: 'watch', jobId });

    // Cancel the second job once some of its leaves have started (it is really running).
    const started = async () => {
      const c = new pg.Client({ connectionString: schemas.url });
      await c.connect();
      try {
        for (;;) {
          const n = (
            await c.query<{ n: number }>(
              `SELECT count(*)::int AS n FROM "${schema}".tasks WHERE job_id = $1 AND state = 'running' AND parent_id IS NOT NULL`,
              [cancelId],
            )
          ).rows[0]!.n;
          if (n > 0) return;
          await new Promise((r) => setTimeout(r, 20));
        }
      } finally {
        await c.end();
      }
    };
    await started();
    other.send({ type: 'cancel', jobId: cancelId });
    expect((await other.next<Message & { ok: boolean }>('cancelled')).ok).toBe(true);
    other.send({ type: 'watch', jobId: cancelId });
    const cancelled = (await other.next<Message & { job: JobInfo }>('settled', JOB_TIMEOUT_MS)).job;

    const settled = await big.next<Message & { job: JobInfo; polls: number }>('settled', JOB_TIMEOUT_MS);
    const tDone = Date.now();
    for (const p of [...workers, ...engines]) expect(await p.stop()).toBe(0);

    // The big job: counts by state from the watching engine.
    const job = settled.job;
    expect(job.state, JSON.stringify(job.error)).toBe('succeeded');
    expect(job.total).toBe(TOTAL);
    expect(job.counts).toEqual({ ...zeroCounts(job.counts), succeeded: TOTAL });
    expect(job.result).toEqual({ leaves: SHAPE[0]! * SHAPE[1]! });

    // The cancelled job: cancelled, every task settled (none left queued, running or waiting).
    expect(cancelled.state).toBe('cancelled');
    expect(cancelled.total).toBeGreaterThan(1);
    expect(
      (cancelled.counts.succeeded ?? 0) + (cancelled.counts.cancelled ?? 0) + (cancelled.counts.failed ?? 0),
    ).toBe(cancelled.total);
    expect(cancelled.counts.cancelled).toBeGreaterThan(0);

    const runs = await readRuns(runsDir);
    // Every worker took part.
    const pids = new Set(runs.filter((r) => r.job === jobId).map((r) => r.pid));
    expect(pids.size).toBe(WORKERS);
    const check = await checkTree(schemas.url, schema, jobId, SHAPE, runs, true);
    expect(check.problems).toEqual([]);
    expect(check.tasks).toBe(TOTAL);
    // Leaves run once; the root and the parents run again after their wait.
    expect(check.executions).toBeLessThanOrEqual(TOTAL + 1 + SHAPE[0]!);

    // No task of the cancelled job is still held or queued, in the database itself.
    const c = new pg.Client({ connectionString: schemas.url });
    await c.connect();
    try {
      const open = await c.query(
        `SELECT id, state FROM "${schema}".tasks WHERE job_id = $1 AND state NOT IN ('succeeded', 'failed', 'cancelled', 'skipped')`,
        [cancelId],
      );
      expect(open.rows).toEqual([]);
    } finally {
      await c.end();
    }
    console.log(
      `postgres multiprocess: ${TOTAL} tasks (${check.executions} executions) by ${WORKERS} workers in ${tDone - tReady} ms ` +
        `(${Math.round(TOTAL / ((tDone - tReady) / 1000))} tasks/s); start-up ${tReady - t0} ms; ` +
        `the watcher polled ${settled.polls} times; cancelled job ${JSON.stringify(cancelled.counts)}`,
    );
  }, 240_000);
});

function zeroCounts(counts: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.keys(counts).map((k) => [k, 0]));
}
