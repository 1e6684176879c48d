/**
 * The protocol scenarios of spec/scenarios, each run by the TypeScript remote client against a
 * real `dynatask server` process, on SQLite and on PostgreSQL (the runner: fixtures/spec.ts; the
 * format: spec/README.md). The Python SDK runs the same files (sdk/python/tests/test_spec.py).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ServerProcess, startServerProcess } from './fixtures/cli-server.js';
import { loadScenarios, runScenario, scenarioValidator } from './fixtures/spec.js';
import { Schemas } from './postgres/server.js';

const scenarios = loadScenarios();
/** The server's lease: its sweeper looks for expired leases every half of it. */
const SERVER_ARGS = ['--lease-ms', '1000', '--grace-ms', '2000'];

it('spec/scenarios holds the scenarios the issue names', () => {
  expect(scenarios.map((s) => s.name)).toEqual(
    expect.arrayContaining([
      'spawn-and-resume',
      'wait-shapes',
      'retries-backoff',
      'stale-after-lease-expiry',
      'cancel-running-task',
      'dedup-keys',
      'dependencies',
      'steps-across-attempts',
      'progress-events',
      'lost-answers',
    ]),
  );
});

it('the schema refuses what is not a scenario, so a typo cannot make a scenario check nothing', () => {
  const { validate } = scenarioValidator();
  const good = scenarios.find((s) => s.name === 'spawn-and-resume')!;
  expect(validate(good)).toBe(true);
  const bad: unknown[] = [
    { ...good, extra: true },
    { ...good, handlers: { parent: [{ do: 'teleport' }] } },
    { ...good, handlers: { parent: [{ do: 'spawn' }] } },
    { ...good, handlers: { parent: [{ do: 'step', name: 's', value: 1, onAttempt: [1] }] } },
    { ...good, handlers: { parent: [{ do: 'spawn', type: 'x', options: { key: '#1' } }] } },
    { ...good, expect: { ...good.expect, tasks: { 'root/#0': { stat: 'succeeded' } } } },
    { ...good, expect: { ...good.expect, tasks: { nowhere: {} } } },
    { ...good, expect: { ...good.expect, runz: {} } },
    { ...good, interventions: [{ do: 'cancelTask', when: { started: 'root' }, after: 1 }] },
  ];
  for (const b of bad) expect(validate(b), JSON.stringify(b).slice(0, 300)).toBe(false);
});

for (const backend of ['sqlite', 'postgres'] as const) {
  describe(`protocol scenarios, TypeScript remote client, ${backend}`, () => {
    let server: ServerProcess;
    let dir: string | undefined;
    let schemas: Schemas | undefined;
    beforeAll(async () => {
      let database: string;
      if (backend === 'sqlite') {
        dir = mkdtempSync(join(tmpdir(), 'dynatask-spec-'));
        database = join(dir, 'spec.db');
      } else {
        schemas = new Schemas();
        database = schemas.freshUrl('spec');
      }
      server = await startServerProcess(database, { args: SERVER_ARGS });
    });
    afterAll(async () => {
      if (server && server.child.exitCode === null) {
        server.child.kill('SIGTERM');
        await server.exited;
      }
      await schemas?.dropAll();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    for (const s of scenarios) {
      it(s.name, async () => {
        const { actual, expected, problems } = await runScenario(s, { url: server.url });
        expect(problems).toEqual([]);
        expect(actual).toEqual(expected);
      });
    }
  });
}
