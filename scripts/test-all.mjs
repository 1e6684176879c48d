#!/usr/bin/env node
// `npm test`: every check and test suite, in order; stops at the first failure.
// The Postgres suites need a server: given in $DYNATASK_TEST_POSTGRES_URL (or a postgres://
// $DYNATASK_DATABASE_URL), or else a private one started here and always stopped at the end.
import { spawnSync } from 'node:child_process';
import { givenPostgresUrl, startPostgres } from './postgres.mjs';

const steps = [
  ['format and lint (biome)', 'npx', ['biome', 'check', '.']],
  ['type-check (tsc)', 'npx', ['tsc', '--noEmit', '-p', '.']],
  ['build (tsc)', 'npm', ['run', 'build']],
  ['TypeScript tests (vitest), on SQLite and PostgreSQL', 'npx', ['vitest', 'run'], { postgres: true }],
  // .venv made and the SDK installed if needed; ruff, mypy --strict, pytest on both stores.
  [
    'Python SDK (ruff, mypy, pytest), on SQLite and PostgreSQL',
    'node',
    ['scripts/python.mjs'],
    { postgres: true },
  ],
  // cargo fmt --check, clippy -D warnings, cargo test on both stores (deps cached outside the clone).
  [
    'Rust SDK (rustfmt, clippy, cargo test), on SQLite and PostgreSQL',
    'node',
    ['scripts/rust.mjs'],
    { postgres: true },
  ],
  // The served OpenAPI document against the server's behaviour (bounded: under 3 minutes).
  ['contract (Schemathesis against openapi.json)', 'node', ['scripts/schemathesis.mjs']],
];

let stopPostgres = () => {};
process.on('exit', () => stopPostgres());
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => process.exit(130));

for (const [name, cmd, args, opts = {}] of steps) {
  const env = { ...process.env };
  if (opts.postgres) {
    env.DYNATASK_TEST_POSTGRES_URL = givenPostgresUrl();
    if (!env.DYNATASK_TEST_POSTGRES_URL) {
      const pg = await startPostgres({ log: (m) => console.log(`\n== ${m}`) });
      stopPostgres = () => {
        stopPostgres = () => {};
        pg.stop();
      };
      env.DYNATASK_TEST_POSTGRES_URL = pg.url;
    }
  }
  console.log(`\n== ${name}: ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { stdio: 'inherit', env });
  if (r.status !== 0) {
    console.error(`\n== FAILED: ${name} (exit ${r.status ?? r.signal})`);
    process.exit(r.status || 1);
  }
}
stopPostgres();
console.log('\n== all checks passed');
