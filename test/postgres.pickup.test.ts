/**
 * test/crash.pickup.test.ts on PostgreSQL: worker processes on one schema, one killed with
 * SIGKILL while the queue is full; its task runs again within lease + 5 s (fixtures/pickup.ts).
 */
import { afterAll, afterEach, describe, it } from 'vitest';
import { killToPickup } from './fixtures/pickup.js';
import { Schemas } from './postgres/server.js';

const schemas = new Schemas();
afterAll(() => schemas.dropAll());

describe('postgres: kill -9 to pick-up while the queue is full', () => {
  const cleanup: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  it('the killed worker’s task is picked up within lease + 5 s, ahead of the tasks queued meanwhile', async () => {
    await killToPickup(schemas.freshUrl('pickup'), cleanup, 'postgres');
  }, 120_000);
});
