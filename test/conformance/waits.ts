/**
 * 3. Durable waits: `waitAll` (throws ChildTaskFailedError if an awaited child did not
 * succeed) and `waitAllSettled` (every outcome), for all children or a given set. A
 * waiting task frees its worker slot and re-runs from the top when the condition holds;
 * `step` memoises work that must not repeat across those re-runs.
 */
import { describe, expect, it } from 'vitest';
import { ChildTaskFailedError, NonRetryableError, type Outcome, type TaskHandle } from '../../src/index.js';
import { EventLog, type Harness, settled, sleep, untilState, within } from './harness.js';

export function waitTests(h: Harness): void {
  describe('durable waits', () => {
    it("waitAll returns the awaited children's results in order", async () => {
      const dt = await h.open();
      dt.handle('root', async (ctx) => {
        const hs = await ctx.spawnMany([3, 1, 2].map((n) => ({ type: 'times10', payload: n })));
        const some = await ctx.waitAll([hs[2]!, hs[0]!]);
        const all = await ctx.waitAll();
        return { some, all };
      });
      dt.handle('times10', (_ctx, n) => (n as number) * 10);
      await dt.start();
      const job = await dt.submit('root', null);
      expect(await job.result()).toEqual({ some: [20, 30], all: [30, 10, 20] });
    });

    it('waitAll throws ChildTaskFailedError with the failed children; the handler may handle it', async () => {
      const dt = await h.open();
      let hs: TaskHandle[] = [];
      dt.handle('root', async (ctx) => {
        hs = await ctx.spawnMany([
          { type: 'ok', payload: 1 },
          { type: 'bad', payload: 'nope' },
          { type: 'ok', payload: 3 },
        ]);
        try {
          await ctx.waitAll(hs);
          return 'no failure seen';
        } catch (e) {
          if (!(e instanceof ChildTaskFailedError)) throw e; // e.g. the suspension itself
          return e.failures.map((f) => ({
            taskId: f.taskId,
            state: f.state,
            message: f.state === 'succeeded' ? null : f.error.message,
          }));
        }
      });
      dt.handle('ok', (_ctx, n) => n);
      dt.handle('bad', (_ctx, msg) => {
        throw new NonRetryableError(msg as string);
      });
      await dt.start();
      const job = await dt.submit('root', null);
      // The failure was observed, so the parent (and the job) succeed.
      expect(await job.result()).toEqual([{ taskId: hs[1]!.id, state: 'failed', message: 'nope' }]);
    });

    it('an uncaught waitAll failure fails the parent with ChildTaskFailedError', async () => {
      const dt = await h.open();
      dt.handle('root', async (ctx) => {
        await ctx.waitAll([await ctx.spawn('bad', null)]);
        return 'unreachable';
      });
      dt.handle('bad', () => {
        throw new NonRetryableError('child broke');
      });
      await dt.start();
      const job = await dt.submit('root', null, { maxAttempts: 1 });
      const info = await settled(dt, job);
      expect(info.state).toBe('failed');
      expect(info.error).toMatchObject({ name: 'ChildTaskFailedError' });
      expect(info.error!.message).toContain('child broke');
    });

    it('waitAllSettled returns every outcome: succeeded, failed, skipped and cancelled', async () => {
      const dt = await h.open();
      const spawned = h.gate<TaskHandle[]>();
      dt.handle('root', async (ctx) => {
        const hs = await ctx.spawnMany([
          { type: 'ok', payload: 'fine' },
          { type: 'bad', payload: null, options: { key: 'bad' } },
          { type: 'ok', payload: 'never', options: { after: ['bad'] } },
          { type: 'unserved', payload: null },
        ]);
        spawned.resolve(hs);
        const outcomes = await ctx.waitAllSettled(hs);
        return outcomes.map((o: Outcome) =>
          o.state === 'succeeded'
            ? { state: o.state, result: o.result }
            : { state: o.state, name: o.error.name },
        );
      });
      dt.handle('ok', (_ctx, p) => p);
      dt.handle('bad', () => {
        throw new NonRetryableError('broken');
      });
      await dt.start();
      const job = await dt.submit('root', null);
      const hs = await spawned.promise;
      await untilState(dt, job.rootTaskId, 'waiting');
      await dt.cancelTask(hs[3]!.id, 'not needed');
      expect(await job.result()).toEqual([
        { state: 'succeeded', result: 'fine' },
        { state: 'failed', name: 'NonRetryableError' },
        { state: 'skipped', name: 'DependencyFailed' },
        { state: 'cancelled', name: 'Cancelled' },
      ]);
    });

    it('waiting frees the worker slot: a chain of waits completes with one slot', async () => {
      const dt = await h.open();
      dt.handle('node', async (ctx, depth) => {
        const d = depth as number;
        if (d === 0) return 1;
        const kids = await ctx.spawnMany([
          { type: 'node', payload: d - 1 },
          { type: 'node', payload: d - 1 },
        ]);
        const counts = await ctx.waitAll<number>(kids);
        return 1 + counts.reduce((a, b) => a + b, 0);
      });
      await dt.start({ concurrency: 1 });
      const job = await dt.submit('node', 3);
      const info = await settled(dt, job);
      expect(info.state).toBe('succeeded');
      expect(info.result).toBe(15);
      expect(info.total).toBe(15);
    });

    it('waiting for a given set resumes once, when all of that set has settled, not the other children', async () => {
      const dt = await h.open();
      const gates = { a: h.gate(), b: h.gate(), c: h.gate() };
      const spawned = h.gate<TaskHandle[]>();
      let runs = 0;
      const cStateAtResume: string[] = [];
      dt.handle('root', async (ctx) => {
        runs++;
        const hs = await ctx.spawnMany(['a', 'b', 'c'].map((name) => ({ type: 'gated', payload: name })));
        spawned.resolve(hs);
        const results = await ctx.waitAll([hs[0]!, hs[1]!]);
        cStateAtResume.push((await dt.getTask(hs[2]!.id)).state);
        return results;
      });
      dt.handle('gated', async (_ctx, name) => {
        await gates[name as 'a' | 'b' | 'c'].promise;
        return name;
      });
      await dt.start();
      const log = new EventLog(dt);
      const job = await dt.submit('root', null);
      const [a, , c] = await spawned.promise;
      expect((await dt.getTask(c!.id)).parentId).toBe(job.rootTaskId);
      await untilState(dt, job.rootTaskId, 'waiting');
      gates.a.resolve();
      await log.next((e) => e.kind === 'task' && e.taskId === a!.id && e.state === 'succeeded');
      // One of the two has settled: the parent keeps waiting (events of a commit arrive together).
      expect(log.statesOf(job.rootTaskId)).toEqual(['queued', 'running', 'waiting']);
      gates.b.resolve();
      const root = await untilState(dt, job.rootTaskId, 'completing');
      expect(root.result).toEqual(['a', 'b']);
      expect(runs).toBe(2);
      expect(log.statesOf(job.rootTaskId)).toEqual([
        'queued',
        'running',
        'waiting',
        'queued',
        'running',
        'completing',
      ]);
      expect(['queued', 'running']).toContain(cStateAtResume.at(-1)); // resumed before c settled
      gates.c.resolve();
      expect(await job.result()).toEqual(['a', 'b']);
    });

    it('step() runs its function once per task, across resumes and retries', async () => {
      const dt = await h.open();
      const release = h.gate();
      const stepRuns = { a: 0, b: 0 };
      const seen: number[] = [];
      let handlerRuns = 0;
      dt.handle('root', async (ctx) => {
        handlerRuns++;
        const a = await ctx.step('a', () => {
          stepRuns.a++;
          return Math.random();
        });
        seen.push(a);
        await ctx.waitAll([await ctx.spawn('leaf', null)]);
        const b = await ctx.step('b', async () => {
          stepRuns.b++;
          return { at: Date.now() };
        });
        if (ctx.task.attempt === 1) throw new Error('fail after the steps, to be retried');
        return { a, b };
      });
      dt.handle('leaf', async () => {
        await release.promise;
      });
      await dt.start();
      const job = await dt.submit('root', null, { maxAttempts: 2, backoffMs: 1 });
      await untilState(dt, job.rootTaskId, 'waiting');
      release.resolve();
      const result = (await job.result()) as { a: number; b: { at: number } };
      // Runs: first (suspends at the wait), resume (throws), retry (returns).
      expect(handlerRuns).toBe(3);
      expect(stepRuns).toEqual({ a: 1, b: 1 });
      expect(new Set(seen)).toEqual(new Set([result.a]));
      expect(seen).toHaveLength(3);
    });
    it("a handler still unwinding after it suspended does not drop its task's next attempt on the same worker", async () => {
      // Short leases: the resumed run loses its lease at once if its worker stops heartbeating it.
      const dt = await h.open({ leaseMs: 300 });
      const unwound = h.gate(); // the first run's async finally (closing a connection, say)
      // The leaf ends once the root waits: ended first, the root's wait would not suspend.
      const rootWaiting = h.gate();
      const resumedRunning = h.gate();
      const finish = h.gate();
      const log = new EventLog(dt);
      let runs = 0;
      dt.handle('root', async (ctx) => {
        const run = ++runs;
        try {
          await ctx.waitAll([await ctx.spawn('leaf', null)]);
        } finally {
          if (run === 1) await unwound.promise;
        }
        resumedRunning.resolve();
        await finish.promise;
        return run;
      });
      dt.handle('leaf', async () => {
        await rootWaiting.promise;
        return 'leaf';
      });
      await dt.start({ concurrency: 4 });
      const job = await dt.submit('root', null);
      await untilState(dt, job.rootTaskId, 'waiting');
      rootWaiting.resolve();
      // The resumed run is claimed by this worker while the first still unwinds.
      await within(resumedRunning.promise, 5000, 'the resumed run');
      unwound.resolve();
      // Several leases long: the resumed attempt must keep its lease through heartbeats.
      await sleep(1500);
      const t = await dt.getTask(job.rootTaskId);
      expect(t.state).toBe('running');
      expect(t.attempts ?? []).toEqual([]);
      finish.resolve();
      expect(await job.result()).toBe(2);
      expect(log.statesOf(job.rootTaskId)).toEqual([
        'queued',
        'running',
        'waiting',
        'queued',
        'running',
        'succeeded',
      ]);
    });
  });
}
