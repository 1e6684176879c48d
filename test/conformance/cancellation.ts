/**
 * 10. Cancellation of a job or a subtree: every unsettled task in it is cancelled; a
 * running handler sees it through its AbortSignal (at once in-process, within one
 * heartbeat from another process); whatever it reports afterwards is discarded.
 */
import { describe, expect, it } from 'vitest';
import { NotFoundError, StaleAttemptError, type TaskHandle } from '../../src/index.js';
import { allTasks, type Harness, settled, unsettledTasks, untilState, within } from './harness.js';

export function cancellationTests(h: Harness): void {
  describe('cancellation', () => {
    it('cancelling a job cancels every unsettled task and aborts running handlers', async () => {
      const dt = await h.open();
      const spawned = h.gate<TaskHandle[]>();
      const runnerStarted = h.gate<string>();
      const runnerAborted = h.gate<unknown>();
      const late = h.gate<{ spawn: unknown; progress: unknown }>();
      dt.handle('root', async (ctx) => {
        const hs = await ctx.spawnMany([
          { type: 'runner', payload: null, options: { key: 'runner' } },
          { type: 'unserved', payload: null },
          { type: 'done', payload: null, options: { after: ['runner'] } },
          { type: 'done', payload: null },
        ]);
        spawned.resolve(hs);
        return ctx.waitAll();
      });
      dt.handle('runner', async (ctx) => {
        await ctx.spawn('unserved', null);
        runnerStarted.resolve(ctx.task.id);
        runnerAborted.resolve(await h.hold(ctx.signal));
        const spawn = await ctx.spawn('done', null, { key: 'after-cancel' }).catch((e: unknown) => e);
        const progress = await ctx.progress('after cancel').catch((e: unknown) => e);
        late.resolve({ spawn, progress });
        return 'late result';
      });
      dt.handle('done', () => 'done');
      await dt.start();
      const job = await dt.submit('root', null);
      const [runner, unserved, blocked, done] = await spawned.promise;
      await runnerStarted.promise;
      await untilState(dt, done!.id, 'succeeded');
      await untilState(dt, job.rootTaskId, 'waiting');
      expect((await dt.getTask(blocked!.id)).state).toBe('blocked');

      expect(await dt.cancelJob(job.id, 'operator said stop')).toBe(true);
      expect((await dt.getJob(job.id)).state).toBe('cancelled');
      expect(await within(runnerAborted.promise, 2000, 'the running handler to be aborted')).toBeInstanceOf(
        Error,
      );
      const { spawn, progress } = await within(late.promise, 2000, 'the aborted handler to go on');
      expect(spawn).toBeInstanceOf(StaleAttemptError);
      expect(progress).toBeInstanceOf(StaleAttemptError);
      await dt.stop(); // the late return has been handled

      const info = await settled(dt, job);
      expect(info).toMatchObject({ state: 'cancelled', total: 6 });
      expect(info.counts).toMatchObject({ succeeded: 1, cancelled: 5 });
      expect(await unsettledTasks(dt, job.id)).toEqual([]);
      const root = await dt.getTask(job.rootTaskId);
      expect(root.state).toBe('cancelled');
      expect(root.error!.message).toContain('operator said stop');
      expect(await dt.getTask(runner!.id)).toMatchObject({
        state: 'cancelled',
        result: null,
        progress: null,
      });
      expect((await dt.getTask(unserved!.id)).state).toBe('cancelled');
      expect((await dt.getTask(blocked!.id)).state).toBe('cancelled');
      await expect(job.result()).rejects.toMatchObject({ name: 'JobFailedError', state: 'cancelled' });
      expect(await dt.cancelJob(job.id)).toBe(false);
    });

    it('cancelling a subtree cancels all of it and nothing else', async () => {
      const dt = await h.open();
      const releaseSolo = h.gate();
      const ids: Record<string, string> = {};
      const branchChildRunning = h.gate();
      const aborted = h.gate<unknown>();
      dt.handle('root', async (ctx) => {
        const [branch, solo] = await ctx.spawnMany([
          { type: 'branch', payload: null },
          { type: 'solo', payload: null },
        ]);
        ids.branch = branch!.id;
        ids.solo = solo!.id;
        const outcomes = await ctx.waitAllSettled();
        return outcomes.map((o) => o.state);
      });
      dt.handle('branch', async (ctx) => {
        const [a, b] = await ctx.spawnMany([
          { type: 'runner', payload: null },
          { type: 'unserved', payload: null },
        ]);
        ids.runner = a!.id;
        ids.unserved = b!.id;
        return 'branch handler done';
      });
      dt.handle('runner', async (ctx) => {
        branchChildRunning.resolve();
        aborted.resolve(await h.hold(ctx.signal));
        return 'late';
      });
      dt.handle('solo', async () => {
        await releaseSolo.promise;
        return 'solo';
      });
      await dt.start();
      const job = await dt.submit('root', null);
      await branchChildRunning.promise;
      await untilState(dt, ids.branch!, 'completing');
      await untilState(dt, ids.solo!, 'running');

      expect(await dt.cancelTask(ids.branch!, 'prune')).toBe(true);
      for (const id of [ids.branch!, ids.runner!, ids.unserved!])
        expect((await dt.getTask(id)).state).toBe('cancelled');
      expect(await within(aborted.promise, 2000, 'the subtree handler to abort')).toBeInstanceOf(Error);
      expect((await dt.getTask(ids.solo!)).state).toBe('running');
      expect((await dt.getJob(job.id)).state).toBe('running');

      releaseSolo.resolve();
      expect(await job.result()).toEqual(['cancelled', 'succeeded']);
      expect(await unsettledTasks(dt, job.id)).toEqual([]);
    });

    it('a handler in another process sees the cancellation within one heartbeat', async () => {
      const dt = await h.open({ leaseMs: 300 }); // heartbeats every 100 ms
      const started = h.gate();
      const aborted = h.gate<number>();
      dt.handle('runner', async (ctx) => {
        started.resolve();
        await h.hold(ctx.signal);
        aborted.resolve(Date.now());
      });
      await dt.start();
      const other = await h.peer(dt, { leaseMs: 300 });
      const job = await dt.submit('runner', null);
      await started.promise;
      const t0 = Date.now();
      expect(await other.cancelJob(job.id)).toBe(true);
      const at = await within(aborted.promise, 2000, 'the handler to see the cancellation');
      expect(at - t0).toBeLessThan(300);
      expect((await settled(dt, job)).state).toBe('cancelled');
    });

    it('cancelling what has settled changes nothing; unknown ids are not found', async () => {
      const dt = await h.open();
      dt.handle('root', async (ctx) => {
        await ctx.spawn('leaf', null);
        return 'ok';
      });
      dt.handle('leaf', () => 'leaf');
      await dt.start();
      const job = await dt.submit('root', null);
      await job.result();
      const leaf = (await allTasks(dt, job.id)).find((t) => t.type === 'leaf')!;
      expect(await dt.cancelJob(job.id)).toBe(false);
      expect(await dt.cancelTask(leaf.id)).toBe(false);
      expect(await dt.getJob(job.id)).toMatchObject({ state: 'succeeded', result: 'ok' });
      expect((await dt.getTask(leaf.id)).state).toBe('succeeded');
      await expect(dt.cancelJob('no-such-job')).rejects.toBeInstanceOf(NotFoundError);
      await expect(dt.cancelTask('no-such-task')).rejects.toBeInstanceOf(NotFoundError);
    });
  });
}
