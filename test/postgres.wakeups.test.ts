/**
 * Cross-process wake-ups on Postgres: a transaction that makes tasks ready notifies (on commit
 * only) every other store on the schema, whose workers claim at once instead of waiting for
 * their slow poll. Two stores stand in for two processes.
 */
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { open } from '../src/index.js';
import { PostgresStore } from '../src/store/postgres/postgres-store.js';
import type { ReadyNotice } from '../src/store/store.js';
import { type Deferred, deferred, pollUntil, sleep, within } from './conformance/harness.js';
import { Schemas } from './postgres/server.js';

const schemas = new Schemas();
afterAll(() => schemas.dropAll());

/** The pid of the LISTEN connection of a schema, once it listens. */
const listenerPid = (schema: string) =>
  pollUntil(
    () =>
      schemas.withClient(
        async (c) =>
          (
            await c.query<{ pid: number }>(
              `SELECT pid FROM pg_stat_activity
                WHERE application_name = 'dynatask listener' AND state = 'idle' AND query LIKE $1`,
              [`LISTEN "dynatask_ready.${schema}"%`],
            )
          ).rows[0]?.pid,
      ),
    'the LISTEN connection',
  );

/** A queue of the notices a store receives. */
function notices(store: PostgresStore) {
  const queue: ReadyNotice[] = [];
  let waiter: (() => void) | undefined;
  const unsubscribe = store.onReady((n) => {
    queue.push(n);
    waiter?.();
  });
  const next = async (): Promise<ReadyNotice> => {
    while (!queue.length) await within(new Promise<void>((r) => (waiter = r)), 5000, 'a notice');
    return queue.shift()!;
  };
  return { next, unsubscribe };
}

describe('postgres: wake-ups across processes', () => {
  it('a worker of another instance starts a submitted task at once, long before its 60 s poll', async () => {
    const schema = schemas.fresh('wake');
    const url = `${schemas.url}${schemas.url.includes('?') ? '&' : '?'}schema=${schema}`;
    const submitter = await open({ database: url });
    const worker = await open({ database: url });
    try {
      const started = new Map<string, Deferred>();
      worker.handle('ping', async (ctx) => {
        started.get(ctx.task.payload as string)?.resolve();
        return null;
      });
      for (const k of ['first', 'second']) started.set(k, deferred());
      await worker.start({ pollMs: 60_000 });
      await listenerPid(schema);
      // The first job lets the worker's start-up claims go by: once it has settled, the worker
      // has claimed (in the completing transaction) and gone to sleep for 60 s.
      await (await submitter.submit('ping', 'first')).result();
      const t0 = performance.now();
      await submitter.submit('ping', 'second');
      await within(started.get('second')!.promise, 5000, 'the second handler to start');
      const ms = performance.now() - t0;
      console.log(`cross-process wake-up: submit to handler start in ${ms.toFixed(1)} ms`);
      expect(ms).toBeLessThan(2000);
    } finally {
      await worker.close();
      await submitter.close();
    }
  });

  it('notices are sent on commit only, in commit order, and not echoed to their sender', async () => {
    const url = schemas.freshUrl('wake');
    const a = new PostgresStore({ url });
    const b = new PostgresStore({ url });
    await a.migrate();
    const atB = notices(b);
    const atA = notices(a);
    try {
      expect(await atB.next()).toBeNull(); // connected: anything may have become ready before
      expect(await atA.next()).toBeNull();
      await expect(
        a.transaction(async (tx) => {
          await tx.notifyReady!('ns', ['rolled_back']);
          throw new Error('roll back');
        }),
      ).rejects.toThrow('roll back');
      await a.transaction((tx) => tx.notifyReady!('ns', ['one', 'two']));
      await b.transaction((tx) => tx.notifyReady!('other', ['three']));
      expect(await atB.next()).toEqual({ namespace: 'ns', types: ['one', 'two'] });
      expect(await atA.next()).toEqual({ namespace: 'other', types: ['three'] });
    } finally {
      atA.unsubscribe();
      atB.unsubscribe();
      await a.close();
      await b.close();
    }
  });

  it('the LISTEN connection reconnects when it drops, and then wakes every worker once', async () => {
    const schema = schemas.fresh('wake');
    const url = `${schemas.url}${schemas.url.includes('?') ? '&' : '?'}schema=${schema}`;
    const a = new PostgresStore({ url });
    const b = new PostgresStore({ url });
    await a.migrate();
    const atB = notices(b);
    try {
      expect(await atB.next()).toBeNull();
      const pid = await listenerPid(schema);
      await schemas.withClient((c) => c.query('SELECT pg_terminate_backend($1)', [pid]));
      expect(await atB.next()).toBeNull(); // back, and notices may have been lost meanwhile
      await a.transaction((tx) => tx.notifyReady!('ns', ['after']));
      expect(await atB.next()).toEqual({ namespace: 'ns', types: ['after'] });
    } finally {
      atB.unsubscribe();
      await a.close();
      await b.close();
    }
  });

  it('an idle worker issues only a few statements per second', async () => {
    const dt = await open({ database: schemas.freshUrl('idle') });
    dt.handle('noop', async () => null);
    const query = pg.Client.prototype.query;
    let statements = 0;
    try {
      await dt.start(); // the default poll: 5 s on Postgres
      await sleep(200); // start-up claims
      pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
        statements++;
        return (query as (...a: unknown[]) => unknown).apply(this, args);
      } as typeof query;
      const seconds = 6;
      await sleep(seconds * 1000);
      const rate = statements / seconds;
      console.log(`idle worker: ${statements} statements in ${seconds} s (${rate.toFixed(1)}/s)`);
      expect(rate).toBeLessThan(5);
    } finally {
      pg.Client.prototype.query = query;
      await dt.close();
    }
  });
});
