#!/usr/bin/env node
// The Python SDK's checks (sdk/python): a virtual environment in .venv at the repository root
// (created if missing, ignored by git), the SDK installed into it with its test extras from
// the registry (again whenever sdk/python/pyproject.toml changes), then ruff (lint and format),
// mypy --strict and pytest. pytest runs every test on SQLite and on PostgreSQL: the server in
// $DYNATASK_TEST_POSTGRES_URL (`npm test` and `npm run test:python` start a private one).
// Arguments go to pytest: `npm run test:python -- -k sqlite -x`.
// A missing python3 (3.10 or newer; $DYNATASK_PYTHON names another) fails loudly: no skip.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const sdk = join(root, 'sdk', 'python');
const venv = join(root, '.venv');
const bin = join(venv, process.platform === 'win32' ? 'Scripts' : 'bin');
const started = Date.now();

function fail(message) {
  console.error(`\n== Python SDK: ${message}`);
  process.exit(1);
}

function run(what, cmd, args, opts = {}) {
  const t = Date.now();
  console.log(`\n== ${what}: ${[cmd, ...args].join(' ')}`);
  const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: sdk, ...opts });
  if (r.error) fail(`${what}: cannot run ${cmd}: ${r.error.message}`);
  if (r.status !== 0) fail(`${what} failed (exit ${r.status ?? r.signal})`);
  console.log(`== ${what}: ${((Date.now() - t) / 1000).toFixed(1)} s`);
}

const python = process.env.DYNATASK_PYTHON || 'python3';
const probe = spawnSync(python, ['-c', 'import sys; print("%d.%d" % sys.version_info[:2])'], {
  encoding: 'utf8',
});
if (probe.error || probe.status !== 0)
  fail(
    `no Python: \`${python}\` cannot be run (${probe.error?.message ?? probe.stderr.trim()}). ` +
      'Install Python 3.10 or newer (with its venv module), or name it in $DYNATASK_PYTHON.',
  );
const [major, minor] = probe.stdout.trim().split('.').map(Number);
if (major < 3 || (major === 3 && minor < 10))
  fail(
    `${python} is Python ${probe.stdout.trim()}; the SDK needs 3.10 or newer ($DYNATASK_PYTHON names another)`,
  );

if (!existsSync(join(bin, 'python'))) run('virtual environment', python, ['-m', 'venv', venv]);

// Install when the SDK's metadata changed since the last install (or never happened).
const stampFile = join(venv, '.dynatask-sdk-python');
const stamp = createHash('sha256')
  .update(readFileSync(join(sdk, 'pyproject.toml')))
  .digest('hex');
if (!existsSync(stampFile) || readFileSync(stampFile, 'utf8') !== stamp) {
  run('install the SDK with its test extras', join(bin, 'python'), [
    '-m',
    'pip',
    'install',
    '--quiet',
    '--disable-pip-version-check',
    '-e',
    `${sdk}[test]`,
  ]);
  writeFileSync(stampFile, stamp);
}

run('ruff check', join(bin, 'ruff'), ['check', '.']);
run('ruff format --check', join(bin, 'ruff'), ['format', '--check', '.']);
run('mypy --strict', join(bin, 'mypy'), ['--strict']);
if (!process.env.DYNATASK_TEST_POSTGRES_URL && process.env.CI !== 'true')
  console.log('\n== no $DYNATASK_TEST_POSTGRES_URL: the PostgreSQL half of the tests is skipped');
run('pytest', join(bin, 'python'), ['-m', 'pytest', '-q', ...process.argv.slice(2)]);
console.log(`\n== Python SDK: all checks passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
