/**
 * 12. Scheduling: priorities order ready tasks; a run-at time or delay holds a task back;
 * concurrency limits per type and per key (given at spawn) are never exceeded, across all
 * workers; a task that waits, fails, times out, is cancelled or loses its lease gives its
 * slot back.
 */
import { describe, expect, it } from 'vitest';
import { NonRetryableError } from '../../src/index.js';
import { ConcurrencyMeter, type Harness, settled, sleep, untilState, within } from './harness.js';

export function schedulingTests(h: Harness): void {
  describe('scheduling', () => {
    it('higher priority runs first; equal priorities in submission order', async () => {
      const dt = await h.open();
      const order: string[] = [];
      dt.handle('job', (_ctx, name) => {
        order.push(name as string);
      });
      const specs: Array<[string, number]> = [
        ['p1', 1],
        ['p5', 5],
        ['p3', 3],
        ['low', -2],
        ['p3-second', 3],
        ['none', 0],
      ];
      const jobs = await dt.submitMany(
        specs.map(([name, priority]) => ({ type: 'job', payload: name, options: { priority } })),
      );
      await dt.start({ concurrency: 1 });
      for (const j of jobs) await settled(dt, j);
      expect(order).toEqual(['p5', 'p3', 'p3-second', 'p1', 'none', 'low']);
      expect((await dt.getTask(jobs[1]!.rootTaskId)).priority).toBe(5);
    });

    it("children's priorities order them too", async () => {
      const dt = await h.open();
      const order: number[] = [];
      dt.handle('root', async (ctx) => {
        const kids = await ctx.spawnMany(
          [2, 9, 4, 7].map((p) => ({ type: 'kid', payload: p, options: { priority: p } })),
        );
        await ctx.waitAll(kids); // frees the only slot
      });
      dt.handle('kid', (_ctx, p) => {
        order.push(p as number);
      });
      await dt.start({ concurrency: 1 });
      await settled(dt, await dt.submit('root', null));
      expect(order).toEqual([9, 7, 4, 2]);
    });

    it('delayMs and runAt hold a task back until its time', async () => {
      const dt = await h.open();
      const startedAt = new Map<string, number>();
      dt.handle('timed', async (ctx, name) => {
        startedAt.set(name as string, Date.now());
        if (name === 'parent') await ctx.waitAll([await ctx.spawn('timed', 'child', { delayMs: 80 })]);
      });
      await dt.start();
      const delayed = await dt.submit('timed', 'delayed', { delayMs: 120 });
      const at = Date.now() + 100;
      const runAt = await dt.submit('timed', 'runAt', { runAt: new Date(at) });
      const past = await dt.submit('timed', 'past', { runAt: Date.now() - 60_000 });
      const far = await dt.submit('timed', 'far', { delayMs: 60_000 });
      const parent = await dt.submit('timed', 'parent');
      for (const j of [delayed, runAt, past, parent]) expect((await settled(dt, j)).state).toBe('succeeded');

      const d = await dt.getTask(delayed.rootTaskId);
      expect(d.runAt).toBeGreaterThanOrEqual(d.createdAt + 120);
      expect(d.startedAt!).toBeGreaterThanOrEqual(d.runAt);
      expect(startedAt.get('delayed')!).toBeGreaterThanOrEqual(d.createdAt + 120);
      expect((await dt.getTask(runAt.rootTaskId)).runAt).toBe(at);
      expect(startedAt.get('runAt')!).toBeGreaterThanOrEqual(at);
      const child = (await dt.tree(parent.id)).tasks.find((t) => t.payload === 'child')!;
      expect(child.startedAt! - child.createdAt).toBeGreaterThanOrEqual(80);
      // A task not yet due waits visibly, queued, without blocking others.
      const f = await dt.getTask(far.rootTaskId);
      expect(f).toMatchObject({ state: 'queued', startedAt: null });
      expect(f.runAt).toBeGreaterThanOrEqual(f.createdAt + 60_000);
      expect(startedAt.has('far')).toBe(false);
    });

    it('a per-type concurrency limit is never exceeded', async () => {
      const dt = await h.open();
      const meter = new ConcurrencyMeter();
      dt.handle('render', () => meter.run('render', () => sleep(10)), { concurrency: 2 });
      dt.handle('other', () => meter.run('other', () => sleep(10)));
      dt.handle('root', async (ctx) => {
        await ctx.spawnMany([
          ...Array.from({ length: 10 }, () => ({ type: 'render', payload: null })),
          ...Array.from({ length: 6 }, () => ({ type: 'other', payload: null })),
        ]);
      });
      await dt.start({ concurrency: 16 });
      expect((await settled(dt, await dt.submit('root', null))).state).toBe('succeeded');
      expect(meter.maxOf('render')).toBe(2);
      expect(meter.maxOf('other')).toBeGreaterThan(2); // unlimited types are not held back
    });

    it('a per-key concurrency limit is never exceeded', async () => {
      const dt = await h.open();
      const meter = new ConcurrencyMeter();
      dt.handle('fetch', (_ctx, host) => meter.run(host as string, () => sleep(10)));
      dt.handle('root', async (ctx) => {
        const spec = (host: string, limit: number) => ({
          type: 'fetch',
          payload: host,
          options: { concurrency: { key: host, limit } },
        });
        await ctx.spawnMany([
          ...Array.from({ length: 8 }, () => spec('host-a', 2)),
          ...Array.from({ length: 5 }, () => spec('host-b', 1)),
          ...Array.from({ length: 5 }, () => ({ type: 'fetch', payload: 'free' })),
        ]);
      });
      await dt.start({ concurrency: 20 });
      expect((await settled(dt, await dt.submit('root', null))).state).toBe('succeeded');
      expect(meter.maxOf('host-a')).toBe(2);
      expect(meter.maxOf('host-b')).toBe(1);
      expect(meter.maxOf('free')).toBeGreaterThan(2);
    });

    it('a type registered again without a concurrency limit has none', async () => {
      const dt = await h.open();
      await dt.port.configureTypes(dt.namespace, [{ type: 'render', concurrency: 1 }]);
      // Another process registers the type again, without a limit: the last registration holds.
      const peer = await h.peer(dt);
      const three = h.gate();
      const release = h.gate();
      let running = 0;
      peer.handle('render', async () => {
        if (++running === 3) three.resolve();
        await release.promise;
        return null;
      });
      await peer.start({ concurrency: 8 });
      const jobs = await dt.submitMany(Array.from({ length: 3 }, () => ({ type: 'render', payload: null })));
      await within(three.promise, 5000, 'three renders running at once');
      release.resolve();
      for (const j of jobs) expect((await settled(dt, j)).state).toBe('succeeded');
    });

    h.inProcessIt(
      'the slot of a concurrency key is deleted once no unsettled task carries the key',
      async () => {
        const dt = await h.open();
        dt.handle('fetch', (_ctx, host) => host);
        const keys = Array.from({ length: 10 }, (_, i) => `host-${i}`);
        const slotsOf = (names: string[]) =>
          dt.store.transaction((tx) =>
            tx.getSlots(
              dt.namespace,
              names.map((k) => `key:${k}`),
            ),
          );
        const done = await dt.submitMany(
          keys.map((k) => ({ type: 'fetch', payload: k, options: { concurrency: { key: k, limit: 1 } } })),
        );
        const waiting = await dt.submit('later', null, { concurrency: { key: 'kept', limit: 1 } });
        expect(await slotsOf(keys)).toHaveLength(10);
        await dt.start();
        for (const j of done) expect((await settled(dt, j)).state).toBe('succeeded');
        await dt.engine.expireLeases(); // the lease sweeper
        expect(await slotsOf(keys)).toEqual([]);
        // A key a queued task still carries keeps its slot, and its limit.
        expect(await slotsOf(['kept'])).toMatchObject([{ key: 'key:kept', max: 1, running: 0 }]);
        expect((await dt.getTask(waiting.rootTaskId)).state).toBe('queued');
        // A key used again gets its slot again.
        const again = await dt.submit('fetch', 'host-0', { concurrency: { key: 'host-0', limit: 1 } });
        expect(await again.result()).toBe('host-0');
      },
    );

    it('concurrency limits hold across workers', async () => {
      const dt = await h.open();
      const peer = await h.peer(dt);
      const meter = new ConcurrencyMeter();
      for (const w of [dt, peer]) {
        w.handle('render', () => meter.run('render', () => sleep(10)), { concurrency: 2 });
        w.handle('fetch', () => meter.run('fetch', () => sleep(10)));
      }
      await dt.start({ pollMs: 5 });
      await peer.start({ pollMs: 5 });
      const jobs = await dt.submitMany([
        ...Array.from({ length: 12 }, () => ({ type: 'render', payload: null })),
        ...Array.from({ length: 8 }, () => ({
          type: 'fetch',
          payload: null,
          options: { concurrency: { key: 'host', limit: 1 } },
        })),
      ]);
      for (const j of jobs) expect((await settled(dt, j)).state).toBe('succeeded');
      expect(meter.maxOf('render')).toBeLessThanOrEqual(2);
      expect(meter.maxOf('fetch')).toBe(1);
    });

    it('a waiting parent does not hold its slot of a type limit', async () => {
      const dt = await h.open();
      const meter = new ConcurrencyMeter();
      dt.handle(
        'node',
        (ctx, depth) =>
          meter.run('node', async () => {
            const d = depth as number;
            if (d > 0)
              await ctx.waitAll(
                await ctx.spawnMany([
                  { type: 'node', payload: d - 1 },
                  { type: 'node', payload: d - 1 },
                ]),
              );
            return d;
          }),
        { concurrency: 1 },
      );
      await dt.start();
      const info = await settled(dt, await dt.submit('node', 2));
      expect(info).toMatchObject({ state: 'succeeded', total: 7 });
      expect(meter.maxOf('node')).toBe(1);
    });

    h.inProcessIt('failures, timeouts, cancellations and expired leases give their slots back', async () => {
      const dt = await h.open({ leaseMs: 200 });
      dt.handle(
        'limited',
        async (ctx, what) => {
          if (what === 'fail') throw new NonRetryableError('fail');
          if (what === 'hang') {
            await h.hold(ctx.signal);
            throw new Error('aborted');
          }
          return what;
        },
        { concurrency: 1, maxAttempts: 1 },
      );
      // A worker that claimed a task and died holds the only slot until its lease expires.
      const crashed = await dt.submit('limited', 'crashed');
      expect(await dt.engine.claim(dt.namespace, ['limited'], 1, 30)).toHaveLength(1);
      await dt.start();
      expect((await settled(dt, crashed)).error).toMatchObject({ name: 'LeaseExpired' });

      expect((await settled(dt, await dt.submit('limited', 'fail'))).state).toBe('failed');
      const timedOut = await dt.submit('limited', 'hang', { timeoutMs: 30 });
      expect((await settled(dt, timedOut)).error).toMatchObject({ name: 'TimeoutError' });

      const cancelled = await dt.submit('limited', 'hang');
      await untilState(dt, cancelled.rootTaskId, 'running');
      await dt.cancelJob(cancelled.id);
      expect((await settled(dt, cancelled)).state).toBe('cancelled');

      const last = await dt.submit('limited', 'still runs');
      expect(await last.result()).toBe('still runs');
    });
  });
}
