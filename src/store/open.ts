/** Chooses the store from a database string: a postgres:// URL or a SQLite path. */
import { ValidationError } from '../core/errors.js';
import { PostgresStore } from './postgres/postgres-store.js';
import { SqliteStore } from './sqlite/sqlite-store.js';
import type { Store } from './store.js';

/** True for a postgres:// or postgresql:// URL. */
export const isPostgresUrl = (database: string) => /^postgres(ql)?:\/\//i.test(database);

/**
 * A postgres:// or postgresql:// URL opens the PostgreSQL store (`?schema=name` chooses its
 * schema, default `dynatask`); anything else is a SQLite file path, or `:memory:`.
 */
export async function openStore(database: string): Promise<Store> {
  if (isPostgresUrl(database)) return new PostgresStore({ url: database });
  if (database.trim() === '')
    throw new ValidationError('database: empty path; give a SQLite file path or :memory:');
  return new SqliteStore({ path: database });
}
