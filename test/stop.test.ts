/**
 * Graceful stop: running handlers finish (and are stored) within the grace period; a handler
 * that outlives it is aborted and its task is retried by another worker after its lease expires.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { open } from '../src/index.js';
import { deferred, within } from './conformance/harness.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function database() {
  const dir = mkdtempSync(join(tmpdir(), 'dynatask-stop-'));
  dirs.push(dir);
  return join(dir, 'stop.db');
}

describe('graceful stop', () => {
  it('waits for a running handler and stores its result', async () => {
    const dt = await open({ database: database() });
    const started = deferred();
    const release = deferred();
    dt.handle('slow', async () => {
      started.resolve();
      await release.promise;
      return 'done';
    });
    await dt.start();
    const job = await dt.submit('slow', null);
    await within(started.promise, 5000, 'the handler to start');
    const stopping = dt.stop({ graceMs: 10_000 });
    release.resolve();
    await within(stopping, 5000, 'stop() to return after the handler finished');
    expect((await dt.getJob(job.id)).state).toBe('succeeded');
    await dt.close();
  });

  it('aborts a handler that outlives the grace period; another worker retries its task', async () => {
    const db = database();
    const first = await open({ database: db, leaseMs: 300 });
    const aborted = deferred<unknown>();
    const started = deferred();
    first.handle('stuck', async (ctx) => {
      ctx.signal.addEventListener('abort', () => aborted.resolve(ctx.signal.reason));
      started.resolve();
      await new Promise(() => {}); // never returns
    });
    await first.start({ pollMs: 50 });
    const job = await first.submit('stuck', null);
    await within(started.promise, 5000, 'the handler to start');
    await within(first.stop({ graceMs: 50 }), 5000, 'stop() to give up after its grace period');
    expect(String(await aborted.promise)).toMatch(/worker stopped/);

    const second = await open({ database: db, leaseMs: 300 });
    second.handle('stuck', async (ctx) => `attempt ${ctx.task.attempt}`);
    await second.start({ pollMs: 50 });
    await expect(within(job.result(), 10_000, 'the job to settle on the second worker')).resolves.toBe(
      'attempt 2',
    );
    const task = await second.getTask(job.rootTaskId);
    expect(task.attempts?.[0]?.error.name).toBe('LeaseExpired');
    await second.close();
    await first.close();
  });
});
