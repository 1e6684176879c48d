/**
 * The demo job tree: a small data pipeline.
 *
 *   ingest (root)            plans the chunks (memoised step), spawns them, and `publish`
 *   ├─ chunk × N             parses its rows, spawns three checks, waits for them durably
 *   │  └─ validate × 3       schema, range and duplicates checks
 *   └─ publish               `after` every chunk: runs only if all of them (and so every
 *                            check) succeeded, and is skipped otherwise
 *
 * Everything a handler needs is in its payload, so any worker process could run it.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Dynatask } from '../dynatask.js';
import { ChildTaskFailedError, NonRetryableError } from '../engine/errors.js';

export const CHECKS = ['schema', 'range', 'duplicates'] as const;
export type Check = (typeof CHECKS)[number];

export interface IngestPayload {
  file: string;
  chunks: number;
  rowsPerChunk: number;
  /** Simulated work per step, in ms. */
  workMs: number;
  /** This chunk's range check fails permanently (to show a failed job and a skipped publish). */
  failChunk: number | null;
  /** This chunk's schema check fails its first attempt and is retried (to show a retry). */
  flakyChunk: number | null;
}

export interface ChunkPayload {
  index: number;
  firstRow: number;
  rows: number;
  workMs: number;
  fail: boolean;
  flaky: boolean;
}

export interface ValidatePayload {
  chunk: number;
  check: Check;
  firstRow: number;
  rows: number;
  workMs: number;
  fail: boolean;
  flaky: boolean;
}

export interface PublishPayload {
  table: string;
  rows: number;
  workMs: number;
}

export interface ValidateResult {
  check: Check;
  rows: number;
  issues: number;
}
export interface ChunkResult {
  chunk: number;
  rows: number;
  checks: number;
}
export interface PublishResult {
  table: string;
  rows: number;
}
export interface IngestResult {
  file: string;
  chunks: number;
  rows: number;
  checksPassed: number;
  published: PublishResult;
}

/** The demo's task types, for a typed API end to end. */
export type DemoTasks = {
  ingest: { payload: IngestPayload; result: IngestResult };
  chunk: { payload: ChunkPayload; result: ChunkResult };
  validate: { payload: ValidatePayload; result: ValidateResult };
  publish: { payload: PublishPayload; result: PublishResult };
};

/** Simulated work: `ms` give or take half, ended early when the task is cancelled. */
function work(ms: number, signal: AbortSignal): Promise<void> {
  return sleep(Math.round(ms * (0.5 + Math.random())), undefined, { signal });
}

/** Registers the demo's handlers on `dt`. */
export function registerDemo(dt: Dynatask<DemoTasks>): void {
  dt.handle(
    'ingest',
    async (ctx, p) => {
      // The handler re-runs from the top after each durable wait; the step runs once.
      const plan = await ctx.step('plan', async () => {
        await ctx.progress(`reading ${p.file}`);
        await work(p.workMs, ctx.signal);
        return Array.from({ length: p.chunks }, (_, i) => ({
          index: i,
          firstRow: i * p.rowsPerChunk,
          rows: p.rowsPerChunk,
        }));
      });
      // Explicit keys make the spawns idempotent: a re-run gets the same children back.
      const chunks = await ctx.spawnMany(
        plan.map((c) => ({
          type: 'chunk' as const,
          payload: {
            ...c,
            workMs: p.workMs,
            fail: c.index === p.failChunk,
            flaky: c.index === p.flakyChunk,
          },
          options: { key: `chunk-${c.index}` },
        })),
      );
      const rows = plan.reduce((n, c) => n + c.rows, 0);
      const publish = await ctx.spawn(
        'publish',
        { table: 'warehouse.events', rows, workMs: p.workMs },
        { key: 'publish', after: chunks },
      );
      const outcomes = await ctx.waitAllSettled([...chunks, publish]);
      const failed = outcomes.flatMap((o) => (o.state === 'succeeded' ? [] : [o]));
      if (failed.length > 0) {
        const first = failed[0]!;
        throw new NonRetryableError(
          `${failed.length} of ${outcomes.length} steps did not succeed, nothing published; first: ${first.error.message}`,
        );
      }
      const results = outcomes.map((o) => (o.state === 'succeeded' ? o.result : null));
      const chunkResults = results.slice(0, -1) as ChunkResult[];
      return {
        file: p.file,
        chunks: chunkResults.length,
        rows: chunkResults.reduce((n, c) => n + c.rows, 0),
        checksPassed: chunkResults.reduce((n, c) => n + c.checks, 0),
        published: results[results.length - 1] as PublishResult,
      };
    },
    { maxAttempts: 1 },
  );

  dt.handle('chunk', async (ctx, c) => {
    const parsed = await ctx.step('parse', async () => {
      for (let quarter = 1; quarter <= 4; quarter++) {
        await work(c.workMs / 4, ctx.signal);
        await ctx.progress(`chunk ${c.index}: parsed ${quarter * 25}% of ${c.rows} rows`);
      }
      return { rows: c.rows };
    });
    const checks = await ctx.spawnMany(
      CHECKS.map((check) => ({
        type: 'validate' as const,
        payload: {
          chunk: c.index,
          check,
          firstRow: c.firstRow,
          rows: parsed.rows,
          workMs: c.workMs,
          fail: c.fail && check === 'range',
          flaky: c.flaky && check === 'schema',
        },
        options: { key: check },
      })),
    );
    try {
      const results = await ctx.waitAll<ValidateResult>(checks);
      return { chunk: c.index, rows: parsed.rows, checks: results.length };
    } catch (e) {
      // A failed check fails the chunk for good: retrying would see the same outcome.
      if (e instanceof ChildTaskFailedError) {
        const first = e.failures[0];
        const why = first && first.state !== 'succeeded' ? first.error.message : e.message;
        throw new NonRetryableError(`chunk ${c.index} failed validation: ${why}`);
      }
      throw e; // includes the signal that suspends the handler in the durable wait
    }
  });

  dt.handle(
    'validate',
    async (ctx, v) => {
      await work(v.workMs, ctx.signal);
      if (v.flaky && ctx.task.attempt === 1)
        throw new Error(`schema registry timed out checking chunk ${v.chunk}`);
      if (v.fail)
        throw new NonRetryableError(`${v.check} check: row ${v.firstRow + 137} has amount -12.50, below 0`);
      return { check: v.check, rows: v.rows, issues: 0 };
    },
    { maxAttempts: 3, backoffMs: 100 },
  );

  dt.handle('publish', async (ctx, p) => {
    await ctx.progress(`publishing ${p.rows} rows to ${p.table}`);
    await work(p.workMs * 2, ctx.signal);
    return { table: p.table, rows: p.rows };
  });
}
