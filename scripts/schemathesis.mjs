#!/usr/bin/env node
// `npm run test:contract` (and a step of `npm test`): Schemathesis, a property-based tester that
// reads the server's OpenAPI document, against real `dynatask server` processes (the built CLI:
// run `npm run build` first). Every check, and the coverage, fuzzing and stateful phases, once
// with an admin token and once in open mode (no tokens, whose document declares no auth); the
// runs are bounded in time (under 3 minutes in all). Any finding fails the step, loudly.
//
// Schemathesis comes from PyPI, pinned, into .venv at the repository root (gitignored), made
// here when missing; pip's cache lives outside the clone, so later runs install from it.
//
// $SCHEMATHESIS_SEED replays a run (the seed is printed); $SCHEMATHESIS_MAX_TIME scales the
// budget (seconds of the token run; the open run gets half of it).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const VERSION = '4.32.5';
const root = new URL('..', import.meta.url).pathname;
const venv = join(root, '.venv');
const bin = join(venv, 'bin', 'schemathesis');
const seed = process.env.SCHEMATHESIS_SEED ?? '20261202';
const maxTime = Number(process.env.SCHEMATHESIS_MAX_TIME ?? 80);

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', ...opts });
  if (r.status !== 0) {
    console.error(`\n== FAILED: ${cmd} ${args.join(' ')} (exit ${r.status ?? r.signal})`);
    process.exit(r.status || 1);
  }
}

/** The pinned Schemathesis in .venv, installed if missing or of another version. */
function ensureSchemathesis() {
  const have = existsSync(bin) ? spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout : '';
  if (have.includes(`version ${VERSION}`)) return;
  if (!existsSync(join(venv, 'bin', 'python'))) {
    console.log(`== creating ${venv}`);
    run('python3', ['-m', 'venv', venv]);
  }
  console.log(`== installing schemathesis==${VERSION} into ${venv}`);
  run(join(venv, 'bin', 'python'), ['-m', 'pip', 'install', '--quiet', `schemathesis==${VERSION}`]);
}

/** A `dynatask server` on a fresh SQLite file and a free port; resolves with its URL and a stop function. */
function startServer(dir, name, tokens) {
  const args = [join(root, 'bin', 'dynatask.js'), 'server', '--port', '0', '--log-level', 'info'];
  args.push('--database', join(dir, `${name}.db`));
  for (const t of tokens) args.push('--token', t);
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} server did not start in 20 s`)), 20_000);
    child.once('exit', (code) => reject(new Error(`${name} server exited (${code}) before listening`)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      let entry;
      try {
        entry = JSON.parse(line);
      } catch {
        return;
      }
      // The server's own errors are part of the finding: show them.
      if (entry.level >= 50) console.error(`[${name} server] ${line}`);
      if (entry.msg === 'dynatask server listening') {
        clearTimeout(timer);
        resolve({
          url: entry.url,
          stop: () =>
            new Promise((done) => {
              if (child.exitCode !== null) return done(child.exitCode);
              child.once('exit', (code) => done(code));
              child.kill('SIGTERM');
            }),
        });
      }
    });
  });
}

/**
 * One bounded Schemathesis run, in the run's temporary folder (where it keeps its cache);
 * returns its exit code.
 */
function schemathesis(name, url, budget, extra) {
  const args = [
    '--config-file',
    join(root, 'scripts', 'schemathesis.toml'),
    'run',
    `${url}/openapi.json`,
    '--checks',
    'all',
    '--phases',
    'coverage,fuzzing,stateful',
    '--max-time',
    String(budget),
    '--seed',
    seed,
    '--generation-database',
    'none',
    '--no-color',
    ...extra,
  ];
  console.log(`\n== schemathesis (${name}): ${bin} ${args.join(' ').replace(/Bearer \S+/, 'Bearer ***')}`);
  const started = Date.now();
  const env = { ...process.env, SCHEMATHESIS_HOOKS: join(root, 'scripts', 'schemathesis_hooks.py') };
  const r = spawnSync(bin, args, { cwd: dir, env, encoding: 'utf8', maxBuffer: 64 << 20 });
  process.stdout.write(r.stdout);
  process.stderr.write(r.stderr);
  const cases = /(\d+) generated/.exec(r.stdout)?.[1] ?? '?';
  const seconds = ((Date.now() - started) / 1000).toFixed(0);
  console.log(`== schemathesis (${name}): ${cases} cases in ${seconds} s, exit ${r.status ?? r.signal}`);
  return r.status ?? 1;
}

ensureSchemathesis();
const dir = mkdtempSync(join(tmpdir(), 'dynatask-schemathesis-'));
const secret = `st-${process.pid}-${Date.now()}-admin`;
const servers = [];
let failed = false;
try {
  const withToken = await startServer(dir, 'token', [`schemathesis:admin:${secret}`]);
  servers.push(withToken);
  const open = await startServer(dir, 'open', []);
  servers.push(open);
  const auth = ['-H', `Authorization: Bearer ${secret}`];
  if (schemathesis('admin token', withToken.url, maxTime, auth) !== 0) failed = true;
  if (schemathesis('open mode', open.url, Math.max(10, Math.round(maxTime / 2)), []) !== 0) failed = true;
  for (const s of servers.splice(0)) {
    const code = await s.stop();
    if (code !== 0) {
      console.error(`== a server exited with ${code} on SIGTERM`);
      failed = true;
    }
  }
} finally {
  await Promise.all(servers.map((s) => s.stop()));
  rmSync(dir, { recursive: true, force: true });
}
if (failed) {
  console.error(
    `\n== FAILED: Schemathesis found responses that break openapi.json (seed ${seed}; replay with SCHEMATHESIS_SEED=${seed})`,
  );
  process.exit(1);
}
console.log('\n== schemathesis: no findings');
