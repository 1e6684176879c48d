#!/usr/bin/env node
// The Rust SDK's checks (sdk/rust): `cargo fmt --check`, `cargo clippy --all-targets -- -D
// warnings` and `cargo test` (unit tests, the contract test against openapi.json, and the
// tests against a real `dynatask server` on SQLite and on PostgreSQL: the server in
// $DYNATASK_TEST_POSTGRES_URL, which `npm test` and `npm run test:rust` start privately).
// Arguments go to `cargo test`: `npm run test:rust -- --test client`.
//
// Compiled dependencies are kept OUTSIDE the clone, in $CARGO_TARGET_DIR (default
// ~/.cache/dynatask/cargo-target), and crates in cargo's own ~/.cargo, so a fresh clone (CI
// makes one per run) builds only the crate itself. Cargo.lock is committed; `--locked` keeps
// it so. A missing cargo fails loudly: no skip.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const crate = join(root, 'sdk', 'rust');
// rustup installs into ~/.cargo/bin: put it on PATH when a shell profile did not.
const cargoBin = join(process.env.CARGO_HOME || join(homedir(), '.cargo'), 'bin');
const path = existsSync(cargoBin) ? `${process.env.PATH ?? ''}${delimiter}${cargoBin}` : process.env.PATH;
const env = {
  ...process.env,
  PATH: path,
  CARGO_TARGET_DIR: process.env.CARGO_TARGET_DIR || join(homedir(), '.cache', 'dynatask', 'cargo-target'),
  CARGO_TERM_COLOR: process.env.CARGO_TERM_COLOR || 'never',
};
const started = Date.now();

function fail(message) {
  console.error(`\n== Rust SDK: ${message}`);
  process.exit(1);
}

function run(what, args) {
  const t = Date.now();
  console.log(`\n== ${what}: cargo ${args.join(' ')}`);
  const r = spawnSync('cargo', args, { stdio: 'inherit', cwd: crate, env });
  if (r.error) fail(`${what}: cannot run cargo: ${r.error.message}`);
  if (r.status !== 0) fail(`${what} failed (exit ${r.status ?? r.signal})`);
  console.log(`== ${what}: ${((Date.now() - t) / 1000).toFixed(1)} s`);
}

const probe = spawnSync('cargo', ['--version'], { encoding: 'utf8', env });
if (probe.error || probe.status !== 0)
  fail(
    `no cargo: it cannot be run (${probe.error?.message ?? probe.stderr.trim()}). ` +
      'Install a Rust toolchain with rustfmt and clippy (rustup: the default profile has both).',
  );
console.log(`== Rust SDK: ${probe.stdout.trim()}, target directory ${env.CARGO_TARGET_DIR}`);

run('format (rustfmt)', ['fmt', '--check']);
run('lint (clippy)', ['clippy', '--locked', '--all-targets', '--', '-D', 'warnings']);
run('tests (cargo test)', ['test', '--locked', ...process.argv.slice(2)]);
console.log(`\n== Rust SDK: all checks passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
