/**
 * The store conformance suite: the semantics of jobs and task trees (issue 2), checked
 * through the public API only, so that every store (SQLite now, PostgreSQL next) runs the
 * same tests. A store's test file calls `runConformance` with a factory of instances.
 *
 * Each topic lives in its own file; `harness.ts` has the shared helpers.
 *
 * A target opens instances on a new, empty database each time (tests count jobs and
 * queued types), and peers on the same database as an instance (a second process):
 *
 *   runConformance('postgres', {
 *     open: (opts) => open({ database: freshSchemaUrl(), ...opts }),
 *     openPeer: (dt, opts) => open({ database: urlOf(dt), ...opts }),
 *   });
 *
 * Options are `leaseMs` (short leases for the lease tests) and `namespace`.
 */
import { afterEach, describe } from 'vitest';
import { cancellationTests } from './cancellation.js';
import { completionTests } from './completion.js';
import { dedupTests } from './dedup.js';
import { dependencyTests } from './dependencies.js';
import { eventTests } from './events.js';
import { failureTests } from './failures.js';
import { type ConformanceTarget, Harness } from './harness.js';
import { jobTests } from './jobs.js';
import { leaseTests } from './leases.js';
import { operationTests } from './operations.js';
import { retentionTests } from './retention.js';
import { retryTests } from './retries.js';
import { schedulingTests } from './scheduling.js';
import { spawningTests } from './spawning.js';
import { timeoutTests } from './timeouts.js';
import { taskTypeTests } from './types.js';
import { waitTests } from './waits.js';

export type { ConformanceTarget, TargetOptions } from './harness.js';

/** Registers the whole suite for one store under `describe(name)`. */
export function runConformance(name: string, target: ConformanceTarget): void {
  describe(`store conformance: ${name}`, { timeout: 20_000 }, () => {
    const h = new Harness(target);
    afterEach(() => h.cleanup());
    jobTests(h); // 1
    spawningTests(h); // 2
    waitTests(h); // 3
    completionTests(h); // 4
    failureTests(h); // 5
    dependencyTests(h); // 6
    retryTests(h); // 7
    if (h.inProcess) leaseTests(h); // 8: through dt.engine
    timeoutTests(h); // 9
    cancellationTests(h); // 10
    dedupTests(h); // 11
    schedulingTests(h); // 12
    eventTests(h); // 13
    if (h.inProcess) retentionTests(h); // 14: purge runs where the database is
    taskTypeTests(h); // 15
    if (h.inProcess) operationTests(h); // 16: through dt.engine
  });
}
