/**
 * The peers of `npm run bench -- --compare`: the anchor scripts of ../shared/anchors (BullMQ
 * on Redis, graphile-worker on PostgreSQL), run unchanged, against a Redis and a PostgreSQL that
 * this module starts privately: the same PostgreSQL server dynatask's Postgres rows use, so
 * every store runs on the same settings (fsync and synchronous_commit on) and the same 2 cores.
 *
 * The anchors folder may be read-only: it is copied to ~/.cache/dynatask/anchors and its npm
 * dependencies installed there (again only when its package-lock.json changes).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { homedir, userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { startPostgres } from '../scripts/postgres.mjs';

/** One JSON line of an anchor script (flat.mjs, fanout.mjs, latency.mjs). */
export type PeerLine = Record<string, unknown> & { error?: string };

export interface Peers {
  /** Runs `<bench>.mjs` with `env` (LIB, C, BATCH, N...): its last JSON line. */
  run(bench: 'flat' | 'fanout' | 'latency', env: Record<string, string>): PeerLine;
  /** The PostgreSQL server (TCP, as the anchors connect), for dynatask's own rows too. */
  postgresUrl: string;
  stop(): void;
}

const repo = resolve(new URL('..', import.meta.url).pathname);

/** The anchors folder: --anchors, $DYNATASK_ANCHORS, else ../shared/anchors beside the clone. */
export function anchorsSource(given?: string): string {
  const dir = given ?? process.env.DYNATASK_ANCHORS ?? join(repo, '..', 'shared', 'anchors');
  if (!existsSync(join(dir, 'flat.mjs')))
    throw new Error(
      `--compare: no peer benchmark scripts in ${dir} (expected flat.mjs there): give --anchors DIR or $DYNATASK_ANCHORS`,
    );
  return dir;
}

/** A writable copy of the anchors with its dependencies installed. */
function installAnchors(source: string, log: (m: string) => void): string {
  const dir = join(homedir(), '.cache', 'dynatask', 'anchors');
  mkdirSync(dir, { recursive: true });
  cpSync(source, dir, {
    recursive: true,
    filter: (p) => !/[/\\](node_modules|results)([/\\]|$)/.test(p.slice(source.length)),
  });
  const lock = createHash('sha256')
    .update(readFileSync(join(dir, 'package-lock.json')))
    .digest('hex');
  const stamp = join(dir, 'node_modules', '.dynatask-lock');
  if (!existsSync(stamp) || readFileSync(stamp, 'utf8') !== lock) {
    log(`peers: npm ci in ${dir}`);
    execFileSync('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], {
      cwd: dir,
      stdio: 'inherit',
    });
    writeFileSync(stamp, lock);
  }
  return dir;
}

/** redis-server: installed with apt-get when missing and we may (root), else a clear error. */
function redisBinary(log: (m: string) => void): string {
  const found = () => spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).stdout.trim();
  if (found()) return found();
  if (userInfo().uid === 0 && spawnSync('sh', ['-c', 'command -v apt-get']).status === 0) {
    log('peers: installing redis-server (apt-get)');
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    const install = () =>
      spawnSync('apt-get', ['install', '-y', '-qq', 'redis-server'], { env, stdio: 'inherit' }).status === 0;
    if (!install()) {
      spawnSync('apt-get', ['update', '-qq'], { env, stdio: 'inherit' });
      install();
    }
    if (found()) return found();
  }
  throw new Error(
    '--compare needs redis-server for BullMQ: install it (Debian: apt-get install redis-server)',
  );
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => res(port));
    });
  });
}

/** Resolves once Redis answers PING on `port`. */
async function redisReady(port: number, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((res) => {
      const c = createConnection({ port, host: '127.0.0.1' }, () => c.write('PING\r\n'));
      c.once('data', (d) => {
        c.destroy();
        res(d.toString().startsWith('+PONG'));
      });
      c.once('error', () => res(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`redis-server did not answer on port ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startPeers(anchors: string, log: (m: string) => void): Promise<Peers> {
  const dir = installAnchors(anchors, log);
  const redisPort = await freePort();
  // No persistence, as the anchors' own setup runs it.
  const redis = spawn(
    redisBinary(log),
    ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  );
  // The anchors read pg_stat_statements to count statements per job.
  const postgres = await startPostgres({ log, settings: ['shared_preload_libraries=pg_stat_statements'] });
  const stop = () => {
    redis.kill('SIGKILL');
    postgres.stop();
  };
  try {
    await redisReady(redisPort);
    const postgresUrl = `postgres://postgres@127.0.0.1:${postgres.port}/postgres`;
    const client = new pg.Client({ connectionString: postgresUrl });
    await client.connect();
    await client.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
    await client.end();
    const env = { PG_URL: postgresUrl, REDIS_HOST: '127.0.0.1', REDIS_PORT: String(redisPort) };
    return {
      postgresUrl,
      stop,
      run(bench, vars) {
        const r = spawnSync('node', [`${bench}.mjs`], {
          cwd: dir,
          env: { ...process.env, ...env, ...vars },
          encoding: 'utf8',
          timeout: 170_000,
          maxBuffer: 64 << 20,
        });
        const last = r.stdout.trim().split('\n').pop() ?? '';
        if (r.status !== 0 || !last.startsWith('{'))
          return {
            error: `${bench}.mjs ${vars.LIB} exited ${r.status ?? r.signal}: ${r.stderr.slice(-400)}`,
          };
        return JSON.parse(last) as PeerLine;
      },
    };
  } catch (e) {
    stop();
    throw e;
  }
}
