/**
 * 6. Dependencies between tasks of a job: `after` (ids, handles, or spawn keys of
 * siblings) keeps a task `blocked` until every dependency has succeeded; it is `skipped`,
 * with the reason, when one fails or is cancelled, unless spawned with `runRegardless`.
 */
import { describe, expect, it } from 'vitest';
import { NonRetryableError, type Outcome, type TaskHandle } from '../../src/index.js';
import { type Harness, settled, untilState } from './harness.js';

const stateOf = (outcomes: Outcome[]) => outcomes.map((o) => o.state);

export function dependencyTests(h: Harness): void {
  describe('dependencies', () => {
    it('after a sibling key: blocked until the dependency succeeds', async () => {
      const dt = await h.open();
      const release = h.gate();
      const spawned = h.gate<TaskHandle[]>();
      const buildStateSeenByTest: string[] = [];
      dt.handle('root', async (ctx) => {
        const hs = await ctx.spawnMany([
          { type: 'build', payload: null, options: { key: 'build' } },
          { type: 'test', payload: null, options: { key: 'test', after: ['build'] } },
        ]);
        spawned.resolve(hs);
        return ctx.waitAll(hs);
      });
      dt.handle('build', async () => {
        await release.promise;
        return 'built';
      });
      dt.handle('test', async (ctx) => {
        const [build] = await dt.tree(ctx.task.jobId).then((p) => p.tasks.filter((t) => t.type === 'build'));
        buildStateSeenByTest.push(build!.state);
        return 'tested';
      });
      await dt.start();
      const job = await dt.submit('root', null);
      const [build, test] = await spawned.promise;
      await untilState(dt, build!.id, 'running');
      expect((await dt.getTask(test!.id)).state).toBe('blocked');
      release.resolve();
      expect(await job.result()).toEqual(['built', 'tested']);
      expect(buildStateSeenByTest).toEqual(['succeeded']);
    });

    it('after ids and handles, including a dependency that already succeeded', async () => {
      const dt = await h.open();
      const order: string[] = [];
      dt.handle('root', async (ctx) => {
        const a = await ctx.spawn('step', 'a');
        const b = await ctx.spawn('step', 'b', { after: [a.id] });
        const c = await ctx.spawn('step', 'c', { after: [b] });
        await ctx.waitAll([a, b, c]);
        // a has succeeded by now: a new dependent of it is ready at once.
        const d = await ctx.spawn('step', 'd', { after: [a] });
        return ctx.waitAll([d]);
      });
      dt.handle('step', (_ctx, name) => {
        order.push(name as string);
        return name;
      });
      await dt.start();
      const job = await dt.submit('root', null);
      expect(await job.result()).toEqual(['d']);
      expect(order).toEqual(['a', 'b', 'c', 'd']);
    });

    it('after a sibling key spawned by an earlier spawn call', async () => {
      const dt = await h.open();
      const order: string[] = [];
      dt.handle('root', async (ctx) => {
        await ctx.spawn('step', 'first', { key: 'first' });
        const second = await ctx.spawn('step', 'second', { after: ['first'] });
        await ctx.waitAll();
        return second.key;
      });
      dt.handle('step', (_ctx, name) => {
        order.push(name as string);
      });
      await dt.start();
      const job = await dt.submit('root', null, { maxAttempts: 1 });
      const info = await settled(dt, job);
      expect(info.error).toBeNull();
      expect(info.state).toBe('succeeded');
      expect(order).toEqual(['first', 'second']);
    });

    it('the same dependency named twice (by key, by handle, twice in a list) counts once', async () => {
      const dt = await h.open();
      const release = h.gate();
      dt.handle('root', async (ctx) => {
        const [build] = await ctx.spawnMany([{ type: 'build', payload: null, options: { key: 'build' } }]);
        const suites = ['build', 'unit'];
        const hs = await ctx.spawnMany([
          { type: 'step', payload: 'unit', options: { key: 'unit', after: ['build', 'build'] } },
          { type: 'step', payload: 'e2e', options: { after: ['build', ...suites, build!, build!.id] } },
        ]);
        return ctx.waitAll([build!, ...hs]);
      });
      dt.handle('build', async () => {
        await release.promise; // the dependents are spawned while it runs: they are blocked
        return 'built';
      });
      dt.handle('step', (_ctx, name) => name);
      await dt.start();
      const job = await dt.submit('root', null);
      await untilState(dt, job.rootTaskId, 'waiting');
      release.resolve();
      expect((await settled(dt, job)).result).toEqual(['built', 'unit', 'e2e']);
    });

    it('a dependency cycle among the tasks of one spawn is refused, naming it; nothing is written', async () => {
      const dt = await h.open();
      dt.handle('root', async (ctx) => {
        const err = await ctx
          .spawnMany([
            { type: 'step', payload: null, options: { key: 'a', after: ['c'] } },
            { type: 'step', payload: null, options: { key: 'b', after: ['a'] } },
            { type: 'step', payload: null, options: { key: 'c', after: ['b'] } },
            { type: 'step', payload: null, options: { key: 'free' } },
          ])
          .catch((e: Error) => e);
        return [(err as Error).name, (err as Error).message];
      });
      dt.handle('step', () => 'ran');
      await dt.start();
      const job = await dt.submit('root', null);
      const info = await settled(dt, job);
      expect(info.result).toEqual([
        'ValidationError',
        expect.stringMatching(
          /^children\[\d\]\.after: a dependency cycle .*: (a|b|c) \(step\) → .* → \1 \(step\)/,
        ),
      ]);
      expect(info.total).toBe(1);
    });

    it('a dependency on the parent, an ancestor, or a task waiting for one is refused, naming it', async () => {
      const dt = await h.open();
      const seen = new Set<string>(); // the root's refusal again when it runs after its wait
      const refused = (e: Error) => {
        seen.add(`${e.name}: ${e.message}`);
        return null;
      };
      const lateSpawned = h.gate();
      dt.handle('root', async (ctx) => {
        const [mid] = await ctx.spawnMany([{ type: 'mid', payload: null, options: { key: 'mid' } }]);
        await ctx.spawn('cleanup', null, { after: [ctx.task.id] }).catch(refused);
        await ctx.spawn('late', null, { key: 'late', after: [mid!] });
        lateSpawned.resolve();
        await ctx.waitAll();
        return 'root done';
      });
      dt.handle('mid', async (ctx) => {
        await ctx.spawn('leaf', null, { after: [ctx.task.parentId!] }).catch(refused);
        // `late` depends on `mid`, which settles only after its children: a cycle through `late`.
        await lateSpawned.promise;
        const late = (await dt.tree(ctx.task.jobId)).tasks.find((t) => t.type === 'late')!;
        await ctx.spawn('leaf', null, { after: [late.id] }).catch(refused);
        return 'mid done';
      });
      dt.handle('late', () => 'late done');
      await dt.start();
      const job = await dt.submit('root', null);
      const info = await settled(dt, job);
      expect(info).toMatchObject({ state: 'succeeded', result: 'root done', total: 3 });
      const errors = [...seen];
      expect(errors).toHaveLength(3);
      expect(errors[0]).toMatch(
        new RegExp(
          `^ValidationError: children\\[0\\]\\.after: task ${job.rootTaskId} \\(root\\) is the parent of the new task`,
        ),
      );
      expect(errors[1]).toMatch(
        /^ValidationError: children\[0\]\.after: task .* \(root\) is an ancestor of the new task/,
      );
      expect(errors[2]).toMatch(
        /^ValidationError: children\[0\]\.after: task late \(late\) waits for the parent mid \(mid\) of the new task \(late \(late\) → mid \(mid\)\)/,
      );
    });

    it('a failed dependency skips its dependents, transitively, with the reason', async () => {
      const dt = await h.open();
      let ran = 0;
      let hs: TaskHandle[] = [];
      dt.handle('root', async (ctx) => {
        hs = await ctx.spawnMany([
          { type: 'bad', payload: null, options: { key: 'bad' } },
          { type: 'never', payload: null, options: { key: 'next', after: ['bad'] } },
          { type: 'never', payload: null, options: { after: ['next'] } },
        ]);
        return stateOf(await ctx.waitAllSettled(hs));
      });
      dt.handle('bad', () => {
        throw new NonRetryableError('tests failed');
      });
      dt.handle('never', () => {
        ran++;
      });
      await dt.start();
      const job = await dt.submit('root', null);
      expect(await job.result()).toEqual(['failed', 'skipped', 'skipped']);
      expect(ran).toBe(0);
      const next = await dt.getTask(hs[1]!.id);
      expect(next).toMatchObject({ state: 'skipped', startedAt: null });
      expect(next.error).toMatchObject({ name: 'DependencyFailed' });
      expect(next.error!.message).toContain(hs[0]!.id);
      expect((await dt.getTask(hs[2]!.id)).error!.message).toContain(hs[1]!.id);
    });

    it('a cancelled dependency skips its dependents', async () => {
      const dt = await h.open();
      const spawned = h.gate<TaskHandle[]>();
      dt.handle('root', async (ctx) => {
        const hs = await ctx.spawnMany([
          { type: 'unserved', payload: null, options: { key: 'u' } },
          { type: 'never', payload: null, options: { after: ['u'] } },
        ]);
        spawned.resolve(hs);
        return stateOf(await ctx.waitAllSettled(hs));
      });
      await dt.start();
      const job = await dt.submit('root', null);
      const [u, dependent] = await spawned.promise;
      await dt.cancelTask(u!.id);
      expect(await job.result()).toEqual(['cancelled', 'skipped']);
      const t = await dt.getTask(dependent!.id);
      expect(t.error).toMatchObject({ name: 'DependencyFailed' });
      expect(t.error!.message).toContain('cancelled');
    });

    it('runRegardless runs the dependent after its dependency failed', async () => {
      const dt = await h.open();
      const order: string[] = [];
      dt.handle('root', async (ctx) => {
        const hs = await ctx.spawnMany([
          { type: 'bad', payload: null, options: { key: 'bad' } },
          { type: 'cleanup', payload: null, options: { after: ['bad'], runRegardless: true } },
        ]);
        const early = stateOf(await ctx.waitAllSettled(hs));
        // A dependency that has already failed: skipped at once, or run regardless.
        const late = await ctx.spawnMany([
          { type: 'cleanup', payload: null, options: { after: [hs[0]!] } },
          { type: 'cleanup', payload: null, options: { after: [hs[0]!.id], runRegardless: true } },
        ]);
        return [...early, ...stateOf(await ctx.waitAllSettled(late))];
      });
      dt.handle('bad', () => {
        order.push('bad');
        throw new NonRetryableError('bad');
      });
      dt.handle('cleanup', () => {
        order.push('cleanup');
        return 'cleaned';
      });
      await dt.start();
      const job = await dt.submit('root', null);
      expect(await job.result()).toEqual(['failed', 'succeeded', 'skipped', 'succeeded']);
      expect(order).toEqual(['bad', 'cleanup', 'cleanup']);
    });

    it('CI pipeline: deploy runs only if the tests passed', async () => {
      const dt = await h.open();
      const ran: string[] = [];
      dt.handle('pipeline', async (ctx, p) => {
        const { testsPass } = p as { testsPass: boolean };
        const hs = await ctx.spawnMany([
          { type: 'build', payload: null, options: { key: 'build' } },
          { type: 'unit', payload: testsPass, options: { key: 'unit', after: ['build'] } },
          { type: 'lint', payload: null, options: { key: 'lint', after: ['build'] } },
          { type: 'deploy', payload: null, options: { key: 'deploy', after: ['unit', 'lint'] } },
          { type: 'notify', payload: null, options: { after: ['deploy'], runRegardless: true } },
        ]);
        const outcomes = await ctx.waitAllSettled(hs);
        return Object.fromEntries(hs.map((c, i) => [c.type, outcomes[i]!.state]));
      });
      for (const step of ['build', 'lint', 'deploy', 'notify'])
        dt.handle(step, (ctx) => {
          ran.push(`${ctx.task.jobId}:${step}`);
        });
      dt.handle('unit', (ctx, pass) => {
        ran.push(`${ctx.task.jobId}:unit`);
        if (!pass) throw new NonRetryableError('2 tests failed');
      });
      await dt.start();

      const green = await dt.submit('pipeline', { testsPass: true });
      expect(await green.result()).toEqual({
        build: 'succeeded',
        unit: 'succeeded',
        lint: 'succeeded',
        deploy: 'succeeded',
        notify: 'succeeded',
      });
      const greenSteps = ran.filter((r) => r.startsWith(green.id)).map((r) => r.split(':')[1]);
      expect(greenSteps[0]).toBe('build');
      expect(greenSteps.indexOf('deploy')).toBeGreaterThan(greenSteps.indexOf('unit'));
      expect(greenSteps.indexOf('deploy')).toBeGreaterThan(greenSteps.indexOf('lint'));
      expect(greenSteps.at(-1)).toBe('notify');

      const red = await dt.submit('pipeline', { testsPass: false });
      expect(await red.result()).toEqual({
        build: 'succeeded',
        unit: 'failed',
        lint: 'succeeded',
        deploy: 'skipped',
        notify: 'succeeded',
      });
      const redSteps = ran.filter((r) => r.startsWith(red.id)).map((r) => r.split(':')[1]);
      expect(redSteps).not.toContain('deploy');
      expect(redSteps).toContain('notify');
    });
  });
}
