/**
 * 15. Task types: a worker claims only the types it handles; tasks of a type that no
 * live worker serves wait, queued, and `queuedTypes()` shows them as unserved.
 */
import { describe, expect, it } from 'vitest';
import { type Harness, settled } from './harness.js';

export function taskTypeTests(h: Harness): void {
  describe('task types', () => {
    it('a task of a type no worker serves stays queued, visibly unserved, until a worker serves it', async () => {
      const dt = await h.open();
      dt.handle('served', () => 'served');
      await dt.start();
      const done = await dt.submit('served', null);
      const later = await dt.submit('served', null, { delayMs: 60_000 });
      const orphan = await dt.submit('orphan', { x: 1 });
      expect(await done.result()).toBe('served');
      expect(await dt.getTask(orphan.rootTaskId)).toMatchObject({ state: 'queued', startedAt: null });
      const byType = (await dt.queuedTypes()).sort((a, b) => a.type.localeCompare(b.type));
      expect(byType).toEqual([
        { type: 'orphan', queued: 1, served: false },
        { type: 'served', queued: 1, served: true },
      ]);

      const other = await h.peer(dt);
      other.handle('orphan', (_ctx, p) => p);
      await other.start({ pollMs: 20 });
      expect((await settled(other, orphan)).result).toEqual({ x: 1 });
      expect(await dt.queuedTypes()).toEqual([{ type: 'served', queued: 1, served: true }]);

      await dt.stop();
      await other.stop();
      expect(await dt.queuedTypes()).toEqual([{ type: 'served', queued: 1, served: false }]);
      expect((await dt.getTask(later.rootTaskId)).state).toBe('queued');
    });

    h.inProcessIt('a claim returns only tasks of the types asked for', async () => {
      const dt = await h.open();
      const jobs = await dt.submitMany([
        { type: 'a', payload: 1 },
        { type: 'b', payload: 2 },
        { type: 'a', payload: 3 },
        { type: 'c', payload: 4 },
      ]);
      const claimed = await dt.engine.claim(dt.namespace, ['a', 'c'], 10);
      expect(claimed.map((c) => c.row.type).sort()).toEqual(['a', 'a', 'c']);
      expect((await dt.getTask(jobs[1]!.rootTaskId)).state).toBe('queued');
    });
  });
}
