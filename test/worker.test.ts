/**
 * The in-process worker's idle behaviour: a due task held back by a concurrency limit is
 * looked at again now and then (a freed slot wakes the worker), not claimed in a busy loop.
 * And its reports: one that fails is sent again, not dropped.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it, vi } from 'vitest';
import { open } from '../src/index.js';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js';
import { deferred, sleep, within } from './conformance/harness.js';

describe('worker', () => {
  it('does not spin on a due task that a concurrency limit holds back, and runs it once the slot frees', async () => {
    const store = new SqliteStore({ path: ':memory:' });
    let transactions = 0;
    const transaction = store.transaction.bind(store);
    store.transaction = (fn) => {
      transactions++;
      return transaction(fn);
    };
    const dt = await open({ store });
    const first = deferred();
    const release = deferred();
    let runs = 0;
    dt.handle(
      'limited',
      async () => {
        if (++runs === 1) {
          first.resolve();
          await release.promise;
        }
        return runs;
      },
      { concurrency: 1 },
    );
    await dt.start({ pollMs: 60_000 });
    const a = await dt.submit('limited', null);
    const b = await dt.submit('limited', null);
    await within(first.promise, 5000, 'the first task to start');
    const before = transactions;
    await sleep(500); // real time passing is what is measured: how many claims it makes
    const idle = transactions - before;
    release.resolve();
    expect((await within(b.result(), 5000, 'the held-back task')) as number).toBe(2);
    expect(await a.result()).toBe(1);
    // A busy loop would make hundreds of claims in 500 ms; one look every 200 ms makes 2 or 3.
    expect(idle).toBeLessThanOrEqual(5);
    await dt.close();
  });
});

describe('reporting outcomes', () => {
  it('a report that fails (SQLite busy past its timeout) is retried, not dropped: the task runs once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dynatask-worker-'));
    const path = join(dir, 'db.sqlite');
    const store = new SqliteStore({ path, busyTimeoutMs: 200 });
    // A long lease: before the fix, the dropped outcome came back only as a re-run after it.
    const dt = await open({ store, leaseMs: 60_000 });
    const started = deferred();
    const finish = deferred();
    let runs = 0;
    dt.handle('t', async () => {
      runs++;
      started.resolve();
      await finish.promise;
      return 'done';
    });
    const failed = deferred<unknown>();
    const logged = vi.spyOn(console, 'error').mockImplementation((...args: unknown[]) => {
      if (args[0] === 'dynatask worker:') failed.resolve(args[1]);
    });
    try {
      await dt.start();
      const job = await dt.submit('t', null);
      await within(started.promise, 5000, 'the handler');
      // Another connection holds the write lock past the busy timeout: the report fails.
      const other = new Database(path);
      other.exec('BEGIN IMMEDIATE');
      finish.resolve();
      expect(await within(failed.promise, 5000, 'the report to fail')).toMatchObject({ code: 'SQLITE_BUSY' });
      other.exec('ROLLBACK');
      other.close();
      expect(await within(job.result(), 5000, 'the outcome, reported again')).toBe('done');
      expect(runs).toBe(1);
      expect((await dt.getTask(job.rootTaskId)).attempts).toEqual([]);
    } finally {
      logged.mockRestore();
      await dt.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
