/**
 * 16. Operations that must be safe to repeat and to undo, which the HTTP API relies on:
 * submission idempotent by a caller-chosen job id; a completion or failure sent again after
 * a lost answer answers as the first did; a failed task retried by an operator reopens what
 * its failure settled.
 */
import { describe, expect, it } from 'vitest';
import { newId } from '../../src/engine/ids.js';
import { ChildTaskFailedError, ConflictError, NotFoundError, ValidationError } from '../../src/index.js';
import { deferred, type Harness, settled, within } from './harness.js';

export function operationTests(h: Harness): void {
  describe('idempotent submission by job id', () => {
    it('submitting again with the same jobId returns the same job, and creates nothing', async () => {
      const dt = await h.open();
      const jobId = newId();
      const [a] = await dt.engine.submit([{ type: 'x', payload: 1, options: { jobId } }]);
      const [b, c] = await dt.engine.submit([
        { type: 'x', payload: 2, options: { jobId } },
        { type: 'x', payload: 3, options: { jobId: jobId.toUpperCase() } },
      ]);
      expect(a).toMatchObject({ jobId, created: true });
      expect(b).toEqual({ ...a, created: false });
      expect(c).toEqual({ ...a, created: false });
      expect((await dt.getTask(a!.rootTaskId)).payload).toBe(1);
      expect(await dt.listJobs()).toHaveLength(1);
    });

    it('the same new jobId twice in one call creates one job', async () => {
      const dt = await h.open();
      const jobId = newId();
      const out = await dt.engine.submit([
        { type: 'x', options: { jobId } },
        { type: 'x', options: { jobId } },
      ]);
      expect(out.map((o) => o.created)).toEqual([true, false]);
      expect(out[0]!.rootTaskId).toBe(out[1]!.rootTaskId);
      expect((await dt.getJob(jobId)).total).toBe(1);
    });

    it('a jobId that is not a UUID is refused, naming the item', async () => {
      const dt = await h.open();
      await expect(
        dt.engine.submit([{ type: 'x' }, { type: 'x', options: { jobId: 'job-1' } }]),
      ).rejects.toThrow(/jobs\[1\]\.options\.jobId must be a UUID/);
      await expect(dt.engine.submit([{ type: 'x', options: { jobId: 'job-1' } }])).rejects.toBeInstanceOf(
        ValidationError,
      );
      expect(await dt.listJobs()).toHaveLength(0);
    });
  });

  describe('reports sent again after a lost answer', () => {
    it('a completion sent twice answers true twice and settles once', async () => {
      const dt = await h.open();
      const job = await dt.submit('manual', null);
      const [c] = await dt.engine.claim(dt.namespace, ['manual'], 1);
      const ref = { id: c!.row.id, token: c!.token };
      expect(await dt.engine.complete([{ ...ref, result: 'done' }])).toEqual([true]);
      expect(await dt.engine.complete([{ ...ref, result: 'other' }])).toEqual([true]);
      expect(await settled(dt, job)).toMatchObject({ state: 'succeeded', result: 'done' });
      // A failure from the same attempt is not its outcome: refused.
      expect(await dt.engine.fail([{ ...ref, error: { name: 'E', message: 'late' } }])).toEqual([false]);
    });

    it('a failure sent twice answers true twice and counts one attempt', async () => {
      const dt = await h.open();
      const job = await dt.submit('manual', null, { maxAttempts: 3, backoffMs: 60_000 });
      const [c] = await dt.engine.claim(dt.namespace, ['manual'], 1);
      const ref = { id: c!.row.id, token: c!.token };
      const error = { name: 'E', message: 'boom' };
      expect(await dt.engine.fail([{ ...ref, error }])).toEqual([true]);
      expect(await dt.engine.fail([{ ...ref, error }])).toEqual([true]);
      const t = await dt.getTask(job.rootTaskId);
      expect(t).toMatchObject({ state: 'queued', attempt: 2 });
      expect(t.attempts).toHaveLength(1);
      // Nor is a completion of an attempt that failed.
      expect(await dt.engine.complete([{ ...ref, result: 'late' }])).toEqual([false]);
    });
  });

  describe('releasing a claimed task', () => {
    it('puts it back in the queue without counting an attempt; the old token is stale', async () => {
      const dt = await h.open();
      const job = await dt.submit('manual', null, { concurrency: { key: 'k', limit: 1 } });
      const [c] = await dt.engine.claim(dt.namespace, ['manual'], 1);
      const ref = { id: c!.row.id, token: c!.token };
      expect(await dt.engine.release([ref, { id: newId(), token: 1 }])).toEqual([true, false]);
      expect(await dt.getTask(job.rootTaskId)).toMatchObject({
        state: 'queued',
        attempt: 1,
        startedAt: null,
      });
      // Its concurrency slot was freed: it can be claimed again at once.
      const [again] = await dt.engine.claim(dt.namespace, ['manual'], 1);
      expect(again!.row).toMatchObject({ id: ref.id, attempt: 1 });
      expect(again!.token).not.toBe(ref.token);
      expect(await dt.engine.release([ref])).toEqual([false]);
      expect(await dt.engine.complete([{ id: ref.id, token: again!.token, result: 'done' }])).toEqual([true]);
      expect((await settled(dt, job)).result).toBe('done');
      expect((await dt.getTask(job.rootTaskId)).attempts).toEqual([]);
    });

    it('a worker stopping when its claim lands releases what it claimed and never starts it', async () => {
      // A long lease: only a release lets the task run again soon.
      const dt = await h.open({ leaseMs: 60_000 });
      let runs = 0;
      dt.handle('quick', () => ++runs);
      await dt.start();
      // The claim's transaction has committed (its event is out) but the worker has not got its
      // answer yet: it stops now, with the task claimed and not started.
      const claimed = deferred();
      let stopping: Promise<void> = Promise.resolve();
      const unsub = dt.subscribe((e) => {
        if (e.kind !== 'task' || e.state !== 'running') return;
        stopping = dt.stop({ graceMs: 5000 });
        claimed.resolve();
      });
      const job = await dt.submit('quick', null);
      await within(claimed.promise, 5000, 'the claim');
      await within(stopping, 5000, 'stop()');
      unsub();
      expect(runs).toBe(0);
      expect(await dt.getTask(job.rootTaskId)).toMatchObject({ state: 'queued', attempt: 1, attempts: [] });
      // Another worker takes it at once, not after the 60 s lease.
      const peer = await h.peer(dt, { leaseMs: 60_000 });
      peer.handle('quick', () => 'by the peer');
      await peer.start();
      expect((await settled(dt, job)).result).toBe('by the peer');
    });
  });

  describe('retrying a failed task', () => {
    it('a failed one-task job runs again with a fresh budget and succeeds; its history stays', async () => {
      const dt = await h.open();
      let calls = 0;
      dt.handle('flaky', () => {
        calls++;
        if (calls === 1) throw new Error('first call fails');
        return 'second call works';
      });
      await dt.start();
      const job = await dt.submit('flaky', null, { maxAttempts: 1 });
      expect((await settled(dt, job)).state).toBe('failed');
      await dt.engine.retryTask(job.rootTaskId);
      const info = await settled(dt, job);
      expect(info).toMatchObject({ state: 'succeeded', result: 'second call works', error: null });
      const t = await dt.getTask(job.rootTaskId);
      expect(t.attempts!.map((a) => a.error.message)).toEqual(['first call fails']);
      expect(t.attempt).toBe(2);
    });

    it('a failed child reopens the parent that failed on it; the parent runs again and the job succeeds', async () => {
      const dt = await h.open();
      let childCalls = 0;
      let rootCalls = 0;
      dt.handle('root', async (ctx) => {
        rootCalls++;
        const [c] = await ctx.spawnMany([{ type: 'child', payload: null, options: { maxAttempts: 1 } }]);
        const [r] = await ctx.waitAll([c!]);
        return `child said ${r}`;
      });
      dt.handle('child', () => {
        childCalls++;
        if (childCalls === 1) throw new Error('child fails once');
        return 'ok';
      });
      await dt.start();
      const job = await dt.submit('root', null);
      const failed = await settled(dt, job);
      expect(failed.state).toBe('failed');
      expect(failed.error?.name).toBe(ChildTaskFailedError.name);
      const child = (await dt.tree(job.id)).tasks.find((t) => t.type === 'child')!;
      await dt.engine.retryTask(child.id);
      const info = await settled(dt, job);
      expect(info).toMatchObject({ state: 'succeeded', result: 'child said ok' });
      expect(info.counts.succeeded).toBe(2);
      expect(info.total).toBe(2); // the re-run found its child by key: nothing spawned twice
      expect(rootCalls).toBe(3); // spawn and wait; resume and fail; resume after the retry
    });

    it('a child that failed unobserved: retrying the parent is refused, retrying the child settles both', async () => {
      const dt = await h.open();
      let childCalls = 0;
      dt.handle('root', async (ctx) => {
        await ctx.spawn('child', null, { maxAttempts: 1 });
        return 'root done';
      });
      dt.handle('child', () => {
        if (++childCalls === 1) throw new Error('child fails once');
        return 'ok';
      });
      await dt.start();
      const job = await dt.submit('root', null);
      expect((await settled(dt, job)).state).toBe('failed');
      await expect(dt.engine.retryTask(job.rootTaskId)).rejects.toThrow(/retry that child instead/);
      const child = (await dt.tree(job.id)).tasks.find((t) => t.type === 'child')!;
      await dt.engine.retryTask(child.id);
      expect(await settled(dt, job)).toMatchObject({ state: 'succeeded', result: 'root done' });
    });

    it('is refused for a task that has not failed, an unknown one, or one whose parent observed the failure and succeeded', async () => {
      const dt = await h.open();
      dt.handle('root', async (ctx) => {
        const [c] = await ctx.spawnMany([{ type: 'child', payload: null, options: { maxAttempts: 1 } }]);
        const [o] = await ctx.waitAllSettled([c!]);
        return o!.state;
      });
      dt.handle('child', () => {
        throw new Error('always');
      });
      await dt.start();
      const job = await dt.submit('root', null);
      expect(await settled(dt, job)).toMatchObject({ state: 'succeeded', result: 'failed' });
      const child = (await dt.tree(job.id)).tasks.find((t) => t.type === 'child')!;
      await expect(dt.engine.retryTask(child.id)).rejects.toThrow(/ancestor .* has settled succeeded/);
      await expect(dt.engine.retryTask(job.rootTaskId)).rejects.toBeInstanceOf(ConflictError);
      await expect(dt.engine.retryTask(newId())).rejects.toBeInstanceOf(NotFoundError);
      expect(await dt.getJob(job.id)).toMatchObject({ state: 'succeeded' });
      expect((await dt.getTask(child.id)).state).toBe('failed');
    });
  });
}
