/**
 * Round trips on Postgres, counted at the driver: what an empty claim, a chain link and a
 * single submit cost, and that writes sent with the next statement (values inlined as
 * literals) keep their values exactly.
 */
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { open } from '../src/index.js';
import { PostgresStore } from '../src/store/postgres/postgres-store.js';
import { jobWithRoot, taskRow } from './postgres/rows.js';
import { Schemas } from './postgres/server.js';

const schemas = new Schemas();
afterAll(() => schemas.dropAll());

/** Counts the statements (round trips) every pg client sends from now until `stop`. */
function countQueries() {
  const query = pg.Client.prototype.query;
  const texts: string[] = [];
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    const a = args[0] as string | { text?: string };
    texts.push(typeof a === 'string' ? a : (a?.text ?? ''));
    return (query as (...a: unknown[]) => unknown).apply(this, args);
  } as typeof query;
  const stop = () => {
    pg.Client.prototype.query = query;
  };
  restore.push(stop);
  return { texts, stop };
}
const restore: Array<() => void> = [];
afterEach(() => {
  for (const r of restore.splice(0)) r();
});

describe('postgres: round trips', () => {
  it('an empty claim in a namespace without limits is one statement; with limits, the general path', async () => {
    const dt = await open({ database: schemas.freshUrl('rt') });
    try {
      const count = countQueries();
      expect(await dt.engine.claim('quiet', ['work'], 10)).toEqual([]);
      count.stop();
      // The one-statement claim, on its own (it commits as it returns).
      expect(count.texts).toHaveLength(1);
      expect(count.texts[0]).toMatch(/^WITH n AS/);

      await dt.submit('work', null, { namespace: 'limited', concurrency: { key: 'k', limit: 1 } });
      await dt.submit('work', null, { namespace: 'limited', concurrency: { key: 'k', limit: 1 } });
      const first = await dt.engine.claim('limited', ['work'], 10);
      expect(first).toHaveLength(1); // the key's limit holds the second back
      expect(await dt.engine.claim('limited', ['work'], 10)).toEqual([]);
    } finally {
      await dt.close();
    }
  });

  it('a chain link (spawn, wait, completion, resume) takes at most 18 statements', async () => {
    const dt = await open({ database: schemas.freshUrl('rt') });
    const links = 30;
    try {
      dt.handle('link', async (ctx, i) => {
        if ((i as number) >= links - 1) return 1;
        const [next] = await ctx.spawnMany([{ type: 'link', payload: (i as number) + 1 }]);
        const [n] = await ctx.waitAll<number>([next!]);
        return n! + 1;
      });
      await dt.start({ pollMs: 60_000 });
      const count = countQueries();
      const job = await dt.submit('link', 0);
      expect(await job.result()).toBe(links);
      count.stop();
      const perLink = count.texts.length / links;
      console.log(
        `chain: ${count.texts.length} statements for ${links} links (${perLink.toFixed(1)} per link)`,
      );
      // 36 to 39 before (7 transactions); the idle worker's reads of the next due time included.
      expect(perLink).toBeLessThanOrEqual(18);
    } finally {
      await dt.close();
    }
  });

  it('a single submit is three round trips: BEGIN, both inserts, COMMIT with the wake-up', async () => {
    const dt = await open({ database: schemas.freshUrl('rt') });
    try {
      const count = countQueries();
      await dt.submit('work', { hello: "it's" });
      count.stop();
      expect(count.texts.length).toBe(3);
      expect(count.texts[2]).toMatch(/pg_notify[\s\S]*COMMIT$/);
    } finally {
      await dt.close();
    }
  });

  it('a write sent with the next statement keeps its values: quotes, backslashes, braces, NULL as text and as a value', async () => {
    const url = schemas.freshUrl('rt');
    const store = new PostgresStore({ url });
    await store.migrate();
    try {
      const { job, root } = jobWithRoot();
      const x = taskRow({ job_id: job.id, parent_id: root.id, spawn_key: 'x' });
      const y = taskRow({ job_id: job.id, parent_id: root.id, spawn_key: 'y', error: 'e' });
      await store.transaction(async (tx) => {
        await tx.insertJobs([job]);
        await tx.insertTasks([root, x, y]);
      });
      const nasty = `it's "quoted" \\ back\\\\slash {a,b} $1 ; COMMIT; -- é ✓`;
      const count = countQueries();
      const seen = await store.transaction(async (tx) => {
        await tx.updateTasks([
          { id: x.id, error: nasty, progress: 'NULL', priority: -3 },
          { id: y.id, error: null, progress: '{"a":[1,2]}' },
        ]);
        // Read in the same round trip as the update, after it.
        return tx.outcomes([x.id, y.id]);
      });
      count.stop();
      expect(count.texts.length).toBe(3); // BEGIN, the update with the read, COMMIT
      expect(Object.fromEntries(seen.map((r) => [r.id, r.error]))).toEqual({ [x.id]: nasty, [y.id]: null });
      expect(await store.getTask(x.id)).toMatchObject({ error: nasty, progress: 'NULL', priority: -3 });
      expect(await store.getTask(y.id)).toMatchObject({ error: null, progress: '{"a":[1,2]}' });
    } finally {
      await store.close();
    }
  });

  it('statements run together fail together, and the transaction runs again as a whole', async () => {
    const url = schemas.freshUrl('rt');
    const store = new PostgresStore({ url });
    await store.migrate();
    try {
      const { job, root } = jobWithRoot();
      let runs = 0;
      await expect(
        store.transaction(async (tx) => {
          runs++;
          await tx.together!([() => tx.insertJobs([job]), () => tx.insertTasks([root])]);
          // A job of the same id again: a key race, as if another transaction had taken it.
          await tx.together!([() => tx.insertJobs([job]), () => tx.getTasks([root.id])]);
        }),
      ).rejects.toThrow(/job id/);
      expect(runs).toBe(8); // every try lost the "race", up to the store's limit
      expect(await store.getJob(job.id)).toBeUndefined();
    } finally {
      await store.close();
    }
  });
});
