/**
 * 5. Failure propagation, as in structured concurrency: a child's permanent failure that
 * its parent did not observe fails the parent when it settles, with an error naming the
 * child; `ignoreFailure` opts out; a parent that fails cancels its unsettled descendants,
 * so nothing is left running (no orphans).
 */
import { describe, expect, it } from 'vitest';
import { NonRetryableError, StaleAttemptError, type TaskHandle } from '../../src/index.js';
import { allTasks, EventLog, type Harness, settled, unsettledTasks, untilState, within } from './harness.js';

export function failureTests(h: Harness): void {
  describe('failure propagation', () => {
    it('an unobserved child failure (child failed first) fails the parent, naming the child', async () => {
      const dt = await h.open();
      const mayReturn = h.gate();
      let badId = '';
      dt.handle('root', async (ctx) => {
        badId = (await ctx.spawn('bad', null)).id;
        await mayReturn.promise;
        return 'parent thinks all is well';
      });
      dt.handle('bad', () => {
        throw new NonRetryableError('disk on fire');
      });
      await dt.start();
      const log = new EventLog(dt);
      const job = await dt.submit('root', null);
      await log.next((e) => e.kind === 'task' && e.type === 'bad' && e.state === 'failed');
      mayReturn.resolve();
      const info = await settled(dt, job);
      expect(info.state).toBe('failed');
      expect(info.error).toMatchObject({ childTaskId: badId });
      expect(info.error!.message).toContain(badId);
      const root = await dt.getTask(job.rootTaskId);
      expect(root.state).toBe('failed');
      expect(root.error).toMatchObject({ childTaskId: badId });
    });

    it('a parent that rethrows a waited child failure fails at once, without retries', async () => {
      const dt = await h.open();
      let runs = 0;
      dt.handle('root', async (ctx) => {
        runs++;
        await ctx.waitAll([await ctx.spawn('bad', null)]);
        return 'unreachable';
      });
      dt.handle('bad', () => {
        throw new NonRetryableError('broken input');
      });
      await dt.start();
      const job = await dt.submit('root', null, { maxAttempts: 5, backoffMs: 60_000 });
      const info = await settled(dt, job);
      expect(info.state).toBe('failed');
      expect(info.error!.name).toBe('ChildTaskFailedError');
      expect(info.error!.message).toContain('broken input');
      const root = await dt.getTask(job.rootTaskId);
      // One run to spawn and suspend, one to collect and rethrow; no retry of the second.
      expect(runs).toBe(2);
      expect(root.attempts).toHaveLength(1);
      expect(root.attempts![0]!.error.retryable).toBe(false);
    });

    it('an unobserved child failure (parent returned first) fails the completing parent', async () => {
      const dt = await h.open();
      const mayFail = h.gate();
      let badId = '';
      dt.handle('root', async (ctx) => {
        badId = (await ctx.spawn('bad', null)).id;
        return 'done early';
      });
      dt.handle('bad', async () => {
        await mayFail.promise;
        throw new NonRetryableError('late failure');
      });
      await dt.start();
      const job = await dt.submit('root', null);
      await untilState(dt, job.rootTaskId, 'completing');
      mayFail.resolve();
      const info = await settled(dt, job);
      expect(info.state).toBe('failed');
      expect(info.error).toMatchObject({ childTaskId: badId });
      expect(info.error!.message).toContain(badId);
    });

    it('an unobserved failure propagates up through every ancestor', async () => {
      const dt = await h.open();
      const ids: Record<string, string> = {};
      dt.handle('root', async (ctx) => {
        ids.mid = (await ctx.spawn('mid', null)).id;
        await ctx.spawn('fine', null);
      });
      dt.handle('mid', async (ctx) => {
        ids.leaf = (await ctx.spawn('bad', null)).id;
      });
      dt.handle('fine', () => 'fine');
      dt.handle('bad', () => {
        throw new NonRetryableError('deep failure');
      });
      await dt.start();
      const job = await dt.submit('root', null);
      const info = await settled(dt, job);
      expect(info.state).toBe('failed');
      expect((await dt.getTask(ids.mid!)).error).toMatchObject({ childTaskId: ids.leaf });
      expect(info.error).toMatchObject({ childTaskId: ids.mid });
      expect(info.counts).toMatchObject({ failed: 3, succeeded: 1 });
    });

    it('ignoreFailure: a child declared ignorable fails alone', async () => {
      const dt = await h.open();
      let bad: TaskHandle | undefined;
      dt.handle('root', async (ctx) => {
        bad = await ctx.spawn('bad', null, { ignoreFailure: true });
        await ctx.spawn('bad', null, { ignoreFailure: true, key: 'second' });
        return 'ok anyway';
      });
      dt.handle('bad', () => {
        throw new NonRetryableError('optional thing failed');
      });
      await dt.start();
      const job = await dt.submit('root', null);
      const info = await settled(dt, job);
      expect(info).toMatchObject({ state: 'succeeded', result: 'ok anyway' });
      expect(info.counts.failed).toBe(2);
      expect((await dt.getTask(bad!.id)).state).toBe('failed');
    });

    it('an observed failure does not fail the parent', async () => {
      const dt = await h.open();
      dt.handle('root', async (ctx) => {
        const [o] = await ctx.waitAllSettled([await ctx.spawn('bad', null)]);
        return o!.state;
      });
      dt.handle('bad', () => {
        throw new NonRetryableError('seen and handled');
      });
      await dt.start();
      const job = await dt.submit('root', null);
      expect(await job.result()).toBe('failed');
    });

    it("a parent's permanent failure cancels its running and queued descendants: no orphans", async () => {
      const dt = await h.open();
      const running = { worker: h.gate(), grand: h.gate() };
      const aborted: Record<string, unknown> = {};
      const lateSpawn = h.gate<unknown>();
      let workerId = '';
      dt.handle('root', async (ctx) => {
        workerId = (await ctx.spawn('worker', null)).id;
        await running.worker.promise;
        await running.grand.promise;
        throw new NonRetryableError('fatal');
      });
      dt.handle('worker', async (ctx) => {
        await ctx.spawnMany([
          { type: 'grand', payload: null },
          { type: 'unserved', payload: null },
        ]);
        running.worker.resolve();
        aborted.worker = await h.hold(ctx.signal);
        lateSpawn.resolve(await ctx.spawn('grand', null).catch((e: unknown) => e));
        return 'late result';
      });
      dt.handle('grand', async (ctx) => {
        running.grand.resolve();
        aborted.grand = await h.hold(ctx.signal);
      });
      await dt.start();
      const job = await dt.submit('root', null);
      const info = await settled(dt, job);
      expect(info.state).toBe('failed');
      expect(info.error).toMatchObject({ name: 'NonRetryableError', message: 'fatal' });
      expect(await unsettledTasks(dt, job.id)).toEqual([]);
      const tasks = await allTasks(dt, job.id);
      expect(tasks.filter((t) => t.parentId !== null).map((t) => t.state)).toEqual([
        'cancelled',
        'cancelled',
        'cancelled',
      ]);
      // Running handlers saw their signal abort; what they did afterwards changed nothing.
      expect(await within(lateSpawn.promise, 3000, 'the aborted handler to go on')).toBeInstanceOf(
        StaleAttemptError,
      );
      expect(aborted.worker).toBeInstanceOf(Error);
      expect(aborted.grand).toBeInstanceOf(Error);
      await dt.stop();
      expect(await dt.getTask(workerId)).toMatchObject({ state: 'cancelled', result: null });
      expect((await dt.getJob(job.id)).total).toBe(4);
    });
  });
}
