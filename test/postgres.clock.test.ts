/**
 * Processes on machines whose clocks differ share one PostgreSQL database: leases and run
 * times are stamped and compared with the database's clock, never a process's own. One
 * instance's clock is skewed here (Date.now, which the store used before) for its calls only.
 */
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { type Dynatask, open } from '../src/index.js';
import { Schemas } from './postgres/server.js';

const schemas = new Schemas();
afterAll(() => schemas.dropAll());

const opened: Dynatask[] = [];
afterEach(async () => {
  vi.restoreAllMocks();
  for (const dt of opened.splice(0).reverse()) await dt.close();
});

/** Runs `fn` as on a machine whose clock runs `ms` ahead. */
async function skewed<T>(ms: number, fn: () => Promise<T>): Promise<T> {
  const real = Date.now.bind(Date);
  const spy = vi.spyOn(Date, 'now').mockImplementation(() => real() + ms);
  try {
    return await fn();
  } finally {
    spy.mockRestore();
  }
}

describe('postgres: one clock, the database’s', () => {
  it('a process whose clock runs ahead neither expires live leases nor runs delayed tasks early', async () => {
    const url = schemas.freshUrl('clock');
    const a = await open({ database: url });
    opened.push(a);
    const b = await open({ database: url }); // on a machine ten minutes ahead
    opened.push(b);
    const ahead = 10 * 60_000;

    const job = await a.submit('work', null);
    const [c] = await a.engine.claim(a.namespace, ['work'], 1, 60_000);
    expect(c?.row.id).toBe(job.rootTaskId);
    // A's lease has a minute left: B's sweeper must not see it expired.
    expect(await skewed(ahead, () => b.engine.expireLeases())).toBe(0);
    expect(await a.getTask(job.rootTaskId)).toMatchObject({ state: 'running', attempt: 1 });

    // Due in a minute by the database's clock: not yet, however far ahead B's clock is.
    const later = await a.submit('later', null, { delayMs: 60_000 });
    expect(await skewed(ahead, () => b.engine.claim(b.namespace, ['later'], 1))).toEqual([]);
    expect((await a.getTask(later.rootTaskId)).state).toBe('queued');

    // Submitted by B now, due now: A claims it at once (B's clock does not postpone it).
    const now = await skewed(ahead, () => b.submit('now', null));
    const [n] = await a.engine.claim(a.namespace, ['now'], 1);
    expect(n?.row.id).toBe(now.rootTaskId);
  });

  it('a worker whose clock runs ahead times its handlers from their start, not from the database’s time', async () => {
    const url = schemas.freshUrl('clock');
    const real = Date.now.bind(Date);
    vi.spyOn(Date, 'now').mockImplementation(() => real() + 10 * 60_000); // this whole process
    const dt = await open({ database: url });
    opened.push(dt);
    dt.handle('slow', () => new Promise((r) => setTimeout(() => r('done'), 50)), { timeoutMs: 5000 });
    await dt.start();
    const job = await dt.submit('slow', null);
    expect(await job.result()).toBe('done');
    expect((await dt.getTask(job.rootTaskId)).attempts).toEqual([]);
  });

  it('times outside transactions are converted: a worker sleeps until the right moment, purge keeps recent jobs, presence holds', async () => {
    const url = schemas.freshUrl('clock');
    const a = await open({ database: url });
    opened.push(a);
    const b = await open({ database: url }); // on a machine ten minutes ahead
    opened.push(b);
    const ahead = 10 * 60_000;

    // A worker of B sleeps until a task's run time on its own clock: a minute from now.
    await a.submit('later', null, { delayMs: 60_000 });
    const next = await skewed(
      ahead,
      async () => (await b.engine.nextRunAt(b.namespace, ['later']))! - Date.now(),
    );
    expect(next).toBeGreaterThan(50_000);
    expect(next).toBeLessThanOrEqual(60_000);

    // Purge of jobs settled more than five minutes ago, on B: a job settled just now stays.
    const job = await a.submit('done', null);
    const [c] = await a.engine.claim(a.namespace, ['done'], 1);
    await a.engine.complete([{ id: c!.row.id, token: c!.token, result: 1 }]);
    expect((await a.getJob(job.id)).state).toBe('succeeded');
    expect(await skewed(ahead, () => b.purge({ olderThanMs: 5 * 60_000 }))).toBe(0);
    expect((await a.getJob(job.id)).state).toBe('succeeded');

    // A worker of a machine ten minutes behind is seen as alive.
    b.handle('served', () => null);
    await skewed(-ahead, () => b.start());
    expect(await a.store.liveTypes(a.namespace, Date.now() - 15_000)).toEqual(['served']);
  });
});
