/**
 * The in-process worker's idle behaviour: a due task held back by a concurrency limit is
 * looked at again now and then (a freed slot wakes the worker), not claimed in a busy loop.
 */
import { describe, expect, it } from 'vitest';
import { open } from '../src/index.js';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js';
import { deferred, sleep, within } from './conformance/harness.js';

describe('worker', () => {
  it('does not spin on a due task that a concurrency limit holds back, and runs it once the slot frees', async () => {
    const store = new SqliteStore({ path: ':memory:' });
    let transactions = 0;
    const transaction = store.transaction.bind(store);
    store.transaction = (fn) => {
      transactions++;
      return transaction(fn);
    };
    const dt = await open({ store });
    const first = deferred();
    const release = deferred();
    let runs = 0;
    dt.handle(
      'limited',
      async () => {
        if (++runs === 1) {
          first.resolve();
          await release.promise;
        }
        return runs;
      },
      { concurrency: 1 },
    );
    await dt.start({ pollMs: 60_000 });
    const a = await dt.submit('limited', null);
    const b = await dt.submit('limited', null);
    await within(first.promise, 5000, 'the first task to start');
    const before = transactions;
    await sleep(500); // real time passing is what is measured: how many claims it makes
    const idle = transactions - before;
    release.resolve();
    expect((await within(b.result(), 5000, 'the held-back task')) as number).toBe(2);
    expect(await a.result()).toBe(1);
    // A busy loop would make hundreds of claims in 500 ms; one look every 200 ms makes 2 or 3.
    expect(idle).toBeLessThanOrEqual(5);
    await dt.close();
  });
});
