/**
 * The Postgres schema: the committed dump (src/store/postgres/schema.sql) must be what the
 * migrations produce, and the store's column types must match the table.
 *
 * After changing the migrations, regenerate the dump (with a server, as `npm test` starts one):
 *   node scripts/postgres.mjs -- npx vitest run test/postgres.schema.test.ts -u
 */
import { execFileSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { pgBinary } from '../scripts/postgres.mjs';
import { open, ValidationError } from '../src/index.js';
import { TASK_COLUMN_TYPES } from '../src/store/postgres/columns.js';
import { PostgresStore } from '../src/store/postgres/postgres-store.js';
import { Schemas, withSchema } from './postgres/server.js';

const schemas = new Schemas();
afterAll(() => schemas.dropAll());

const HEADER = `-- The dynatask schema on PostgreSQL: pg_dump --schema-only of a freshly migrated schema
-- (src/store/postgres/migrations), normalised. Generated; do not edit. test/postgres.schema.test.ts
-- fails when the migrations no longer produce this; its header says how to regenerate it.
`;

/** Drops what varies between runs and versions (comments, SET lines, restrict keys); names the schema `dynatask`. */
function normaliseDump(dump: string, schema: string): string {
  const lines = dump
    .replaceAll(schema, 'dynatask')
    .split('\n')
    .filter(
      (l) =>
        !l.startsWith('--') &&
        !l.startsWith('SET ') &&
        !l.startsWith('SELECT pg_catalog.set_config') &&
        !l.startsWith('\\restrict') &&
        !l.startsWith('\\unrestrict'),
    );
  return `${HEADER}\n${lines
    .join('\n')
    .replace(/\n{3,}/g, '\n\n')
    .trim()}\n`;
}

async function migratedSchema(): Promise<string> {
  const schema = schemas.fresh('dump');
  const store = new PostgresStore({ url: schemas.url, schema });
  await store.migrate();
  await store.close();
  return schema;
}

describe('postgres schema', () => {
  it('the committed schema dump matches what the migrations produce', async () => {
    const schema = await migratedSchema();
    const dump = execFileSync(
      pgBinary('pg_dump'),
      ['--schema-only', '--no-owner', '--no-privileges', `--schema=${schema}`, `--dbname=${schemas.url}`],
      { encoding: 'utf8' },
    );
    await expect(normaliseDump(dump, schema)).toMatchFileSnapshot('../src/store/postgres/schema.sql');
  });

  it("the store's task column types are the table's", async () => {
    const schema = await migratedSchema();
    const rows = await schemas.withClient(
      async (c) =>
        (
          await c.query<{ column_name: string; data_type: string; is_nullable: string }>(
            `SELECT column_name, data_type, is_nullable FROM information_schema.columns
             WHERE table_schema = $1 AND table_name = 'tasks'`,
            [schema],
          )
        ).rows,
    );
    const table = Object.fromEntries(
      rows.map((r) => [r.column_name, `${r.data_type}${r.is_nullable === 'YES' ? ' null' : ''}`]),
    );
    expect(table).toEqual(TASK_COLUMN_TYPES);
  });

  it('open({ migrate: false }) refuses a schema that lacks migrations, and opens once it is migrated', async () => {
    const schema = schemas.fresh('nomig');
    const url = withSchema(schemas.url, schema);
    const err = await open({ database: url, migrate: false }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as Error).message).toMatch(
      /lacks migrations 001_init\.sql, 002_slots\.sql: run `dynatask migrate`/,
    );
    const store = new PostgresStore({ url: schemas.url, schema });
    expect(await store.pendingMigrations()).toEqual(['001_init.sql', '002_slots.sql']);
    expect(await store.migrate()).toEqual(['001_init.sql', '002_slots.sql']);
    expect(await store.migrate()).toEqual([]);
    expect(await store.pendingMigrations()).toEqual([]);
    await store.close();
    const dt = await open({ database: url, migrate: false });
    expect(await dt.listJobs()).toEqual([]);
    await dt.close();
  });
});
