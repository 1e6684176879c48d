/**
 * 4. Exact completion: a task settles only when its handler has finished and all its
 * children have settled; until then it is visibly `completing`. So the root, and the
 * job, settle only after the very last descendant, however deep or wide the tree.
 */
import { describe, expect, it } from 'vitest';
import type { TaskInfo } from '../../src/index.js';
import { allTasks, EventLog, type Harness, SETTLED, settled, untilState } from './harness.js';

/** Every task settled no earlier than each of its children. */
function expectParentsSettleAfterChildren(tasks: TaskInfo[]): void {
  const byId = new Map(tasks.map((t) => [t.id, t]));
  for (const t of tasks) {
    expect(t.settledAt, `task ${t.id} settled`).not.toBeNull();
    if (t.parentId === null) continue;
    const parent = byId.get(t.parentId)!;
    expect(parent.settledAt!).toBeGreaterThanOrEqual(t.settledAt!);
  }
}

/** In the event log, each task's settling comes after its children's, and the job's comes last. */
function expectSettleEventsBottomUp(log: EventLog, tasks: TaskInfo[], jobId: string): void {
  const settledAt = new Map<string, number>();
  log.events.forEach((e, i) => {
    if (e.kind === 'task' && e.jobId === jobId && SETTLED.includes(e.state)) {
      expect(settledAt.has(e.taskId), `task ${e.taskId} settled twice`).toBe(false);
      settledAt.set(e.taskId, i);
    }
  });
  for (const t of tasks) {
    expect(settledAt.has(t.id), `no settle event for task ${t.id}`).toBe(true);
    if (t.parentId !== null) expect(settledAt.get(t.parentId)!).toBeGreaterThan(settledAt.get(t.id)!);
  }
  const jobEvents = log.events.flatMap((e, i) => (e.kind === 'job' && e.jobId === jobId ? [i] : []));
  expect(jobEvents).toHaveLength(1);
  const lastOfJob = log.events.map((e) => e.jobId).lastIndexOf(jobId);
  expect(jobEvents[0]).toBe(lastOfJob);
}

export function completionTests(h: Harness): void {
  describe('exact completion', () => {
    it('a parent whose handler returned while a child runs is completing, then settles with it', async () => {
      const dt = await h.open();
      const release = h.gate();
      let childId = '';
      dt.handle('root', async (ctx) => {
        childId = (await ctx.spawn('child', null)).id;
        return 'parent result';
      });
      dt.handle('child', async () => {
        await release.promise;
        return 'child result';
      });
      await dt.start();
      const log = new EventLog(dt);
      const job = await dt.submit('root', null);
      const root = await untilState(dt, job.rootTaskId, 'completing');
      expect(root).toMatchObject({ result: 'parent result', settledAt: null, openChildren: 1 });
      expect(root.finishedAt).not.toBeNull();
      expect((await dt.getTask(childId)).state).toBe('running');
      const info = await dt.getJob(job.id);
      expect(info).toMatchObject({ state: 'running', settledAt: null });
      expect(info.counts.completing).toBe(1);

      release.resolve();
      const done = await settled(dt, job);
      expect(done).toMatchObject({ state: 'succeeded', result: 'parent result' });
      const [r, c] = [await dt.getTask(job.rootTaskId), await dt.getTask(childId)];
      expect(r).toMatchObject({ state: 'succeeded', openChildren: 0 });
      expect(r.settledAt!).toBeGreaterThanOrEqual(c.settledAt!);
      expect(log.statesOf(job.rootTaskId)).toEqual(['queued', 'running', 'completing', 'succeeded']);
    });

    it('a deep tree settles bottom-up: the job only after its deepest task', async () => {
      const dt = await h.open();
      const DEPTH = 8;
      const deepestStarted = h.gate();
      const release = h.gate();
      const idAt = new Map<number, string>();
      dt.handle('level', async (ctx, d) => {
        const depth = d as number;
        idAt.set(depth, ctx.task.id);
        if (depth === DEPTH) {
          deepestStarted.resolve();
          await release.promise;
          return 'bottom';
        }
        await ctx.spawn('level', depth + 1);
        await ctx.spawn('quick', depth);
        return depth;
      });
      dt.handle('quick', () => 'quick');
      await dt.start();
      const log = new EventLog(dt);
      const job = await dt.submit('level', 0);
      await deepestStarted.promise;
      for (let d = 0; d < DEPTH; d++) await untilState(dt, idAt.get(d)!, 'completing');
      const mid = await dt.getJob(job.id);
      expect(mid.state).toBe('running');
      expect(mid.settledAt).toBeNull();
      expect(mid.counts.completing).toBe(DEPTH);

      release.resolve();
      const info = await settled(dt, job);
      expect(info).toMatchObject({ state: 'succeeded', result: 0, total: 2 * DEPTH + 1 });
      const tasks = await allTasks(dt, job.id);
      expect(tasks.every((t) => t.state === 'succeeded')).toBe(true);
      expectParentsSettleAfterChildren(tasks);
      expect(info.settledAt!).toBeGreaterThanOrEqual(Math.max(...tasks.map((t) => t.settledAt!)));
      expectSettleEventsBottomUp(log, tasks, job.id);
    });

    it('a wide tree settles exactly once, after every leaf', async () => {
      const dt = await h.open();
      dt.handle('root', async (ctx) => {
        await ctx.spawnMany(Array.from({ length: 30 }, (_, i) => ({ type: 'mid', payload: i })));
        return 'root';
      });
      dt.handle('mid', async (ctx, i) => {
        await ctx.spawnMany(Array.from({ length: 3 }, (_, j) => ({ type: 'leaf', payload: [i, j] })));
        return i;
      });
      dt.handle('leaf', (_ctx, p) => p);
      await dt.start();
      const log = new EventLog(dt);
      const job = await dt.submit('root', null);
      const info = await settled(dt, job);
      expect(info).toMatchObject({ state: 'succeeded', result: 'root', total: 121 });
      expect(info.counts.succeeded).toBe(121);
      const tasks = await allTasks(dt, job.id);
      expect(tasks.every((t) => t.openChildren === 0)).toBe(true);
      expectParentsSettleAfterChildren(tasks);
      expectSettleEventsBottomUp(log, tasks, job.id);
    });
  });
}
