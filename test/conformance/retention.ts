/**
 * 14. Retention: `purge({ olderThanMs })` deletes the jobs that settled longer ago than
 * that, whatever their outcome, with all their tasks; running jobs are never purged.
 */
import { describe, expect, it } from 'vitest';
import { NonRetryableError, NotFoundError } from '../../src/index.js';
import { allTasks, type Harness, settled, sleep } from './harness.js';

export function retentionTests(h: Harness): void {
  describe('retention', () => {
    it('purge deletes settled jobs older than the cutoff, with their tasks, and keeps running ones', async () => {
      const dt = await h.open();
      const release = h.gate();
      dt.handle('tree', async (ctx) => {
        await ctx.spawnMany([
          { type: 'leaf', payload: null },
          { type: 'leaf', payload: null },
        ]);
      });
      dt.handle('leaf', async (ctx) => {
        await ctx.step('remember', () => 'something');
      });
      dt.handle('bad', () => {
        throw new NonRetryableError('bad');
      });
      dt.handle('hold', async () => {
        await release.promise;
        return 'held';
      });
      await dt.start();
      const ok = await dt.submit('tree', null);
      const bad = await dt.submit('bad', null);
      const cancelled = await dt.submit('unserved', null);
      const running = await dt.submit('hold', null);
      await dt.cancelJob(cancelled.id);
      for (const j of [ok, bad, cancelled]) await settled(dt, j);
      const okTasks = await allTasks(dt, ok.id);
      expect(okTasks).toHaveLength(3);
      await sleep(5); // settled strictly before the cutoff of `olderThanMs: 0`

      expect(await dt.purge({ olderThanMs: 60_000 })).toBe(0);
      expect(await dt.purge({ olderThanMs: 0 })).toBe(3);
      for (const j of [ok, bad, cancelled]) {
        await expect(dt.getJob(j.id)).rejects.toBeInstanceOf(NotFoundError);
        await expect(dt.getTask(j.rootTaskId)).rejects.toBeInstanceOf(NotFoundError);
        expect((await dt.tree(j.id)).tasks).toEqual([]);
      }
      for (const t of okTasks) await expect(dt.getTask(t.id)).rejects.toBeInstanceOf(NotFoundError);
      expect((await dt.listJobs()).map((j) => j.id)).toEqual([running.id]);
      expect((await dt.getJob(running.id)).state).toBe('running');

      release.resolve();
      expect(await running.result()).toBe('held');
      await sleep(5);
      expect(await dt.purge({ olderThanMs: 0 })).toBe(1);
      expect(await dt.listJobs()).toEqual([]);
    });
  });
}
