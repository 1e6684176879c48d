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
});
