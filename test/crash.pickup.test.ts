/**
 * A task whose worker is killed (SIGKILL) keeps its place in the queue: it runs again once its
 * lease has expired and a sweeper has seen it, not after the tasks queued meanwhile. Worker
 * processes on one SQLite file (test/fixtures/pickup-worker.ts); the queue stays full for
 * well past the lease throughout.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { open } from '../src/index.js';
import { pollUntil } from './conformance/harness.js';
import { ChildHandle, type Message } from './fixtures/child.js';
import type { PickupConfig } from './fixtures/pickup-worker.js';

const WORKER = fileURLToPath(new URL('./fixtures/pickup-worker.ts', import.meta.url));
const LEASE_MS = 3000;
/** 80 tasks of 300 ms on 2 slots: 12 s of queue, four times the lease. */
const QUEUED = 80;
const WORK_MS = 300;

describe('crash: kill -9 to pick-up while the queue is full', () => {
  const cleanup: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  function spawnWorker(config: PickupConfig): ChildHandle {
    const w = new ChildHandle(WORKER, config, 'worker');
    cleanup.push(async () => {
      w.kill('SIGKILL');
      await w.exited;
    });
    return w;
  }

  it('the killed worker’s task is picked up within lease + 5 s, ahead of the tasks queued meanwhile', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'dynatask-pickup-'));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const database = join(dir, 'dynatask.db');
    const dt = await open({ database });
    cleanup.push(() => dt.close());

    const lost = await dt.submit('render', { ms: WORK_MS });
    const victim = spawnWorker({ database, leaseMs: LEASE_MS, concurrency: 1, hang: true });
    const { taskId } = await victim.next<Message & { taskId: string }>('hanging');
    expect(taskId).toBe(lost.rootTaskId);
    // Queued while the victim holds its task.
    const rest = await dt.submitMany(
      Array.from({ length: QUEUED }, () => ({ type: 'render', payload: { ms: WORK_MS } })),
    );
    const survivor = spawnWorker({ database, leaseMs: LEASE_MS, concurrency: 2 });
    await survivor.next('ready');

    victim.kill('SIGKILL');
    const killedAt = Date.now();
    expect((await victim.exited).signal).toBe('SIGKILL');

    const picked = await pollUntil(
      async () => {
        const t = await dt.getTask(taskId);
        return t.attempt >= 2 && t.state !== 'queued' ? t : undefined;
      },
      'the lost task to run again',
      60_000,
      20,
    );
    const pickupMs = picked.startedAt! - killedAt;
    const stillQueued = (await Promise.all(rest.map((j) => dt.getTask(j.rootTaskId)))).filter(
      (t) => t.state === 'queued',
    ).length;
    console.log(
      `kill -9 to pick-up: ${pickupMs} ms (lease ${LEASE_MS} ms); ${stillQueued} tasks still queued`,
    );
    expect(stillQueued).toBeGreaterThan(0); // the queue was still full
    expect(pickupMs).toBeLessThanOrEqual(LEASE_MS + 5000);
    expect(picked.attempts?.map((a) => a.error.name)).toEqual(['LeaseExpired']);
  }, 120_000);
});
