/**
 * 7. Retries: maximum attempts per task and per type (default 3), exponential backoff
 * with jitter from `backoffMs` capped by `maxBackoffMs`, NonRetryableError fails at once,
 * and every failed attempt is recorded with its error and timing.
 */
import { describe, expect, it } from 'vitest';
import { type AttemptRecord, NonRetryableError, type TaskHandle } from '../../src/index.js';
import { type Harness, pollUntil, settled, untilState } from './harness.js';

/** Time from the end of each failed attempt to the start of the next one. */
function gaps(attempts: AttemptRecord[], lastStartedAt: number | null): number[] {
  const starts = [...attempts.slice(1).map((a) => a.startedAt), lastStartedAt!];
  return attempts.map((a, i) => starts[i]! - a.finishedAt).slice(0, starts.length);
}

export function retryTests(h: Harness): void {
  describe('retries', () => {
    it('a task is tried maxAttempts times and every attempt is recorded with its error', async () => {
      const dt = await h.open();
      let calls = 0;
      dt.handle('always-fails', (ctx) => {
        calls++;
        throw new Error(`boom ${ctx.task.attempt}`);
      });
      await dt.start();
      const job = await dt.submit('always-fails', null, { maxAttempts: 3, backoffMs: 1 });
      const info = await settled(dt, job);
      expect(info.state).toBe('failed');
      expect(calls).toBe(3);
      const t = await dt.getTask(job.rootTaskId);
      expect(t).toMatchObject({ state: 'failed', attempt: 3, maxAttempts: 3 });
      expect(t.error).toMatchObject({ message: 'boom 3' });
      expect(t.attempts!.map((a) => [a.attempt, a.error.message])).toEqual([
        [1, 'boom 1'],
        [2, 'boom 2'],
        [3, 'boom 3'],
      ]);
      let prevEnd = t.createdAt;
      for (const a of t.attempts!) {
        expect(a.startedAt).toBeGreaterThanOrEqual(prevEnd);
        expect(a.finishedAt).toBeGreaterThanOrEqual(a.startedAt);
        prevEnd = a.finishedAt;
      }
    });

    it('a task that fails and then succeeds keeps its failed attempts', async () => {
      const dt = await h.open();
      dt.handle('root', async (ctx) => ctx.waitAll([await ctx.spawn('flaky', 'payload')]));
      dt.handle('flaky', (ctx, p) => {
        if (ctx.task.attempt < 3) throw new Error(`not yet (${ctx.task.attempt})`);
        return `${p} on attempt ${ctx.task.attempt}`;
      });
      await dt.start();
      const job = await dt.submit('root', null);
      expect(await job.result()).toEqual(['payload on attempt 3']);
      const child = (await dt.tree(job.id)).tasks.find((t) => t.type === 'flaky');
      const flaky = await dt.getTask(child!.id);
      expect(flaky).toMatchObject({ state: 'succeeded', attempt: 3 });
      expect(flaky.attempts!.map((a) => a.error.message)).toEqual(['not yet (1)', 'not yet (2)']);
    });

    it('maxAttempts per type (default 3), overridden per task', async () => {
      const dt = await h.open();
      const calls = new Map<string, number>();
      const fail = (ctx: { task: { jobId: string } }) => {
        calls.set(ctx.task.jobId, (calls.get(ctx.task.jobId) ?? 0) + 1);
        throw new Error('always');
      };
      dt.handle('typed', fail, { maxAttempts: 2, backoffMs: 1 });
      dt.handle('untyped', fail, { backoffMs: 1 });
      await dt.start();
      const byType = await dt.submit('typed', null);
      const byTask = await dt.submit('typed', null, { maxAttempts: 4 });
      const byDefault = await dt.submit('untyped', null);
      for (const j of [byType, byTask, byDefault]) expect((await settled(dt, j)).state).toBe('failed');
      expect(calls.get(byType.id)).toBe(2);
      expect(calls.get(byTask.id)).toBe(4);
      expect(calls.get(byDefault.id)).toBe(3);
      expect((await dt.getTask(byTask.rootTaskId)).attempts).toHaveLength(4);
    });

    it('backoff grows exponentially from backoffMs, with at most half of it as jitter', async () => {
      const dt = await h.open();
      dt.handle(
        'flaky',
        (ctx) => {
          if (ctx.task.attempt < 4) throw new Error('again');
          return 'finally';
        },
        { backoffMs: 30 },
      );
      await dt.start();
      const job = await dt.submit('flaky', null, { maxAttempts: 4 });
      expect((await settled(dt, job)).state).toBe('succeeded');
      const t = await dt.getTask(job.rootTaskId);
      const g = gaps(t.attempts!, t.startedAt);
      expect(g).toHaveLength(3);
      // Delays of 30, 60, 120 ms, each at least half taken (jitter), not much more than all of it.
      [30, 60, 120].forEach((full, i) => {
        expect(g[i]!).toBeGreaterThanOrEqual(full / 2 - 1);
        expect(g[i]!).toBeLessThan(full + 1000);
      });
    });

    it('maxBackoffMs caps each delay', async () => {
      const dt = await h.open();
      dt.handle('flaky', (ctx) => {
        if (ctx.task.attempt < 3) throw new Error('again');
        return 'ok';
      });
      await dt.start();
      const job = await dt.submit('flaky', null, { maxAttempts: 3, backoffMs: 60_000, maxBackoffMs: 20 });
      expect((await settled(dt, job, 4000)).state).toBe('succeeded');
      const t = await dt.getTask(job.rootTaskId);
      for (const gap of gaps(t.attempts!, t.startedAt)) {
        expect(gap).toBeGreaterThanOrEqual(9);
        expect(gap).toBeLessThan(1000);
      }
    });

    it('retryTask gives the same fresh budget each time, and backoff starts again from backoffMs', async () => {
      const dt = await h.open();
      let calls = 0;
      dt.handle('always-fails', () => {
        calls++;
        throw new Error('again');
      });
      await dt.start();
      const job = await dt.submit('always-fails', null, { maxAttempts: 2, backoffMs: 150 });
      expect((await settled(dt, job)).state).toBe('failed');
      expect(calls).toBe(2);
      for (const total of [4, 6]) {
        await dt.retryTask(job.rootTaskId);
        expect((await settled(dt, job)).state).toBe('failed');
        expect(calls).toBe(total); // two attempts per retry, not 2, 4, 8
      }
      const t = await dt.getTask(job.rootTaskId);
      expect(t).toMatchObject({ attempt: 6, maxAttempts: 6 });
      // The second attempt of the last budget waited one backoff (75..150 ms), not 2^4 of them.
      const [fifth, sixth] = t.attempts!.slice(4);
      expect(sixth!.startedAt - fifth!.finishedAt).toBeLessThan(1000);
    });

    it('retryTask of a child whose failure its parent observed: failing again does not fail the parent', async () => {
      const dt = await h.open();
      const release = h.gate();
      let spawned: TaskHandle[] = [];
      dt.handle('root', async (ctx) => {
        spawned = await ctx.spawnMany([
          { type: 'bad', payload: null, options: { maxAttempts: 1 } },
          { type: 'slow', payload: null },
        ]);
        const [o] = await ctx.waitAllSettled([spawned[0]!]);
        return o!.state; // returns while `slow` runs: the root waits in completing
      });
      dt.handle('bad', () => {
        throw new NonRetryableError('still bad');
      });
      dt.handle('slow', () => release.promise);
      await dt.start();
      const job = await dt.submit('root', null);
      await untilState(dt, job.rootTaskId, 'completing');
      const bad = spawned[0]!;
      await dt.retryTask(bad.id);
      await untilState(dt, bad.id, 'failed');
      expect((await dt.getTask(bad.id)).attempt).toBe(2);
      release.resolve();
      expect(await settled(dt, job)).toMatchObject({ state: 'succeeded', result: 'failed' });
    });

    it('a retried child that its parent awaited earlier does not wake the parent from a later wait', async () => {
      const dt = await h.open();
      const release = h.gate();
      let badFails = true;
      let runs = 0;
      let later: TaskHandle | undefined;
      dt.handle('root', async (ctx) => {
        runs++;
        const bad = await ctx.spawn('bad', null, { maxAttempts: 1 });
        const [first] = await ctx.waitAllSettled([bad]);
        later = await ctx.spawn('slow', null);
        await ctx.waitAll([later]);
        return first!.state;
      });
      dt.handle('bad', () => {
        if (badFails) throw new Error('bad once');
        return 'ok';
      });
      dt.handle('slow', () => release.promise);
      await dt.start();
      const job = await dt.submit('root', null);
      await untilState(dt, job.rootTaskId, 'waiting');
      await untilState(dt, (await pollUntilSpawned(() => later)).id, 'running');
      const [badTask] = (await dt.tree(job.id)).tasks.filter((t) => t.type === 'bad');
      badFails = false;
      await dt.retryTask(badTask!.id);
      await untilState(dt, badTask!.id, 'succeeded');
      // Its settling is not the settling of `slow`, which the root waits for now.
      expect((await dt.getTask(job.rootTaskId)).state).toBe('waiting');
      release.resolve();
      expect((await settled(dt, job)).state).toBe('succeeded');
      expect(runs).toBe(3); // spawn and wait; observe and wait on `slow`; after `slow`
    });

    it('NonRetryableError fails the task at once, whatever attempts remain', async () => {
      const dt = await h.open();
      let calls = 0;
      dt.handle(
        'refuse',
        () => {
          calls++;
          throw new NonRetryableError('invalid request');
        },
        { maxAttempts: 5, backoffMs: 1 },
      );
      await dt.start();
      const job = await dt.submit('refuse', null);
      expect((await settled(dt, job)).state).toBe('failed');
      expect(calls).toBe(1);
      const t = await dt.getTask(job.rootTaskId);
      expect(t.error).toMatchObject({
        name: 'NonRetryableError',
        message: 'invalid request',
        retryable: false,
      });
      expect(t.attempts).toHaveLength(1);
    });
  });
}

/** The value `get` returns once it is set (by a handler that runs meanwhile). */
async function pollUntilSpawned<T>(get: () => T | undefined): Promise<T> {
  return pollUntil(async () => get(), 'the handler to spawn');
}
