/**
 * A task whose worker is killed (SIGKILL) keeps its place in the queue: it runs again once its
 * lease has expired and a sweeper has seen it, not after the tasks queued meanwhile. Worker
 * processes on one SQLite file (the scenario: fixtures/pickup.ts).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, it } from 'vitest';
import { killToPickup } from './fixtures/pickup.js';

describe('crash: kill -9 to pick-up while the queue is full', () => {
  const cleanup: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  it('the killed worker’s task is picked up within lease + 5 s, ahead of the tasks queued meanwhile', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'dynatask-pickup-'));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    await killToPickup(join(dir, 'dynatask.db'), cleanup, 'sqlite');
  }, 120_000);
});
