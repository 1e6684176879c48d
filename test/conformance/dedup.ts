/**
 * 11. Dedup keys are unique within a job: spawning a second task with a key already
 * taken returns the first task (from whichever parent spawned it), so a crawler fetches
 * each URL once; other jobs have their own keys.
 */
import { describe, expect, it } from 'vitest';
import type { TaskHandle } from '../../src/index.js';
import { allTasks, type Harness, settled } from './harness.js';

/** The longest spawn key, dedup key or `after` reference (MAX_KEY_LENGTH in src/engine/limits.ts). */
const MAX_KEY = 8192;

/** A real-looking URL of exactly `n` characters. */
function longUrl(n: number): string {
  const head = 'https://example.com/search?q=';
  return head + 'a%20b'.repeat(n).slice(0, n - head.length);
}

/** A small web with cycles and shared links. */
const WEB: Record<string, string[]> = {
  '/': ['/a', '/b', '/c'],
  '/a': ['/', '/b', '/d'],
  '/b': ['/c', '/d', '/a'],
  '/c': ['/d', '/', '/e'],
  '/d': ['/', '/a', '/e'],
  '/e': ['/b'],
};

export function dedupTests(h: Harness): void {
  describe('dedup keys', () => {
    it('crawler: every URL is fetched once, however many pages link to it', async () => {
      const dt = await h.open();
      const fetched = new Map<string, number>();
      dt.handle('crawl', async (ctx, seed) => {
        await ctx.spawn('fetch', seed, { dedupKey: seed as string });
        return 'crawled';
      });
      dt.handle('fetch', async (ctx, url) => {
        const u = url as string;
        fetched.set(u, (fetched.get(u) ?? 0) + 1);
        await ctx.spawnMany(
          WEB[u]!.map((link) => ({ type: 'fetch', payload: link, options: { dedupKey: link } })),
        );
        return u;
      });
      await dt.start();
      const job = await dt.submit('crawl', '/');
      const info = await settled(dt, job);
      expect(info.state).toBe('succeeded');
      const urls = Object.keys(WEB).sort();
      expect([...fetched.keys()].sort()).toEqual(urls);
      expect([...fetched.values()].every((n) => n === 1)).toBe(true);
      const fetches = (await allTasks(dt, job.id)).filter((t) => t.type === 'fetch');
      expect(fetches.map((t) => t.dedupKey).sort()).toEqual(urls);
      expect(info.total).toBe(1 + urls.length);
    });

    it('the same dedup key returns the first task, within one call and from another parent', async () => {
      const dt = await h.open();
      const got: { batch: TaskHandle[]; byMid: TaskHandle[] } = { batch: [], byMid: [] };
      const midIds: string[] = [];
      dt.handle('root', async (ctx) => {
        const batch = await ctx.spawnMany([
          { type: 'leaf', payload: 1, options: { dedupKey: 'k' } },
          { type: 'leaf', payload: 2, options: { dedupKey: 'k' } },
        ]);
        if (got.batch.length === 0) got.batch = batch; // the first run's (a re-run gets created: false)
        const mids = await ctx.spawnMany([
          { type: 'mid', payload: null },
          { type: 'mid', payload: null },
        ]);
        midIds.push(...mids.map((m) => m.id));
        await ctx.waitAll(mids);
        return 'ok';
      });
      dt.handle('mid', async (ctx) => {
        got.byMid.push(await ctx.spawn('leaf', 'shared', { dedupKey: 'shared' }));
      });
      dt.handle('leaf', (_ctx, p) => p);
      await dt.start();
      const job = await dt.submit('root', null);
      expect(await job.result()).toBe('ok');

      const [k1, k2] = got.batch;
      expect(k1).toMatchObject({ created: true });
      expect(k2).toMatchObject({ id: k1!.id, created: false });
      const [first, second] = got.byMid;
      expect(first!.created).toBe(true);
      expect(second).toMatchObject({ id: first!.id, created: false, parentId: first!.parentId });
      expect(midIds).toContain(first!.parentId);

      const leaves = (await allTasks(dt, job.id)).filter((t) => t.type === 'leaf');
      expect(leaves.map((t) => t.dedupKey).sort()).toEqual(['k', 'shared']);
      expect(leaves.find((t) => t.dedupKey === 'k')!.payload).toBe(1);
    });

    it('dedup keys are unique within a job, not across jobs', async () => {
      const dt = await h.open();
      dt.handle('root', async (ctx) => {
        const a = await ctx.spawn('leaf', null, { dedupKey: 'same' });
        const b = await ctx.spawn('leaf', null, { dedupKey: 'same' });
        return [a.created, b.created, a.id === b.id];
      });
      dt.handle('leaf', () => null);
      await dt.start();
      const one = await dt.submit('root', null);
      const two = await dt.submit('root', null);
      expect(await one.result()).toEqual([true, false, true]);
      expect(await two.result()).toEqual([true, false, true]);
      expect((await dt.getJob(one.id)).total).toBe(2);
      expect((await dt.getJob(two.id)).total).toBe(2);
    });

    it('long keys such as real URLs (2,048 characters, and the limit in multi-byte text) work as dedup and spawn keys', async () => {
      const dt = await h.open();
      const url = longUrl(2048);
      // Varied CJK text, 3 bytes a character in UTF-8, that compression cannot shrink: far past
      // what a plain B-tree index entry can hold (about 2,700 bytes).
      let seed = 1;
      const wide = Array.from({ length: MAX_KEY }, () => {
        seed = (seed * 48271) % 2147483647;
        return String.fromCharCode(0x4e00 + (seed % 0x5000));
      }).join('');
      dt.handle('root', async (ctx) => {
        const out = [];
        for (const k of [url, wide]) {
          const a = await ctx.spawn('leaf', 1, { dedupKey: k });
          const b = await ctx.spawn('leaf', 2, { dedupKey: k });
          const c = await ctx.spawn('leaf', 3, { key: k });
          const d = await ctx.spawn('leaf', 4, { key: k });
          out.push([a.created, b.id === a.id, c.created, d.id === c.id, c.key === k]);
        }
        return out;
      });
      dt.handle('leaf', (_ctx, p) => p);
      await dt.start();
      const job = await dt.submit('root', null, { maxAttempts: 1 });
      const info = await settled(dt, job);
      expect(info.error).toBeNull();
      expect(info.result).toEqual([
        [true, true, true, true, true],
        [true, true, true, true, true],
      ]);
      expect(info.total).toBe(5);
      const leaves = (await allTasks(dt, job.id)).filter((t) => t.type === 'leaf');
      expect(leaves.map((t) => t.dedupKey).filter((k) => k !== null)).toEqual([url, wide]);
      expect(leaves.map((t) => t.key).filter((k) => !k!.startsWith('#'))).toEqual([url, wide]);
    });

    it('a key over the limit is refused with the same message in-process and through a server', async () => {
      const dt = await h.open();
      const tooLong = 'k'.repeat(MAX_KEY + 1);
      dt.handle('root', async (ctx) => {
        const refused = (options: object) =>
          ctx.spawn('leaf', null, options).then(
            () => 'spawned',
            (e: Error) => `${e.name}: ${e.message}`,
          );
        return [
          await refused({ dedupKey: tooLong }),
          await refused({ key: tooLong }),
          await refused({ after: [tooLong] }),
          await refused({ concurrency: { key: 'c'.repeat(201), limit: 1 } }),
          await ctx
            .step('s'.repeat(1001), () => 'ran')
            .then(
              (v) => v,
              (e: Error) => `${e.name}: ${e.message}`,
            ),
        ];
      });
      await dt.start();
      const job = await dt.submit('root', null, { maxAttempts: 1 });
      const info = await settled(dt, job);
      expect(info.error).toBeNull();
      const rule = `must be a non-empty string of at most ${MAX_KEY} characters without NUL, got ${MAX_KEY + 1} characters`;
      expect(info.result).toEqual([
        `ValidationError: children[0].options.dedupKey ${rule}`,
        `ValidationError: children[0].options.key ${rule}`,
        `ValidationError: children[0].options.after[0] ${rule}`,
        'ValidationError: children[0].options.concurrency.key must be a non-empty string of at most 200 characters without NUL, got 201 characters',
        'ValidationError: step name must be a non-empty string of at most 1000 characters without NUL, got 1001 characters',
      ]);
      await expect(dt.submit('root', null, { priority: 2 ** 31 })).rejects.toThrow(
        'jobs[0].options.priority must be an integer from -2147483648 to 2147483647, got 2147483648',
      );
      await expect(dt.submit('root', null, { jobId: 'job-1' })).rejects.toThrow(
        'jobs[0].options.jobId must be a UUID (e.g. 0190f5c2-7b1e-7cc0-8f3e-1d2b3c4d5e6f), got "job-1"',
      );
      await expect(dt.submit('root', null, { maxAttempts: 1001 })).rejects.toThrow(
        'jobs[0].options.maxAttempts must be an integer from 1 to 1000, got 1001',
      );
      expect(info.total).toBe(1);
    });
  });
}
