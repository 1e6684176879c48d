/**
 * `dynatask server`: the HTTP API (src/server) on the command's database, until SIGTERM or
 * SIGINT; then it drains (long polls answer empty, requests in flight finish), closes the store
 * and exits 0.
 */
import { readFileSync } from 'node:fs';
import { type Command, InvalidArgumentError } from 'commander';
import { parseTokens, type TokenSpec } from '../server/auth.js';
import { buildServer, DEFAULT_BODY_LIMIT } from '../server/server.js';
import { databaseOf, openDatabase } from './database.js';
import { UserError } from './output.js';

interface ServerCliOptions {
  host: string;
  port: number;
  database?: string;
  token: string[];
  bodyLimit: number;
  leaseMs?: number;
  graceMs: number;
  logLevel: string;
}

/** `name:scopes:secret,...`, or `@path` to read them from a file (one per line). */
function tokensOf(text: string, where: string): TokenSpec[] {
  try {
    return parseTokens(text.startsWith('@') ? readFileSync(text.slice(1), 'utf8') : text);
  } catch (e) {
    throw new UserError(`${where}: ${(e as Error).message}`);
  }
}

/** A byte count: `1048576`, `512k`, `4m`. */
function bytes(value: string): number {
  const m = /^(\d+)([km]?)b?$/i.exec(value.trim());
  const n = m ? Number(m[1]) * (m[2]?.toLowerCase() === 'm' ? 1 << 20 : m[2] ? 1 << 10 : 1) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < 1024)
    throw new InvalidArgumentError('expected a size of at least 1024 bytes, e.g. 1048576, 512k or 4m.');
  return n;
}

function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new InvalidArgumentError('expected a port from 0 to 65535.');
  return n;
}

function ms(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 100)
    throw new InvalidArgumentError('expected an integer of at least 100 (ms).');
  return n;
}

async function serve(opts: ServerCliOptions): Promise<number> {
  const tokens = [
    ...(process.env.DYNATASK_TOKENS ? tokensOf(process.env.DYNATASK_TOKENS, '$DYNATASK_TOKENS') : []),
    ...opts.token.flatMap((t) => tokensOf(t, '--token')),
  ];
  const database = databaseOf(opts);
  if (/^https?:\/\//i.test(database))
    throw new UserError(
      `the server needs a database, not another server: give --database a SQLite path or a postgres:// URL (got ${database})`,
    );
  const dt = await openDatabase(database, {
    create: true,
    ...(opts.leaseMs !== undefined ? { leaseMs: opts.leaseMs } : {}),
  });
  let server: Awaited<ReturnType<typeof buildServer>>;
  try {
    server = await buildServer({ dt, tokens, bodyLimit: opts.bodyLimit, logger: { level: opts.logLevel } });
  } catch (e) {
    await dt.close();
    throw e;
  }
  const log = server.app.log;
  const stop = new Promise<NodeJS.Signals>((resolve) => {
    for (const s of ['SIGTERM', 'SIGINT'] as const)
      process.once(s, () => {
        resolve(s);
        // A second signal while draining: give up at once.
        process.once(s, () => process.exit(1));
      });
  });
  try {
    const url = await server.listen({ host: opts.host, port: opts.port });
    log.info(
      { url, store: dt.store.kind, auth: tokens.length ? `${tokens.length} token(s)` : 'none' },
      'dynatask server listening',
    );
  } catch (e) {
    await server.close();
    await dt.close();
    throw new UserError(`cannot listen on ${opts.host}:${opts.port}: ${(e as Error).message}`);
  }
  const signal = await stop;
  log.info({ signal }, 'draining: claims answer empty, requests in flight finish');
  // Requests that do not finish within the grace (a stuck database) are cut off.
  const force = setTimeout(() => {
    log.warn(
      { graceMs: opts.graceMs },
      'requests still in flight after the grace: closing their connections',
    );
    server.app.server.closeAllConnections();
  }, opts.graceMs);
  force.unref();
  await server.close();
  clearTimeout(force);
  await dt.close();
  log.info('dynatask server stopped');
  return 0;
}

/** Registers `dynatask server` on the CLI. */
export function serverCommand(cli: Command, setExitCode: (code: number) => void): void {
  cli
    .command('server')
    .description('serve the HTTP API (docs/http-api.md) until SIGTERM or SIGINT')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <port>', 'port to listen on (0: any free port)', port, 7077)
    .option(
      '--database <path|url>',
      'SQLite file, :memory:, or postgres:// URL (default: $DYNATASK_DATABASE_URL, else .dynatask/dynatask.db)',
    )
    .option(
      '--token <name:scopes:secret>',
      'an API token (repeatable; scopes worker, operator, viewer, admin joined by +; @file reads one per line); also $DYNATASK_TOKENS',
      (v: string, prev: string[]) => [...prev, v],
      [] as string[],
    )
    .option(
      '--body-limit <bytes>',
      'largest request body (413 above it), e.g. 1048576, 512k, 4m',
      bytes,
      DEFAULT_BODY_LIMIT,
    )
    .option('--lease-ms <ms>', 'lease of a claimed task unless the worker asks for another', ms)
    .option('--grace-ms <ms>', 'on SIGTERM, how long requests in flight may take to finish', ms, 30_000)
    .option('--log-level <level>', 'pino log level: fatal, error, warn, info, debug, trace, silent', 'info')
    .action(async (opts: ServerCliOptions) => setExitCode(await serve(opts)));
}
