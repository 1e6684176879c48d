/**
 * 13. Progress and events: handlers report progress (stored, and published); in-process
 * subscribers receive a job's events (task state changes, progress, the job settling) in
 * commit order, each task's states following the state machine; times follow each task's
 * transitions and the tree (and, one transaction at a time, the order of delivery).
 */
import { describe, expect, it } from 'vitest';
import { type DynataskEvent, NonRetryableError, type TaskState } from '../../src/index.js';
import { allTasks, EventLog, type Harness, SETTLED, settled, untilState } from './harness.js';

/** The task state machine (docs/state-machine.md): the states each state may move to. */
const NEXT: Record<TaskState, TaskState[]> = {
  blocked: ['queued', 'skipped', 'cancelled'],
  queued: ['running', 'cancelled'],
  running: ['waiting', 'completing', 'queued', 'succeeded', 'failed', 'cancelled'],
  waiting: ['queued', 'cancelled'],
  completing: ['succeeded', 'failed', 'cancelled'],
  succeeded: [],
  failed: [],
  cancelled: [],
  skipped: [],
};

export function eventTests(h: Harness): void {
  describe('progress and events', () => {
    it('progress is stored and published to subscribers in order', async () => {
      const dt = await h.open();
      dt.handle('work', async (ctx) => {
        for (let i = 1; i <= 5; i++) await ctx.progress({ done: i, of: 5 });
        return 'done';
      });
      await dt.start();
      const log = new EventLog(dt);
      const job = await dt.submit('work', null);
      await settled(dt, job);
      const mine = log.events.filter((e) => e.jobId === job.id);
      const progress = mine.flatMap((e) => (e.kind === 'progress' ? [e.progress] : []));
      expect(progress).toEqual([1, 2, 3, 4, 5].map((done) => ({ done, of: 5 })));
      const kinds = mine.map((e) => (e.kind === 'task' ? e.state : e.kind));
      expect(kinds).toEqual(['queued', 'running', ...Array(5).fill('progress'), 'succeeded', 'job']);
      expect(mine.every((e) => e.kind === 'job' || e.taskId === job.rootTaskId)).toBe(true);
      expect((await dt.getTask(job.rootTaskId)).progress).toEqual({ done: 5, of: 5 });
    });

    it("a job's events follow the state machine, in commit order, and end with the job settling", async () => {
      const dt = await h.open();
      dt.handle('root', async (ctx) => {
        await ctx.spawnMany([
          { type: 'flaky', payload: null, options: { key: 'a' } },
          { type: 'leaf', payload: null, options: { after: ['a'] } },
          { type: 'bad', payload: null, options: { key: 'c' } },
          { type: 'leaf', payload: null, options: { after: ['c'] } },
          { type: 'mid', payload: null },
        ]);
        await ctx.progress('spawned');
        const outcomes = await ctx.waitAllSettled();
        return outcomes.map((o) => o.state);
      });
      dt.handle(
        'flaky',
        (ctx) => {
          if (ctx.task.attempt === 1) throw new Error('once');
        },
        { backoffMs: 1 },
      );
      dt.handle('bad', () => {
        throw new NonRetryableError('bad');
      });
      const rootWaiting = h.gate();
      dt.handle('mid', async (ctx) => {
        await rootWaiting.promise;
        await ctx.spawnMany([
          { type: 'leaf', payload: null },
          { type: 'leaf', payload: null },
        ]);
      });
      dt.handle('leaf', () => 'leaf');
      await dt.start();
      const log = new EventLog(dt);
      const job = await dt.submit('root', null);
      await untilState(dt, job.rootTaskId, 'waiting');
      rootWaiting.resolve();
      const info = await settled(dt, job);
      expect(info.result).toEqual(['succeeded', 'succeeded', 'failed', 'skipped', 'succeeded']);
      const events = log.events.filter((e) => e.jobId === job.id);
      const tasks = await allTasks(dt, job.id);
      expect(tasks).toHaveLength(8);

      // One transaction at a time: times follow delivery order. Several at once: each task's
      // do, and a parent settles no earlier than its children (checked below).
      if (!h.overlapping)
        for (let i = 1; i < events.length; i++)
          expect(events[i]!.at).toBeGreaterThanOrEqual(events[i - 1]!.at);
      const settledAt = new Map<string, number>();
      const settledIndex = new Map<string, number>();
      for (const t of tasks) {
        const states = log.statesOf(t.id);
        expect(['queued', 'blocked'], `first state of ${t.type} ${t.id}`).toContain(states[0]);
        for (let i = 1; i < states.length; i++)
          expect(NEXT[states[i - 1]!], `${t.type}: ${states.join(' > ')}`).toContain(states[i]);
        expect(states.at(-1)).toBe(t.state);
        expect(states.filter((s) => SETTLED.includes(s))).toHaveLength(1);
        const times = events.flatMap((e) => (e.kind === 'task' && e.taskId === t.id ? [e.at] : []));
        for (let i = 1; i < times.length; i++) expect(times[i]).toBeGreaterThanOrEqual(times[i - 1]!);
        settledAt.set(t.id, times.at(-1)!);
        expect(t.settledAt).toBe(times.at(-1));
        settledIndex.set(
          t.id,
          events.findIndex((e) => e.kind === 'task' && e.taskId === t.id && SETTLED.includes(e.state)),
        );
      }
      for (const t of tasks)
        if (t.parentId) {
          expect(settledIndex.get(t.parentId)!).toBeGreaterThan(settledIndex.get(t.id)!);
          expect(settledAt.get(t.parentId)!).toBeGreaterThanOrEqual(settledAt.get(t.id)!);
        }
      const jobAt = events.find((e) => e.kind === 'job')!.at;
      expect(jobAt).toBe(settledAt.get(job.rootTaskId));

      const flaky = tasks.find((t) => t.type === 'flaky')!;
      expect(log.statesOf(flaky.id)).toEqual(['queued', 'running', 'queued', 'running', 'succeeded']);
      const skipped = tasks.find((t) => t.state === 'skipped')!;
      expect(log.statesOf(skipped.id)).toEqual(['blocked', 'skipped']);
      const mid = tasks.find((t) => t.type === 'mid')!;
      expect(log.statesOf(mid.id)).toEqual(['queued', 'running', 'completing', 'succeeded']);
      expect(log.statesOf(job.rootTaskId).slice(0, 3)).toEqual(['queued', 'running', 'waiting']);
      expect(events.some((e) => e.kind === 'progress' && e.progress === 'spawned')).toBe(true);
      const last = events.at(-1)!;
      expect(last).toMatchObject({ kind: 'job', state: 'succeeded' });
      expect(events.filter((e) => e.kind === 'job')).toHaveLength(1);
    });

    it('subscribe(listener, jobId) delivers only that job; unsubscribing stops delivery', async () => {
      const dt = await h.open();
      dt.handle('work', async (ctx, n) => {
        await ctx.progress(n);
        return n;
      });
      const [a, b] = await dt.submitMany([
        { type: 'work', payload: 'a' },
        { type: 'work', payload: 'b' },
      ]);
      const forA: DynataskEvent[] = [];
      dt.subscribe((e) => forA.push(e), a!.id);
      const all: DynataskEvent[] = [];
      const unsubscribe = dt.subscribe((e) => all.push(e));
      await dt.start();
      await settled(dt, a!);
      await settled(dt, b!);
      expect(forA.length).toBeGreaterThan(0);
      expect(forA.every((e) => e.jobId === a!.id)).toBe(true);
      expect(forA.map((e) => (e.kind === 'task' ? e.state : e.kind))).toEqual([
        'running',
        'progress',
        'succeeded',
        'job',
      ]);
      expect(all.some((e) => e.jobId === b!.id)).toBe(true);

      unsubscribe();
      const seen = all.length;
      await settled(dt, await dt.submit('work', 'c'));
      expect(all).toHaveLength(seen);
    });
  });
}
