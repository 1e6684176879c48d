/**
 * The PostgreSQL server the Postgres tests run against, and cheap isolation on it: every
 * database a test opens is a fresh schema (`?schema=` on the URL), dropped when the file ends.
 *
 * `npm test` starts a private server (scripts/postgres.mjs) and passes its URL in
 * $DYNATASK_TEST_POSTGRES_URL; $DYNATASK_DATABASE_URL (a postgres:// URL) works too. Without
 * either, the Postgres test files fail: they never skip.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { givenPostgresUrl } from '../../scripts/postgres.mjs';

/** The server's URL; throws, failing the test file, when none is given. */
export function testPostgresUrl(): string {
  const url = givenPostgresUrl();
  if (!url)
    throw new Error(
      'no PostgreSQL for the Postgres tests: run them with `npm test` (which starts a private server), ' +
        'or `node scripts/postgres.mjs -- npx vitest run ...`, or set DYNATASK_TEST_POSTGRES_URL to a postgres:// URL',
    );
  return url;
}

/** `url` with `?schema=` set. */
export function withSchema(url: string, schema: string): string {
  return `${url}${url.includes('?') ? '&' : '?'}schema=${schema}`;
}

/** Fresh schemas on one server, and dropping them all at the end of a test file. */
export class Schemas {
  readonly url = testPostgresUrl();
  private readonly created = new Set<string>();

  /** A new schema name (nothing is created until a store migrates it). */
  fresh(prefix = 'dt'): string {
    const name = `${prefix}_${process.pid}_${randomBytes(5).toString('hex')}`;
    this.created.add(name);
    return name;
  }

  /** The URL of a new, empty schema. */
  freshUrl(prefix?: string): string {
    return withSchema(this.url, this.fresh(prefix));
  }

  /** Runs `fn` with a short-lived client (outside any store). */
  async withClient<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
    const c = new pg.Client({ connectionString: this.url });
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  }

  async drop(name: string): Promise<void> {
    this.created.delete(name);
    await this.withClient((c) => c.query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`));
  }

  async dropAll(): Promise<void> {
    const names = [...this.created];
    this.created.clear();
    if (names.length)
      await this.withClient((c) =>
        c.query(`DROP SCHEMA IF EXISTS ${names.map((n) => `"${n}"`).join(', ')} CASCADE`),
      );
  }
}
