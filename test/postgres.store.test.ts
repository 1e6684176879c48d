/**
 * The Postgres store itself, below the engine: URLs and schemas, migrations, batched updates,
 * and the races between processes that its locking and re-running must win. Each race is set
 * up step by step on two stores (as two processes would use the database), waiting on
 * pg_stat_activity for one transaction to block on the other, never on timing.
 */
import { readdirSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { StaleAttemptError } from '../src/index.js';
import { openStore } from '../src/store/open.js';
import { PostgresStore, parsePostgresUrl } from '../src/store/postgres/postgres-store.js';
import type { StoreTx, TaskRow } from '../src/store/store.js';
import { deferred, pollUntil } from './conformance/harness.js';
import { jobWithRoot, taskRow } from './postgres/rows.js';
import { Schemas, withSchema } from './postgres/server.js';

const schemas = new Schemas();
afterAll(() => schemas.dropAll());

const stores: PostgresStore[] = [];
afterAll(async () => {
  for (const s of stores) await s.close();
});

/** A migrated store on a fresh schema, and a second store (process) on the same schema. */
async function twoStores(): Promise<[PostgresStore, PostgresStore]> {
  const url = schemas.freshUrl('store');
  const a = new PostgresStore({ url });
  const b = new PostgresStore({ url });
  stores.push(a, b);
  await a.migrate();
  return [a, b];
}

/** Resolves once some backend of the server waits for a lock. */
const someoneBlocked = () =>
  pollUntil(
    () =>
      schemas.withClient(
        async (c) =>
          (
            await c.query<{ n: number }>(
              "SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
            )
          ).rows[0]!.n > 0,
      ),
    'a transaction to wait for a lock',
  );

/** Inserts a job with its root and the given tasks, committed. */
async function seed(store: PostgresStore, rows: (jobId: string, rootId: string) => TaskRow[] = () => []) {
  const { job, root } = jobWithRoot();
  const more = rows(job.id, root.id);
  await store.transaction(async (tx) => {
    await tx.insertJobs([job]);
    await tx.insertTasks([root, ...more]);
  });
  return { job, root, more };
}

describe('postgres store: connection strings and schemas', () => {
  it('?schema= chooses the schema and is not passed to the server', () => {
    expect(parsePostgresUrl('postgres://u:p@h:5432/db?schema=jobs&sslmode=disable')).toEqual({
      url: 'postgres://u:p@h:5432/db?sslmode=disable',
      schema: 'jobs',
    });
    expect(parsePostgresUrl('postgresql://h/db?schema=jobs')).toEqual({
      url: 'postgresql://h/db',
      schema: 'jobs',
    });
    expect(parsePostgresUrl('postgres://h/db')).toEqual({ url: 'postgres://h/db', schema: undefined });
  });

  it('openStore opens postgres:// and postgresql:// URLs on Postgres, in schema dynatask unless given', async () => {
    for (const [url, schema] of [
      [schemas.url, 'dynatask'],
      [withSchema(schemas.url.replace(/^postgresql:/, 'postgres:'), 'other_one'), 'other_one'],
    ] as const) {
      const store = await openStore(url);
      expect(store.kind).toBe('postgres');
      expect((store as PostgresStore).schema).toBe(schema);
      await store.close();
    }
    const sqlite = await openStore(':memory:');
    expect(sqlite.kind).toBe('sqlite');
    await sqlite.close();
  });

  it('refuses a schema name that is not a plain identifier', () => {
    expect(() => new PostgresStore({ url: schemas.url, schema: 'a"; DROP TABLE x; --' })).toThrow(/schema/);
  });
});

describe('postgres store: migrations', () => {
  it('two processes migrating one new schema at once apply each migration once', async () => {
    const url = schemas.freshUrl('migrate');
    const all = Array.from({ length: 4 }, () => new PostgresStore({ url }));
    await Promise.all(all.map((s) => s.migrate()));
    await all[0]!.migrate(); // and again: nothing to do
    const versions = await schemas.withClient(
      async (c) =>
        (await c.query(`SELECT version FROM "${all[0]!.schema}".schema_migrations ORDER BY version`)).rows,
    );
    const files = readdirSync(new URL('../src/store/postgres/migrations/', import.meta.url))
      .filter((f) => f.endsWith('.sql'))
      .sort();
    expect(versions).toEqual(files.map((version) => ({ version })));
    for (const s of all) await s.close();
  });

  it('refuses a schema migrated by a newer version of dynatask', async () => {
    const [a] = await twoStores();
    await schemas.withClient((c) =>
      c.query(`INSERT INTO "${a.schema}".schema_migrations (version) VALUES ('999_future.sql')`),
    );
    await expect(a.migrate()).rejects.toThrow(/999_future\.sql.*upgrade dynatask/);
  });
});

describe('postgres store: batched statements', () => {
  it('updateTasks applies patches with different columns in one statement, NULL as a value', async () => {
    const [a] = await twoStores();
    const { root, more } = await seed(a, (jobId, rootId) => [
      taskRow({ job_id: jobId, parent_id: rootId, spawn_key: 'x', lease_expires_at: 5, error: 'e' }),
      taskRow({ job_id: jobId, parent_id: rootId, spawn_key: 'y', lease_expires_at: 6, error: 'f' }),
    ]);
    const [x, y] = more as [TaskRow, TaskRow];
    await a.transaction((tx) =>
      tx.updateTasks([
        { id: x.id, lease_expires_at: null, state: 'cancelled' },
        { id: y.id, open_children: 3 },
        { id: x.id, error: null }, // a second patch of x: applied after the first
        { id: root.id, open_children: 2 },
      ]),
    );
    expect(await a.getTask(x.id)).toMatchObject({ lease_expires_at: null, state: 'cancelled', error: null });
    expect(await a.getTask(y.id)).toMatchObject({
      lease_expires_at: 6,
      state: 'queued',
      error: 'f',
      open_children: 3,
    });
    expect(await a.getTask(root.id)).toMatchObject({ open_children: 2, state: 'running' });
  });

  it('insertTasks skips rows whose spawn key or dedup key is taken and returns the ids inserted', async () => {
    const [a] = await twoStores();
    const { job, root } = await seed(a);
    const first = taskRow({ job_id: job.id, parent_id: root.id, spawn_key: 'k', dedup_key: 'd' });
    const sameKey = taskRow({ job_id: job.id, parent_id: root.id, spawn_key: 'k' });
    const sameDedup = taskRow({ job_id: job.id, parent_id: root.id, spawn_key: 'other', dedup_key: 'd' });
    const fresh = taskRow({ job_id: job.id, parent_id: root.id, spawn_key: 'new' });
    let inserted: Set<string> | undefined;
    await a.transaction(async (tx) => {
      await tx.insertTasks([first]);
      inserted = await tx.insertTasks([sameKey, sameDedup, fresh]);
    });
    expect(inserted).toEqual(new Set([fresh.id]));
  });
});

describe('postgres store: races between processes', () => {
  it('a cancellation sees the children spawned by a transaction it waited for', async () => {
    const [a, b] = await twoStores();
    const { job, root, more } = await seed(a, (jobId, rootId) => [
      taskRow({ job_id: jobId, parent_id: rootId, spawn_key: 'p', state: 'running' }),
    ]);
    await a.transaction((tx) => tx.updateTasks([{ id: root.id, open_children: 1 }]));
    const parent = more[0]!;
    const child = taskRow({ job_id: job.id, parent_id: parent.id, spawn_key: 'c' });

    // Process A spawns under `parent`: it holds the parent's lock until `commit` resolves.
    const commit = deferred();
    const locked = deferred();
    const spawned = a.transaction(async (tx) => {
      const [p] = await tx.getTasks([parent.id]);
      await tx.insertTasks([child]);
      await tx.updateTasks([{ id: parent.id, open_children: p!.open_children + 1 }]);
      locked.resolve();
      await commit.promise;
    });
    // Process B cancels the root once A holds the parent: its read of the subtree waits for it.
    await locked.promise;
    const subtree = b.transaction((tx) => tx.unsettledSubtree(root.id));
    await someoneBlocked();
    commit.resolve();
    await spawned;
    expect((await subtree).map((r) => r.id).sort()).toEqual([root.id, parent.id, child.id].sort());
  });

  it('a claim reads the slot of a key whose task appeared after it began, locked, after choosing its candidates', async () => {
    const [a, b] = await twoStores();
    const { job, root } = await seed(a, (jobId, rootId) => [
      taskRow({ job_id: jobId, parent_id: rootId, spawn_key: 'plain' }),
    ]);
    const seen = await a.transaction(async (tx) => {
      expect(await tx.fullKeySlots('default')).toEqual({ any: false, full: [] });
      // Another process spawns a task limited by a key, with its slot, and commits.
      await b.transaction(async (tb) => {
        await tb.setSlotMax('default', 'key:host', 1);
        await tb.insertTasks([
          taskRow({ job_id: job.id, parent_id: root.id, spawn_key: 'keyed', concurrency_key: 'key:host' }),
        ]);
      });
      const q = { namespace: 'default', type: 'work', now: Date.now(), limit: 10, excludeKeys: [] };
      const candidates = await tx.claimCandidates({ ...q, withKeys: false });
      const keys = candidates.flatMap((c) => (c.concurrency_key ? [c.concurrency_key] : []));
      return { candidates, slots: await tx.getSlots('default', keys) };
    });
    // The keyed task is a candidate, and its slot is read (and locked) with it: the engine
    // takes a slot for it, so its limit holds.
    expect(seen.candidates.map((c) => c.concurrency_key).sort()).toEqual(['key:host', null].sort());
    expect(seen.slots).toEqual([{ namespace: 'default', key: 'key:host', max: 1, running: 0 }]);
  });

  it('a spawn that loses a race for a dedup key runs again and returns the winner', async () => {
    const [a, b] = await twoStores();
    const { job, root, more } = await seed(a, (jobId, rootId) => [
      taskRow({ job_id: jobId, parent_id: rootId, spawn_key: 'p2', state: 'running' }),
    ]);
    const winner = taskRow({ job_id: job.id, parent_id: root.id, spawn_key: 'w', dedup_key: 'url' });
    const commit = deferred();
    const first = a.transaction(async (tx) => {
      await tx.insertTasks([winner]);
      await commit.promise;
    });
    let runs = 0;
    const second = b.transaction(async (tx: StoreTx) => {
      runs++;
      const [found] = await tx.findByDedupKey(job.id, ['url']);
      if (found) return found.id;
      const mine = taskRow({ job_id: job.id, parent_id: more[0]!.id, spawn_key: 'l', dedup_key: 'url' });
      if (runs === 1) setTimeout(() => void someoneBlocked().then(() => commit.resolve()));
      const inserted = await tx.insertTasks([mine]);
      if (inserted.size === 0) throw new StaleAttemptError('a concurrent spawn took the same key'); // as the engine does
      return mine.id;
    });
    await first;
    expect(await second).toBe(winner.id);
    expect(runs).toBe(2);
  });

  it('a transaction chosen as a deadlock victim (or whose lock wait timed out) runs again', async () => {
    const [a, b] = await twoStores();
    const { more } = await seed(a, (jobId, rootId) => [
      taskRow({ job_id: jobId, parent_id: rootId, spawn_key: 'x' }),
      taskRow({ job_id: jobId, parent_id: rootId, spawn_key: 'y' }),
    ]);
    const [x, y] = more as [TaskRow, TaskRow];
    const bothLocked = { a: deferred(), b: deferred() };
    let runs = 0;
    // Each updates one row, waits until the other has too, then updates the other's row.
    const crosswise = (
      store: PostgresStore,
      mine: TaskRow,
      theirs: TaskRow,
      me: 'a' | 'b',
      other: 'a' | 'b',
    ) =>
      store.transaction(async (tx) => {
        runs++;
        await tx.updateTasks([{ id: mine.id, priority: 1 }]);
        await tx.outcomes([mine.id]); // a write goes out with the next statement: lock the row now
        bothLocked[me].resolve();
        await bothLocked[other].promise;
        await tx.updateTasks([{ id: theirs.id, attempt: 1 }]);
      });
    await Promise.all([crosswise(a, x, y, 'a', 'b'), crosswise(b, y, x, 'b', 'a')]);
    // One of them runs again (3 runs), or both, when both lock waits time out (lock_timeout) at once.
    expect(runs).toBeGreaterThanOrEqual(3);
    expect(await a.getTask(x.id)).toMatchObject({ priority: 1, attempt: 1 });
    expect(await a.getTask(y.id)).toMatchObject({ priority: 1, attempt: 1 });
  });
});
