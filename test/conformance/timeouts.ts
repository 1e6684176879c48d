/**
 * 9. Timeouts per attempt, per type (dt.handle options) or per task (spawn/submit
 * options, which win): the handler's signal aborts and the attempt fails with a
 * TimeoutError (retried like any failure); a late result is discarded.
 */
import { describe, expect, it } from 'vitest';
import { type Harness, settled } from './harness.js';

/** Sleeps `ms` (the handler's work), or rejects with the signal's reason when it aborts. */
function nap(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}

export function timeoutTests(h: Harness): void {
  describe('timeouts', () => {
    it('a per-type timeout aborts the signal and fails the attempt with TimeoutError', async () => {
      const dt = await h.open();
      const seen: Array<{ aborted: boolean; reason: unknown }> = [];
      const returned = h.gate();
      dt.handle(
        'slow',
        async (ctx) => {
          const reason = await h.hold(ctx.signal);
          seen.push({ aborted: ctx.signal.aborted, reason });
          returned.resolve();
          return 'too late';
        },
        { timeoutMs: 50, maxAttempts: 1 },
      );
      await dt.start();
      const job = await dt.submit('slow', null);
      const info = await settled(dt, job);
      expect(info.state).toBe('failed');
      expect(info.error).toMatchObject({ name: 'TimeoutError' });
      await returned.promise;
      expect(seen).toHaveLength(1);
      expect(seen[0]!.aborted).toBe(true);
      expect(seen[0]!.reason).toMatchObject({ name: 'TimeoutError' });
      await dt.stop(); // the late return has been handled: it must not have changed the task
      const t = await dt.getTask(job.rootTaskId);
      expect(t).toMatchObject({ state: 'failed', result: null });
      expect(t.attempts).toHaveLength(1);
      expect(t.attempts![0]!.error.name).toBe('TimeoutError');
      expect(t.attempts![0]!.finishedAt - t.attempts![0]!.startedAt).toBeGreaterThanOrEqual(49);
    });

    it('a per-task timeout applies to that task only', async () => {
      const dt = await h.open();
      dt.handle('sleepy', async (ctx, ms) => {
        await nap(ms as number, ctx.signal);
        return 'awake';
      });
      await dt.start();
      const limited = await dt.submit('sleepy', 5000, { timeoutMs: 50, maxAttempts: 1 });
      const unlimited = await dt.submit('sleepy', 120, { maxAttempts: 1 });
      const a = await settled(dt, limited);
      expect(a.state).toBe('failed');
      expect(a.error).toMatchObject({ name: 'TimeoutError' });
      expect(await unlimited.result()).toBe('awake');
    });

    it("a task's timeout overrides its type's, both ways", async () => {
      const dt = await h.open();
      dt.handle(
        'sleepy',
        async (ctx, ms) => {
          await nap(ms as number, ctx.signal);
          return 'awake';
        },
        { timeoutMs: 60, maxAttempts: 1 },
      );
      await dt.start();
      const shorter = await dt.submit('sleepy', 5000, { timeoutMs: 30 });
      const longer = await dt.submit('sleepy', 150, { timeoutMs: 5000 });
      const byType = await dt.submit('sleepy', 5000);
      expect(await longer.result()).toBe('awake');
      for (const j of [shorter, byType]) {
        expect(await settled(dt, j)).toMatchObject({ state: 'failed', error: { name: 'TimeoutError' } });
      }
      const s = (await dt.getTask(shorter.rootTaskId)).attempts![0]!;
      expect(s.finishedAt - s.startedAt).toBeLessThan(2000);
    });

    it('a timed-out attempt is retried', async () => {
      const dt = await h.open();
      dt.handle(
        'hangs-once',
        async (ctx) => {
          if (ctx.task.attempt === 1) await h.hold(ctx.signal);
          return `attempt ${ctx.task.attempt}`;
        },
        { timeoutMs: 40, maxAttempts: 2, backoffMs: 1 },
      );
      await dt.start();
      const job = await dt.submit('hangs-once', null);
      expect(await job.result()).toBe('attempt 2');
      const t = await dt.getTask(job.rootTaskId);
      expect(t.attempts!.map((a) => a.error.name)).toEqual(['TimeoutError']);
    });
  });
}
