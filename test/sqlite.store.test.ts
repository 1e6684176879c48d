/**
 * The SQLite store itself, below the engine: the batched statements whose results the engine
 * relies on, at the sizes where they take their batch paths (100 rows to a statement).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js';
import { jobWithRoot, taskRow } from './postgres/rows.js';

const dir = mkdtempSync(join(tmpdir(), 'dynatask-sqlite-store-'));
const stores: SqliteStore[] = [];
afterAll(async () => {
  for (const s of stores) await s.close();
  rmSync(dir, { recursive: true, force: true });
});

let n = 0;
async function fresh(): Promise<SqliteStore> {
  const store = new SqliteStore({ path: join(dir, `db-${++n}.sqlite`) });
  stores.push(store);
  await store.migrate();
  return store;
}

describe('sqlite store', () => {
  it('insertTasks returns exactly the rows inserted when a batch of 100 has taken keys', async () => {
    const store = await fresh();
    const { job, root } = jobWithRoot();
    const taken = taskRow({ job_id: job.id, parent_id: root.id, spawn_key: 'k7', dedup_key: 'd' });
    await store.transaction(async (tx) => {
      await tx.insertJobs([job]);
      await tx.insertTasks([root, taken]);
    });
    // 250 rows: two full statements of 100 and 50 single ones; two rows of the first hundred
    // collide (spawn key, dedup key), one of the singles too.
    const rows = Array.from({ length: 250 }, (_, i) =>
      taskRow({ job_id: job.id, parent_id: root.id, spawn_key: `k${i}` }),
    );
    rows[42] = { ...rows[42]!, dedup_key: 'd' };
    rows[230] = { ...rows[230]!, spawn_key: 'k7' };
    let inserted = new Set<string>();
    await store.transaction(async (tx) => {
      inserted = await tx.insertTasks(rows);
    });
    const expected = new Set(rows.filter((_, i) => i !== 7 && i !== 42 && i !== 230).map((r) => r.id));
    expect(inserted).toEqual(expected);
    const page = await store.taskPage(job.id, null, 1000);
    expect(page.tasks.length).toBe(2 + expected.size);
  });

  it('findChildrenByKey with many keys (one scan of the children) returns the same rows as with few', async () => {
    const store = await fresh();
    const { job, root } = jobWithRoot();
    const children = Array.from({ length: 120 }, (_, i) =>
      taskRow({ job_id: job.id, parent_id: root.id, spawn_key: `k${i}`, dedup_key: i === 3 ? 'd' : null }),
    );
    await store.transaction(async (tx) => {
      await tx.insertJobs([job]);
      await tx.insertTasks([root, ...children]);
    });
    const keys = Array.from({ length: 100 }, (_, i) => `k${i * 2}`); // 60 exist, 40 do not
    const pick = ({ id, job_id, type, parent_id, spawn_key, dedup_key, state }: (typeof children)[0]) => ({
      id,
      job_id,
      type,
      parent_id,
      spawn_key,
      dedup_key,
      state,
    });
    const expected = children.filter((c) => keys.includes(c.spawn_key!)).map(pick);
    await store.transaction(async (tx) => {
      const many = await tx.findChildrenByKey(root.id, keys);
      expect(many.sort((a, b) => (a.id < b.id ? -1 : 1))).toEqual(expected);
      const few = await tx.findChildrenByKey(root.id, ['k4', 'k5', 'nope']);
      expect(few).toEqual(expected.filter((c) => c.spawn_key === 'k4').concat(pick(children[5]!)));
    });
  });

  it('insertJobs writes batches of 100 and the rest', async () => {
    const store = await fresh();
    const jobs = Array.from({ length: 205 }, () => jobWithRoot().job);
    await store.transaction((tx) => tx.insertJobs(jobs));
    const listed = await store.listJobs({ limit: 1000 });
    expect(new Set(listed.map((j) => j.id))).toEqual(new Set(jobs.map((j) => j.id)));
    expect(await store.getJob(jobs[150]!.id)).toEqual(jobs[150]);
  });

  it('dependents finds the edges of tasks settling together, once the table has any', async () => {
    const store = await fresh();
    const { job, root } = jobWithRoot();
    const a = taskRow({ job_id: job.id, parent_id: root.id, spawn_key: 'a' });
    const b = taskRow({ job_id: job.id, parent_id: root.id, spawn_key: 'b' });
    const c = taskRow({ job_id: job.id, parent_id: root.id, spawn_key: 'c', state: 'blocked' });
    await store.transaction(async (tx) => {
      await tx.insertJobs([job]);
      await tx.insertTasks([root, a, b, c]);
      expect(await tx.dependents([a, b])).toEqual([]);
      await tx.insertDeps([{ job_id: job.id, depends_on: b.id, task_id: c.id }]);
      expect(await tx.dependents([a, b])).toEqual([{ job_id: job.id, depends_on: b.id, task_id: c.id }]);
    });
  });
});
