/** Chooses the store from a database string: a postgres:// URL or a SQLite path. */
import { ValidationError } from '../engine/errors.js';
import { SqliteStore } from './sqlite/sqlite-store.js';
import type { Store } from './store.js';

export async function openStore(database: string): Promise<Store> {
  if (/^postgres(ql)?:\/\//.test(database)) {
    throw new ValidationError(
      `database ${JSON.stringify(database.replace(/:[^:@/]*@/, ':***@'))}: the PostgreSQL store is not available in this version; use a SQLite path`,
    );
  }
  if (database.trim() === '')
    throw new ValidationError('database: empty path; give a SQLite file path or :memory:');
  return new SqliteStore({ path: database });
}
