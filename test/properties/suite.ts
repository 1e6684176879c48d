/**
 * The property suite: call `propertySuite(name, factory)` from a test file with a factory of
 * fresh databases (SQLite now, PostgreSQL next) and it registers the properties with vitest.
 *
 * Environment: FC_SEED and FC_PATH replay a reported counterexample; FC_NUM_RUNS overrides
 * the number of runs of every property (keep the defaults small: two shared cores).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type DatabaseFactory, type Disruption, runScenario, type Scenario } from './harness.js';
import { checkObservation } from './invariants.js';
import { anyTreeArb, describeTree, type NodeSpec, nonTrivialTreeArb, wideTreeArb } from './model.js';

function params(numRuns: number): fc.Parameters<[Scenario]> {
  const p: fc.Parameters<[Scenario]> = {
    numRuns: process.env.FC_NUM_RUNS ? Number(process.env.FC_NUM_RUNS) : numRuns,
    // A failure is shrunk for at most this long, so a broken engine fails the test in bounded time.
    plugins: [fc.interruptAfterTimeLimit(100_000) as fc.Plugin<[Scenario]>],
  };
  if (process.env.FC_SEED) p.seed = Number(process.env.FC_SEED);
  if (process.env.FC_PATH) p.path = process.env.FC_PATH;
  return p;
}

const shape = { maxDepth: 4, maxFanout: 4 };

const plainScenario: fc.Arbitrary<Scenario> = fc.record({
  jobs: fc.array(anyTreeArb(), { minLength: 1, maxLength: 2 }),
  disruption: fc.constant<Disruption>({ kind: 'none' }),
  pageSize: fc.integer({ min: 1, max: 8 }),
});

const where = fc.constantFrom<'start' | 'afterSpawn'>('start', 'afterSpawn');

const cancelScenario: fc.Arbitrary<Scenario> = fc.record({
  jobs: fc.array(fc.oneof(nonTrivialTreeArb(shape), wideTreeArb()), { minLength: 1, maxLength: 2 }),
  disruption: fc.record({
    kind: fc.constant('cancel' as const),
    atInvocation: fc.integer({ min: 1, max: 12 }),
    where,
    ancestorPick: fc.nat(6),
    extraTarget: fc.option(fc.nat(40), { nil: null }),
  }),
  pageSize: fc.integer({ min: 1, max: 8 }),
});

const crashScenario: fc.Arbitrary<Scenario> = fc.record({
  jobs: fc.array(fc.oneof(nonTrivialTreeArb(shape), wideTreeArb()), { minLength: 1, maxLength: 2 }),
  disruption: fc.record({
    kind: fc.constant('crash' as const),
    atInvocation: fc.integer({ min: 1, max: 12 }),
    where,
  }),
  pageSize: fc.integer({ min: 1, max: 8 }),
});

function describeScenario(s: Scenario): string {
  return [
    `disruption ${JSON.stringify(s.disruption)}, page size ${s.pageSize}`,
    ...s.jobs.map((t: NodeSpec, i) => `job ${i}:\n${describeTree(t)}`),
  ].join('\n');
}

/** How many runs of a property reached their disruption point (a property must not be vacuous). */
interface Tally {
  runs: number;
  disrupted: number;
}

async function holds(factory: DatabaseFactory, s: Scenario, tally: Tally): Promise<void> {
  const obs = await runScenario(factory, s);
  tally.runs++;
  if (obs.held) tally.disrupted++;
  const violations = checkObservation(obs);
  if (violations.length) {
    const ids = obs.runs.map((r) => `job ${r.index} = ${r.jobId}`).join(', ');
    throw new Error(
      `${violations.length} invariant violation(s):\n  ${violations.slice(0, 25).join('\n  ')}\n(${ids})\n${describeScenario(s)}`,
    );
  }
}

export function propertySuite(name: string, factory: DatabaseFactory): void {
  describe(`properties on ${name}`, () => {
    it('random trees with failures, retries, waits and ignored failures settle exactly and consistently', async () => {
      const tally = { runs: 0, disrupted: 0 };
      await fc.assert(
        fc.asyncProperty(plainScenario, (s) => holds(factory, s, tally)),
        params(80),
      );
    }, 180_000);

    it('cancelling subtrees or jobs mid-run cancels exactly them, and everything still settles', async () => {
      const tally = { runs: 0, disrupted: 0 };
      await fc.assert(
        fc.asyncProperty(cancelScenario, (s) => holds(factory, s, tally)),
        params(60),
      );
      // Most runs must actually be disrupted, or the property proves little.
      expect(
        tally.disrupted,
        `${tally.disrupted} of ${tally.runs} runs reached the disruption`,
      ).toBeGreaterThanOrEqual(Math.ceil(tally.runs / 2));
    }, 180_000);

    it('a crash mid-job loses nothing: a reopened instance recovers expired leases and finishes', async () => {
      const tally = { runs: 0, disrupted: 0 };
      await fc.assert(
        fc.asyncProperty(crashScenario, (s) => holds(factory, s, tally)),
        params(25),
      );
      // Most runs must actually be disrupted, or the property proves little.
      expect(
        tally.disrupted,
        `${tally.disrupted} of ${tally.runs} runs reached the disruption`,
      ).toBeGreaterThanOrEqual(Math.ceil(tally.runs / 2));
    }, 180_000);
  });
}
