/**
 * 1. Jobs: submitting creates the job and its root task atomically; namespaces; a job is
 * `running` until its root settles and then takes the root's state and result; queries of
 * jobs (counts by state), tasks (payload, result, error, attempts, timings), trees (paged)
 * and job lists (by state, type and time, paged).
 */
import { describe, expect, it } from 'vitest';
import { JobFailedError, NonRetryableError, type TaskHandle } from '../../src/index.js';
import { type Harness, settled, sleep, untilState } from './harness.js';

export function jobTests(h: Harness): void {
  describe('jobs', () => {
    it('submit creates the job and its root task together', async () => {
      const dt = await h.open();
      const job = await dt.submit('greet', { name: 'ada' });
      const info = await dt.getJob(job.id);
      expect(info).toMatchObject({
        id: job.id,
        namespace: 'default',
        type: 'greet',
        rootTaskId: job.rootTaskId,
        state: 'running',
        result: null,
        error: null,
        settledAt: null,
        total: 1,
      });
      expect(info.counts.queued).toBe(1);
      const root = await dt.getTask(job.rootTaskId);
      expect(root).toMatchObject({
        id: job.rootTaskId,
        jobId: job.id,
        parentId: null,
        type: 'greet',
        state: 'queued',
        payload: { name: 'ada' },
        result: null,
        error: null,
      });
      expect((await dt.listJobs()).map((j) => j.id)).toEqual([job.id]);
    });

    it('a batch of submissions is one transaction: one bad payload creates no job at all', async () => {
      const dt = await h.open();
      await expect(
        dt.submitMany([
          { type: 'greet', payload: { ok: true } },
          { type: 'greet', payload: { notJson: 10n } },
        ]),
      ).rejects.toThrow();
      expect(await dt.listJobs()).toEqual([]);
      expect(await dt.queuedTypes()).toEqual([]);
    });

    it('jobs belong to the default namespace unless given one; workers serve their own namespace', async () => {
      const dt = await h.open();
      const ran: string[] = [];
      dt.handle('work', (ctx) => {
        ran.push(ctx.task.jobId);
        return 'done';
      });
      await dt.start();
      const mine = await dt.submit('work', null);
      const theirs = await dt.submit('work', null, { namespace: 'tenant-a' });
      expect((await dt.getJob(mine.id)).namespace).toBe('default');
      expect((await dt.getJob(theirs.id)).namespace).toBe('tenant-a');
      expect(await mine.result()).toBe('done');
      // The default-namespace worker never claims the tenant's task.
      expect((await dt.getTask(theirs.rootTaskId)).state).toBe('queued');
      expect((await dt.listJobs()).map((j) => j.id)).toEqual([mine.id]);

      const tenant = await h.peer(dt, { namespace: 'tenant-a' });
      expect(tenant.namespace).toBe('tenant-a');
      tenant.handle('work', (ctx) => {
        ran.push(ctx.task.jobId);
        return 'tenant done';
      });
      await tenant.start({ pollMs: 20 });
      expect((await settled(tenant, theirs.id)).result).toBe('tenant done');
      expect((await tenant.listJobs()).map((j) => j.id)).toEqual([theirs.id]);
      const own = await tenant.submit('work', null);
      expect((await tenant.getJob(own.id)).namespace).toBe('tenant-a');
      await settled(tenant, own);
      expect(ran.sort()).toEqual([mine.id, theirs.id, own.id].sort());
    });

    it('a job is running until its root settles, then succeeded with the root result', async () => {
      const dt = await h.open();
      const release = h.gate();
      dt.handle('root', async () => {
        await release.promise;
        return { answer: 42 };
      });
      await dt.start();
      const job = await dt.submit('root', null);
      await untilState(dt, job.rootTaskId, 'running');
      expect((await dt.getJob(job.id)).state).toBe('running');
      release.resolve();
      const info = await settled(dt, job);
      expect(info).toMatchObject({ state: 'succeeded', result: { answer: 42 }, error: null });
      expect(info.settledAt).toBeGreaterThanOrEqual(info.createdAt);
      expect(await job.result()).toEqual({ answer: 42 });
    });

    it('a job fails with its root, and is cancelled with it', async () => {
      const dt = await h.open();
      dt.handle('bad', () => {
        throw new NonRetryableError('bad input');
      });
      await dt.start();
      const failed = await dt.submit('bad', null);
      const info = await settled(dt, failed);
      expect(info.state).toBe('failed');
      expect(info.error).toMatchObject({ message: 'bad input' });
      const err = await failed.result().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(JobFailedError);
      expect(err).toMatchObject({ jobId: failed.id, state: 'failed' });

      const cancelled = await dt.submit('nobody-serves-this', null);
      expect(await cancelled.cancel('changed my mind')).toBe(true);
      expect((await settled(dt, cancelled)).state).toBe('cancelled');
      await expect(cancelled.result()).rejects.toMatchObject({ name: 'JobFailedError', state: 'cancelled' });
    });

    it('getJob counts the tasks of a job by state', async () => {
      const dt = await h.open();
      const release = h.gate();
      const spawned = h.gate<TaskHandle[]>();
      dt.handle('root', async (ctx) => {
        const hs = await ctx.spawnMany([
          { type: 'hold', payload: null, options: { key: 'hold' } },
          { type: 'ok', payload: 1 },
          { type: 'ok', payload: 2 },
          { type: 'unserved', payload: null, options: { ignoreFailure: true } },
          { type: 'ok', payload: 3, options: { after: ['hold'] } },
        ]);
        spawned.resolve(hs);
        return 'root done';
      });
      dt.handle('hold', async () => {
        await release.promise;
      });
      dt.handle('ok', (_ctx, n) => n);
      await dt.start();
      const job = await dt.submit('root', null);
      const [hold, ok1, ok2, unserved, later] = await spawned.promise;
      await untilState(dt, job.rootTaskId, 'completing');
      await untilState(dt, hold!.id, 'running');
      await untilState(dt, ok1!.id, 'succeeded');
      await untilState(dt, ok2!.id, 'succeeded');
      let info = await dt.getJob(job.id);
      expect(info.total).toBe(6);
      expect(info.counts).toEqual({
        blocked: 1,
        queued: 1,
        running: 1,
        waiting: 0,
        completing: 1,
        succeeded: 2,
        failed: 0,
        cancelled: 0,
        skipped: 0,
      });
      expect((await dt.getTask(later!.id)).state).toBe('blocked');
      expect((await dt.getTask(unserved!.id)).state).toBe('queued');

      await dt.cancelTask(unserved!.id);
      release.resolve();
      info = await settled(dt, job);
      expect(info.state).toBe('succeeded');
      expect(info.result).toBe('root done');
      expect(info.counts).toMatchObject({ succeeded: 5, cancelled: 1, blocked: 0, queued: 0, running: 0 });
      expect(Object.values(info.counts).reduce((a, b) => a + b, 0)).toBe(info.total);
    });

    it('getTask returns payload, result, error, attempts and timings', async () => {
      const dt = await h.open();
      dt.handle(
        'double',
        (ctx, p) => {
          if (ctx.task.attempt === 1) throw new Error('first try');
          return { doubled: (p as { n: number }).n * 2 };
        },
        { backoffMs: 1 },
      );
      dt.handle('refuse', () => {
        throw new NonRetryableError('never');
      });
      await dt.start();
      const job = await dt.submit('double', { n: 21 });
      await settled(dt, job);
      const t = await dt.getTask(job.rootTaskId);
      expect(t).toMatchObject({
        jobId: job.id,
        type: 'double',
        state: 'succeeded',
        payload: { n: 21 },
        result: { doubled: 42 },
        attempt: 2,
        openChildren: 0,
      });
      expect(t.attempts).toHaveLength(1);
      expect(t.attempts![0]).toMatchObject({ attempt: 1, error: { name: 'Error', message: 'first try' } });
      const a = t.attempts![0]!;
      expect(a.startedAt).toBeGreaterThanOrEqual(t.createdAt);
      expect(a.finishedAt).toBeGreaterThanOrEqual(a.startedAt);
      expect(t.startedAt!).toBeGreaterThanOrEqual(a.finishedAt);
      expect(t.finishedAt!).toBeGreaterThanOrEqual(t.startedAt!);
      expect(t.settledAt!).toBeGreaterThanOrEqual(t.finishedAt!);

      const bad = await dt.submit('refuse', 'x');
      await settled(dt, bad);
      const f = await dt.getTask(bad.rootTaskId);
      expect(f).toMatchObject({ state: 'failed', payload: 'x', result: null, attempt: 1 });
      expect(f.error).toMatchObject({ name: 'NonRetryableError', message: 'never' });
      expect(f.attempts).toHaveLength(1);
      expect(f.settledAt).not.toBeNull();
    });

    it('a running task shows the worker that holds it and its lease expiry; a queued or settled one neither', async () => {
      const dt = await h.open({ leaseMs: 60_000 });
      const peer = await h.peer(dt, { leaseMs: 60_000 });
      const gate = h.gate();
      dt.handle('mine', () => gate.promise);
      peer.handle('theirs', () => gate.promise);
      const a = await dt.submit('mine', null);
      const b = await dt.submit('theirs', null);
      const queued = await dt.getTask(a.rootTaskId);
      expect(queued).toMatchObject({ state: 'queued', workerId: null, leaseExpiresAt: null });
      const before = Date.now();
      await dt.start();
      await peer.start();
      const ta = await untilState(dt, a.rootTaskId, 'running');
      const tb = await untilState(dt, b.rootTaskId, 'running');
      // Workers name themselves host:pid:uuid; both run in this process here, each its own uuid.
      for (const t of [ta, tb]) {
        expect(t.workerId).toMatch(new RegExp(`:${process.pid}:[0-9a-f-]{36}$`));
        expect(t.leaseExpiresAt).toBeGreaterThanOrEqual(before + 50_000);
      }
      expect(ta.workerId).not.toBe(tb.workerId);
      expect((await dt.tree(a.id)).tasks[0]).toMatchObject({ workerId: ta.workerId });
      gate.resolve();
      await settled(dt, a);
      expect(await dt.getTask(a.rootTaskId)).toMatchObject({
        state: 'succeeded',
        workerId: null,
        leaseExpiresAt: null,
      });
    });

    it('a task that succeeded after failed attempts reports no error (the errors stay in its attempts)', async () => {
      const dt = await h.open();
      dt.handle(
        'flaky',
        (ctx) => {
          if (ctx.task.attempt === 1) throw new Error('first try');
          return 'ok';
        },
        { backoffMs: 1 },
      );
      await dt.start();
      const job = await dt.submit('flaky', null);
      await settled(dt, job);
      const t = await dt.getTask(job.rootTaskId);
      expect(t.state).toBe('succeeded');
      expect(t.attempts).toHaveLength(1);
      expect(t.error).toBeNull();
    });

    it("the tree pages through all of a job's tasks exactly once", async () => {
      const dt = await h.open();
      dt.handle('root', async (ctx) => {
        await ctx.spawnMany([
          ...Array.from({ length: 10 }, (_, i) => ({ type: 'mid', payload: i })),
          ...Array.from({ length: 5 }, (_, i) => ({ type: 'leaf', payload: i })),
        ]);
      });
      dt.handle('mid', async (ctx) => {
        await ctx.spawnMany(Array.from({ length: 3 }, (_, i) => ({ type: 'leaf', payload: i })));
      });
      dt.handle('leaf', () => null);
      await dt.start();
      const job = await dt.submit('root', null);
      const info = await settled(dt, job);
      expect(info.state).toBe('succeeded');
      expect(info.total).toBe(46);

      const pages: number[] = [];
      const paged: string[] = [];
      let after: string | undefined;
      for (;;) {
        const page = await dt.tree(job.id, after === undefined ? { limit: 7 } : { after, limit: 7 });
        pages.push(page.tasks.length);
        paged.push(...page.tasks.map((t) => t.id));
        if (page.next === null) break;
        after = page.next;
      }
      expect(paged).toHaveLength(46);
      expect(new Set(paged).size).toBe(46);
      expect(pages.every((n) => n <= 7)).toBe(true);
      const whole = await dt.tree(job.id, { limit: 1000 });
      expect(whole.next).toBeNull();
      expect(whole.tasks.map((t) => t.id)).toEqual(paged);

      // Exactly a page's worth: no next page; one fewer: a last page of one.
      expect((await dt.tree(job.id, { limit: 46 })).next).toBeNull();
      const first = await dt.tree(job.id, { limit: 45 });
      expect(first.next).not.toBeNull();
      const last = await dt.tree(job.id, { after: first.next!, limit: 45 });
      expect(last.tasks).toHaveLength(1);
      expect(last.next).toBeNull();

      // The parent links rebuild the tree: one root, every other task under a task of the job.
      const ids = new Set(paged);
      const roots = whole.tasks.filter((t) => t.parentId === null);
      expect(roots.map((t) => t.id)).toEqual([job.rootTaskId]);
      expect(whole.tasks.every((t) => t.parentId === null || ids.has(t.parentId))).toBe(true);
      expect(whole.tasks.every((t) => t.jobId === job.id)).toBe(true);
      expect(whole.tasks.filter((t) => t.type === 'mid')).toHaveLength(10);
    });

    it('listJobs filters by state, type and creation time, newest first, and pages', async () => {
      const dt = await h.open();
      dt.handle('alpha', () => 'a');
      dt.handle('beta', () => {
        throw new NonRetryableError('b');
      });
      await dt.start();
      const t0 = Date.now();
      const first = [await dt.submit('alpha', 1), await dt.submit('beta', 1), await dt.submit('gamma', 1)];
      await sleep(5); // creation times are in ms: make the two batches distinguishable
      const tMid = Date.now();
      await sleep(5);
      const second = [
        await dt.submit('alpha', 2),
        await dt.submit('alpha', 3),
        await dt.submit('beta', 2),
        await dt.submit('gamma', 2),
      ];
      const all = [...first, ...second];
      const [a1, b1, g1] = first;
      const [a2, a3, b2, g2] = second;
      for (const j of [a1!, b1!, a2!, a3!, b2!]) await settled(dt, j); // nobody serves gamma

      const ids = (js: Array<{ id: string }>) => js.map((j) => j.id).sort();
      const of = (...js: Array<{ id: string }>) => ids(js);
      expect(ids(await dt.listJobs({ state: 'succeeded' }))).toEqual(of(a1!, a2!, a3!));
      expect(ids(await dt.listJobs({ state: 'failed' }))).toEqual(of(b1!, b2!));
      expect(ids(await dt.listJobs({ state: 'running' }))).toEqual(of(g1!, g2!));
      expect(ids(await dt.listJobs({ type: 'beta' }))).toEqual(of(b1!, b2!));
      expect(ids(await dt.listJobs({ type: 'alpha', state: 'succeeded' }))).toEqual(of(a1!, a2!, a3!));
      expect(ids(await dt.listJobs({ createdAfter: tMid }))).toEqual(ids(second));
      expect(ids(await dt.listJobs({ createdBefore: tMid }))).toEqual(ids(first));
      expect(ids(await dt.listJobs({ createdAfter: t0, createdBefore: tMid, type: 'gamma' }))).toEqual(
        of(g1!),
      );

      const listed = await dt.listJobs();
      expect(ids(listed)).toEqual(ids(all));
      expect(listed.map((j) => j.id)).toEqual(all.map((j) => j.id).reverse()); // newest first
      for (const j of listed) expect(j).toMatchObject({ namespace: 'default' });

      const paged: string[] = [];
      let before: string | undefined;
      for (let n = 0; n < 10; n++) {
        const page = await dt.listJobs(before === undefined ? { limit: 2 } : { before, limit: 2 });
        expect(page.length).toBeLessThanOrEqual(2);
        paged.push(...page.map((j) => j.id));
        if (page.length < 2) break;
        before = page[page.length - 1]!.id;
      }
      expect(paged).toEqual(listed.map((j) => j.id));
    });
  });
}
