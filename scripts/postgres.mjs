#!/usr/bin/env node
/**
 * A private PostgreSQL server for the tests: initdb into a temporary folder, listen on a unix
 * socket in that folder (and on 127.0.0.1 at a free port), stop and delete it all afterwards.
 * fsync stays on, so timings measured against it are honest.
 *
 * initdb and postgres refuse to run as root: as root, the server runs as the `postgres` system
 * user (Debian's packages create it; override with $DYNATASK_PG_USER) through `runuser`.
 * The programs are taken from /usr/lib/postgresql/<newest>/bin, else $PATH ($DYNATASK_PG_BIN
 * overrides).
 *
 * As a command, it runs another command with the server's URL in $DYNATASK_TEST_POSTGRES_URL:
 *   node scripts/postgres.mjs -- npx vitest run test/postgres.conformance.test.ts
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The Postgres URL given by the environment, if any: tests then use that server. */
export function givenPostgresUrl() {
  for (const v of [process.env.DYNATASK_TEST_POSTGRES_URL, process.env.DYNATASK_DATABASE_URL]) {
    if (v && /^postgres(ql)?:\/\//.test(v)) return v;
  }
  return undefined;
}

function binDir() {
  if (process.env.DYNATASK_PG_BIN) return process.env.DYNATASK_PG_BIN;
  // Debian and Ubuntu keep each major version's programs here (and put wrappers on $PATH).
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => existsSync(join(root, v, 'bin', 'initdb')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions.length) return join(root, versions[0], 'bin');
  if (spawnSync('sh', ['-c', 'command -v initdb'], { encoding: 'utf8' }).stdout.trim()) return undefined;
  throw new Error(
    'no PostgreSQL server programs found (/usr/lib/postgresql/*/bin, or initdb on $PATH): install PostgreSQL, set $DYNATASK_PG_BIN, or give a server in $DYNATASK_TEST_POSTGRES_URL',
  );
}

/** The path of a PostgreSQL client or server program (pg_dump, psql, ...). */
export function pgBinary(name) {
  const dir = binDir();
  return dir ? join(dir, name) : name;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Runs a server binary as the server's user (root cannot run them). */
function runAs(user, bin, args, opts = {}) {
  const [cmd, argv] = user ? ['runuser', ['-u', user, '--', bin, ...args]] : [bin, args];
  return execFileSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts });
}

/**
 * Starts a private server (`settings`: more `name=value` server settings). Returns its URL (superuser `postgres`, database `postgres`, over the
 * unix socket) and `stop()`, which stops it and deletes its folder.
 */
export async function startPostgres({ log = () => {}, settings: extra = [] } = {}) {
  const bin = pgBinary;
  const user = userInfo().uid === 0 ? process.env.DYNATASK_PG_USER || 'postgres' : undefined;
  const root = mkdtempSync(join(tmpdir(), 'dynatask-pg-'));
  const data = join(root, 'data');
  const logFile = join(root, 'server.log');
  if (user) {
    const ids = spawnSync('id', ['-u', user], { encoding: 'utf8' });
    const gids = spawnSync('id', ['-g', user], { encoding: 'utf8' });
    if (ids.status !== 0)
      throw new Error(
        `running as root, PostgreSQL needs a non-root user: no user '${user}' (create one, or set $DYNATASK_PG_USER)`,
      );
    chownSync(root, Number(ids.stdout), Number(gids.stdout));
  }
  chmodSync(root, 0o700);
  const port = await freePort();
  let started = false;
  const settings = [
    `port=${port}`,
    `unix_socket_directories='${root}'`,
    "listen_addresses='127.0.0.1'",
    // Each test file runs several instances, each with its own pool.
    'max_connections=300',
    // fsync and synchronous_commit keep their defaults (on): no cheating on durability.
    ...extra,
  ];
  const startServer = () =>
    runAs(user, bin('pg_ctl'), [
      '-D',
      data,
      '-l',
      logFile,
      '-w',
      '-t',
      '60',
      '-o',
      settings.map((s) => `-c ${s}`).join(' '),
      'start',
    ]);
  const stopServer = () => runAs(user, bin('pg_ctl'), ['-D', data, '-m', 'fast', '-w', 'stop']);
  const stop = () => {
    if (started) {
      try {
        stopServer();
      } catch (e) {
        console.error(`postgres: stop failed: ${e.stderr || e.message}`);
      }
      started = false;
    }
    rmSync(root, { recursive: true, force: true });
  };
  try {
    const t0 = Date.now();
    // C collation: byte order, as SQLite and JavaScript compare ids; no locale data needed.
    runAs(user, bin('initdb'), [
      '-D',
      data,
      '-U',
      'postgres',
      '--auth=trust',
      '--encoding=UTF8',
      '--locale=C',
    ]);
    startServer();
    started = true;
    log(`postgres: private server on port ${port} in ${root}, ready in ${Date.now() - t0} ms`);
  } catch (e) {
    const serverLog = existsSync(logFile) ? readFileSync(logFile, 'utf8') : '';
    stop();
    throw new Error(`could not start a private PostgreSQL: ${e.stderr || e.message}\n${serverLog}`);
  }
  const url = `postgresql://postgres@localhost:${port}/postgres?host=${encodeURIComponent(root)}`;
  /**
   * Fault injection: stops the server (fast shutdown: every connection is terminated) and,
   * after `downMs`, starts it again on the same port, socket and data.
   */
  const restart = async (downMs = 0) => {
    if (!started) throw new Error('postgres: not running');
    stopServer();
    started = false;
    if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
    startServer();
    started = true;
  };
  return { url, port, dir: root, stop, restart };
}

// As a command: run the rest of the arguments with a server.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const sep = process.argv.indexOf('--');
  const command = sep >= 0 ? process.argv.slice(sep + 1) : [];
  if (!command.length) {
    console.error('usage: node scripts/postgres.mjs -- <command> [args...]');
    process.exit(2);
  }
  let url = givenPostgresUrl();
  let stop = () => {};
  if (!url) ({ url, stop } = await startPostgres({ log: console.log }));
  const child = spawn(command[0], command.slice(1), {
    stdio: 'inherit',
    env: { ...process.env, DYNATASK_TEST_POSTGRES_URL: url },
  });
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));
  child.on('exit', (code, signal) => {
    stop();
    process.exit(code ?? (signal ? 1 : 0));
  });
}
