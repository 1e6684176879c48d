/**
 * 2. Spawning: one or many children per call; children run while the parent still runs;
 * spawning is idempotent across resumes and retries (by explicit key or by the order of
 * spawn calls), so a re-run handler gets its children back and never duplicates them.
 */
import { describe, expect, it } from 'vitest';
import { type TaskHandle, ValidationError } from '../../src/index.js';
import { allTasks, deferred, type Harness, settled, untilState, within } from './harness.js';

export function spawningTests(h: Harness): void {
  describe('spawning', () => {
    it('spawnMany creates all the children in one call, under the parent', async () => {
      const dt = await h.open();
      let handles: TaskHandle[] = [];
      dt.handle('root', async (ctx) => {
        handles = await ctx.spawnMany(Array.from({ length: 5 }, (_, i) => ({ type: 'double', payload: i })));
        return ctx.waitAll(handles);
      });
      dt.handle('double', (_ctx, n) => (n as number) * 2);
      await dt.start();
      const job = await dt.submit('root', null);
      expect(await job.result()).toEqual([0, 2, 4, 6, 8]);
      expect(handles).toHaveLength(5);
      expect(new Set(handles.map((c) => c.id)).size).toBe(5);
      for (const c of handles) expect(c).toMatchObject({ type: 'double', parentId: job.rootTaskId });
      const tasks = await allTasks(dt, job.id);
      expect(tasks).toHaveLength(6);
      const children = tasks.filter((t) => t.parentId === job.rootTaskId);
      expect(children.map((t) => t.payload).sort()).toEqual([0, 1, 2, 3, 4]);
      expect(children.every((t) => t.state === 'succeeded')).toBe(true);
    });

    it('children run while their parent is still running', async () => {
      const dt = await h.open();
      const childRan = h.gate<string>();
      dt.handle('root', async (ctx) => {
        await ctx.spawn('child', null);
        // Still inside the parent's handler: the child must be able to run now.
        const parentStateSeenByChild = await within(childRan.promise, 5000, 'the child to run');
        return parentStateSeenByChild;
      });
      dt.handle('child', async (ctx) => {
        childRan.resolve((await dt.getTask(ctx.task.parentId!)).state);
      });
      await dt.start();
      const job = await dt.submit('root', null);
      expect(await job.result()).toBe('running');
    });

    it('a handler re-run after a wait gets the same children back, never duplicates', async () => {
      const dt = await h.open();
      const release = h.gate();
      const runs: TaskHandle[][] = [];
      dt.handle('root', async (ctx) => {
        const many = await ctx.spawnMany([
          { type: 'leaf', payload: 'a' },
          { type: 'leaf', payload: 'b' },
          { type: 'leaf', payload: 'c' },
        ]);
        const keyed = await ctx.spawn('leaf', 'x', { key: 'explicit' });
        runs.push([...many, keyed]);
        return ctx.waitAll();
      });
      dt.handle('leaf', async (_ctx, p) => {
        await release.promise;
        return p;
      });
      await dt.start();
      const job = await dt.submit('root', null);
      await untilState(dt, job.rootTaskId, 'waiting');
      release.resolve();
      expect(await job.result()).toEqual(['a', 'b', 'c', 'x']);
      expect(runs).toHaveLength(2);
      const [first, second] = runs as [TaskHandle[], TaskHandle[]];
      expect(first.every((c) => c.created)).toBe(true);
      expect(second.every((c) => !c.created)).toBe(true);
      expect(second.map((c) => c.id)).toEqual(first.map((c) => c.id));
      expect(first.map((c) => c.key)).toEqual(['#0', '#1', '#2', 'explicit']);
      expect((await dt.getJob(job.id)).total).toBe(5);
    });

    it('a spawn that failed uses up no implicit key: the re-run after a wait gets the same children', async () => {
      const dt = await h.open();
      let runs = 0;
      const ran: string[] = [];
      dt.handle('root', async (ctx) => {
        if (++runs === 1) {
          // Failures of the first run only (as a transient one would be), caught by the handler.
          await ctx
            .spawnMany([
              { type: 'kid', payload: 'x' },
              { type: 'kid', payload: 'y', options: { key: '#taken' } },
            ])
            .catch(() => null);
          await ctx.spawn('kid', { n: 1n }).catch(() => null);
        }
        const [a, b] = await ctx.spawnMany([
          { type: 'kid', payload: 'a' },
          { type: 'kid', payload: 'b' },
        ]);
        const c = await ctx.spawn('kid', 'c');
        return ctx.waitAll([a!, b!, c]);
      });
      // The children finish only once the parent has suspended in its wait, so that the
      // handler surely runs again (a fast worker could otherwise settle them before the wait).
      const suspended = deferred();
      dt.handle('kid', async (_ctx, p) => {
        await suspended.promise;
        ran.push(p as string);
        return p;
      });
      await dt.start();
      const job = await dt.submit('root', null);
      await untilState(dt, job.rootTaskId, 'waiting');
      suspended.resolve();
      expect(await job.result()).toEqual(['a', 'b', 'c']);
      expect(runs).toBe(2);
      const kids = (await allTasks(dt, job.id)).filter((t) => t.type === 'kid');
      expect(kids.map((t) => [t.key, t.payload])).toEqual([
        ['#0', 'a'],
        ['#1', 'b'],
        ['#2', 'c'],
      ]);
      expect(ran.sort()).toEqual(['a', 'b', 'c']);
    });

    it('a retried handler gets the same children back', async () => {
      const dt = await h.open();
      const runs: TaskHandle[][] = [];
      dt.handle('root', async (ctx) => {
        const hs = await ctx.spawnMany([
          { type: 'leaf', payload: 1 },
          { type: 'leaf', payload: 2, options: { key: 'two' } },
        ]);
        runs.push(hs);
        if (ctx.task.attempt === 1) throw new Error('transient');
        return ctx.waitAll(hs);
      });
      dt.handle('leaf', (_ctx, p) => p);
      await dt.start();
      const job = await dt.submit('root', null, { maxAttempts: 2, backoffMs: 1 });
      expect(await job.result()).toEqual([1, 2]);
      expect(runs).toHaveLength(2);
      expect(runs[1]!.map((c) => c.id)).toEqual(runs[0]!.map((c) => c.id));
      expect(runs[1]!.every((c) => !c.created)).toBe(true);
      const info = await dt.getJob(job.id);
      expect(info.total).toBe(3);
      expect((await dt.getTask(job.rootTaskId)).attempts).toHaveLength(1);
    });

    it('an explicit key names a child among its siblings: the same key returns the same child', async () => {
      const dt = await h.open();
      const runs: Array<Record<string, TaskHandle>> = [];
      dt.handle('root', async (ctx) => {
        const got: Record<string, TaskHandle> = {};
        runs.push(got);
        got.a1 = await ctx.spawn('leaf', 1, { key: 'a' });
        got.a2 = await ctx.spawn('leaf', 2, { key: 'a' });
        got.b = await ctx.spawn('leaf', 3, { key: 'b' });
        got.implicit = await ctx.spawn('leaf', 4);
        await ctx.spawnMany([
          { type: 'mid', payload: null },
          { type: 'mid', payload: null },
        ]);
        return ctx.waitAll([got.a1, got.b]);
      });
      // Keys are per parent: two parents may use the same key.
      dt.handle('mid', async (ctx) => ctx.spawn('leaf', 0, { key: 'a' }));
      dt.handle('leaf', (_ctx, p) => p);
      await dt.start();
      const job = await dt.submit('root', null);
      expect(await job.result()).toEqual([1, 3]);
      const got = runs[0]!; // the first run (later ones, after the wait, get created: false)
      expect(got.a1).toMatchObject({ key: 'a', created: true });
      expect(got.a2).toMatchObject({ id: got.a1!.id, key: 'a', created: false });
      expect(got.b!.id).not.toBe(got.a1!.id);
      expect(got.implicit!.key).toBe('#0');
      expect(await dt.getTask(got.a1!.id)).toMatchObject({ key: 'a', payload: 1 });
      const tasks = await allTasks(dt, job.id);
      expect(tasks).toHaveLength(1 + 3 + 2 + 2);
      expect(tasks.filter((t) => t.key === 'a')).toHaveLength(3); // one under root, one under each mid
    });

    it('the same explicit key twice in one spawnMany call gives one child', async () => {
      const dt = await h.open();
      dt.handle('root', async (ctx) => {
        const [x, y] = await ctx.spawnMany([
          { type: 'leaf', payload: 1, options: { key: 'same' } },
          { type: 'leaf', payload: 2, options: { key: 'same' } },
        ]);
        return [x!.id === y!.id, y!.created];
      });
      dt.handle('leaf', (_ctx, p) => p);
      await dt.start();
      const job = await dt.submit('root', null, { maxAttempts: 1 });
      const info = await settled(dt, job);
      expect(info.error).toBeNull();
      expect(info.result).toEqual([true, false]);
      expect(info.total).toBe(2);
    });

    it('keys starting with # are reserved for implicit keys', async () => {
      const dt = await h.open();
      let err: unknown;
      dt.handle('root', async (ctx) => {
        err = await ctx.spawn('leaf', null, { key: '#0' }).catch((e: unknown) => e);
        return 'ok';
      });
      await dt.start();
      const job = await dt.submit('root', null);
      await settled(dt, job);
      expect(err).toBeInstanceOf(ValidationError);
      expect((await dt.getJob(job.id)).total).toBe(1);
    });
  });
}
