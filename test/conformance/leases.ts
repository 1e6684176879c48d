/**
 * 8. Leases and fencing, driven through the Engine as a worker would: a claim leases the
 * task and hands out an attempt token; heartbeats extend the lease; an expired lease fails
 * the attempt (and retries it); a completion, failure, heartbeat, spawn or progress report
 * carrying a stale token is rejected and changes nothing.
 */
import { describe, expect, it } from 'vitest';
import { type Dynatask, StaleAttemptError } from '../../src/index.js';
import { type Harness, pollUntil, settled, sleep } from './harness.js';

/** Claims the one queued task of `type`, polling while it is not yet due (backoff). */
async function claimOne(dt: Dynatask, type: string, leaseMs?: number) {
  const [c] = await pollUntil(async () => {
    const got = await dt.engine.claim(dt.namespace, [type], 1, leaseMs);
    return got.length ? got : undefined;
  }, `a ${type} task to claim`);
  return { id: c!.row.id, token: c!.token };
}

export function leaseTests(h: Harness): void {
  describe('leases and fencing', () => {
    it('a claim leases one task with a token; nothing else can claim it', async () => {
      const dt = await h.open();
      const job = await dt.submit('manual', { n: 1 });
      const other = await dt.submit('other', null);
      const ref = await claimOne(dt, 'manual');
      expect(ref.id).toBe(job.rootTaskId);
      expect(await dt.getTask(ref.id)).toMatchObject({ state: 'running', attempt: 1 });
      expect(await dt.engine.claim(dt.namespace, ['manual'], 10)).toEqual([]);
      expect((await dt.getTask(other.rootTaskId)).state).toBe('queued');
      expect(await dt.engine.complete([{ ...ref, result: 'done' }])).toEqual([true]);
      expect(await settled(dt, job)).toMatchObject({ state: 'succeeded', result: 'done' });
    });

    it('a wrong token is rejected by complete, fail, heartbeat, spawn, progress and wait, changing nothing', async () => {
      const dt = await h.open();
      const job = await dt.submit('manual', null);
      const ref = await claimOne(dt, 'manual');
      const stale = { id: ref.id, token: ref.token + 1 };
      const before = await dt.getTask(ref.id);

      expect(await dt.engine.complete([{ ...stale, result: 'forged' }])).toEqual([false]);
      expect(await dt.engine.fail([{ ...stale, error: { name: 'Error', message: 'forged' } }])).toEqual([
        false,
      ]);
      expect(await dt.engine.heartbeat([stale])).toEqual(['lost']);
      await expect(dt.engine.spawn(stale, [{ type: 'child', payload: null }], ['#0'])).rejects.toBeInstanceOf(
        StaleAttemptError,
      );
      await expect(dt.engine.progress(stale, 0.5)).rejects.toBeInstanceOf(StaleAttemptError);
      await expect(dt.engine.wait(stale, { all: true })).rejects.toBeInstanceOf(StaleAttemptError);

      const after = await dt.getTask(ref.id);
      expect(after).toEqual(before);
      expect(after.attempts).toEqual([]);
      expect((await dt.getJob(job.id)).total).toBe(1);

      expect(await dt.engine.complete([{ ...ref, result: 'real' }])).toEqual([true]);
      expect((await settled(dt, job)).result).toBe('real');
    });

    it('an expired lease fails the attempt and retries it; the old attempt is fenced off', async () => {
      const dt = await h.open();
      const job = await dt.submit('manual', null, { backoffMs: 1 });
      const first = await claimOne(dt, 'manual', 30);
      await sleep(50); // let the lease run out
      expect(await dt.engine.expireLeases()).toBe(1);
      const t = await dt.getTask(job.rootTaskId);
      expect(t).toMatchObject({ state: 'queued', attempt: 2 });
      expect(t.attempts).toHaveLength(1);
      expect(t.attempts![0]).toMatchObject({ attempt: 1, error: { name: 'LeaseExpired' } });

      const second = await claimOne(dt, 'manual', 10_000);
      expect(second.token).not.toBe(first.token);
      expect(await dt.getTask(job.rootTaskId)).toMatchObject({ state: 'running', attempt: 2 });
      // The first attempt's worker comes back: everything it sends is rejected.
      expect(await dt.engine.complete([{ ...first, result: 'from the dead' }])).toEqual([false]);
      expect(await dt.engine.heartbeat([first])).toEqual(['lost']);
      await expect(dt.engine.spawn(first, [{ type: 'child' }], ['#0'])).rejects.toBeInstanceOf(
        StaleAttemptError,
      );
      expect(await dt.engine.heartbeat([second])).toEqual(['ok']);
      expect(await dt.engine.complete([{ ...second, result: 'second' }])).toEqual([true]);
      expect(await settled(dt, job)).toMatchObject({ state: 'succeeded', result: 'second', total: 1 });
    });

    it('heartbeats extend the lease', async () => {
      const dt = await h.open();
      const job = await dt.submit('manual', null, { backoffMs: 1 });
      const ref = await claimOne(dt, 'manual', 60);
      await sleep(30);
      expect(await dt.engine.heartbeat([ref], 150)).toEqual(['ok']);
      await sleep(60); // past the first lease, within the extended one
      expect(await dt.engine.expireLeases()).toBe(0);
      expect((await dt.getTask(ref.id)).state).toBe('running');
      await sleep(150); // past the extended lease
      expect(await dt.engine.expireLeases()).toBe(1);
      expect((await dt.getTask(job.rootTaskId)).attempts![0]!.error.name).toBe('LeaseExpired');
    });

    it('an expired lease counts as an attempt: the last one fails the task', async () => {
      const dt = await h.open();
      const job = await dt.submit('manual', null, { maxAttempts: 1 });
      await claimOne(dt, 'manual', 20);
      await sleep(40);
      expect(await dt.engine.expireLeases()).toBe(1);
      const info = await settled(dt, job);
      expect(info.state).toBe('failed');
      expect(info.error).toMatchObject({ name: 'LeaseExpired' });
    });

    it('an expired lease is retried with the type settings in the database, not the sweeping instance’s copy', async () => {
      // `dt` opened before `peer` registered the type: its copy of the settings lacks it.
      const dt = await h.open();
      const peer = await h.peer(dt);
      await peer.port.configureTypes(dt.namespace, [{ type: 'charge', maxAttempts: 1, backoffMs: 1 }]);
      const job = await dt.submit('charge', null);
      await claimOne(dt, 'charge', 20); // its worker dies
      await sleep(40);
      expect(await dt.engine.expireLeases()).toBe(1);
      // One attempt allowed: the card is not charged twice.
      const info = await settled(dt, job);
      expect(info).toMatchObject({ state: 'failed', error: { name: 'LeaseExpired' } });
      expect((await dt.getTask(job.rootTaskId)).attempts).toHaveLength(1);

      // Another namespace, registered after dt opened, failed by a handler's report.
      const other = await h.peer(dt, { namespace: 'billing' });
      await other.port.configureTypes('billing', [{ type: 'charge', maxAttempts: 1 }]);
      const job2 = await other.submit('charge', null);
      const [c] = await pollUntil(async () => {
        const got = await dt.engine.claim('billing', ['charge'], 1);
        return got.length ? got : undefined;
      }, 'the billing task');
      const error = { name: 'Error', message: 'declined' };
      expect(await dt.engine.fail([{ id: c!.row.id, token: c!.token, error }])).toEqual([true]);
      expect(await settled(other, job2)).toMatchObject({ state: 'failed' });
    });

    it('a task whose lease expired keeps its place in the queue, ahead of tasks queued meanwhile', async () => {
      const dt = await h.open();
      const job = await dt.submit('batch', 'first', { backoffMs: 60_000 });
      await claimOne(dt, 'batch', 20); // its worker dies
      const later = await dt.submitMany([1, 2, 3].map((n) => ({ type: 'batch', payload: n })));
      await sleep(40);
      expect(await dt.engine.expireLeases()).toBe(1);
      const t = await dt.getTask(job.rootTaskId);
      expect(t).toMatchObject({ state: 'queued', attempt: 2 });
      // Not pushed behind the three queued meanwhile, nor delayed by a backoff.
      const [next] = await dt.engine.claim(dt.namespace, ['batch'], 1);
      expect(next?.row.id).toBe(job.rootTaskId);
      expect(later).toHaveLength(3);
    });

    it('a released task (claimed, never started) keeps its place in the queue', async () => {
      const dt = await h.open();
      const job = await dt.submit('batch', 'first');
      const ref = await claimOne(dt, 'batch');
      await dt.submitMany([1, 2, 3].map((n) => ({ type: 'batch', payload: n })));
      await sleep(5); // a later millisecond than the three queued meanwhile
      expect(await dt.engine.release([ref])).toEqual([true]);
      const [next] = await dt.engine.claim(dt.namespace, ['batch'], 1);
      expect(next?.row.id).toBe(job.rootTaskId);
    });

    it("a crashed worker's task is recovered by a live worker's lease sweeper", async () => {
      const dt = await h.open({ leaseMs: 150 });
      const attempts: number[] = [];
      dt.handle('work', (ctx) => {
        attempts.push(ctx.task.attempt);
        return 'recovered';
      });
      const job = await dt.submit('work', null, { backoffMs: 1 });
      await claimOne(dt, 'work', 40); // a worker claims it and dies
      await dt.start();
      expect(await job.result()).toBe('recovered');
      expect(attempts).toEqual([2]);
      const t = await dt.getTask(job.rootTaskId);
      expect(t.attempts!.map((a) => a.error.name)).toEqual(['LeaseExpired']);
    });

    it('a heartbeat for a cancelled task says so, and its completion is discarded', async () => {
      const dt = await h.open();
      const job = await dt.submit('manual', null);
      const ref = await claimOne(dt, 'manual');
      expect(await dt.cancelJob(job.id)).toBe(true);
      expect(await dt.engine.heartbeat([ref])).toEqual(['cancelled']);
      expect(await dt.engine.complete([{ ...ref, result: 'too late' }])).toEqual([false]);
      expect(await dt.getTask(ref.id)).toMatchObject({ state: 'cancelled', result: null });
      expect((await dt.getJob(job.id)).state).toBe('cancelled');
    });
  });
}
