/**
 * `dynatask migrate`: applies the schema migrations a database lacks, as a deploy step, for
 * processes started with `open({ migrate: false })` (which refuse to run on an old schema).
 * `--check` only lists what is pending, and fails if anything is: a gate for CI or deploys.
 */
import { isServerUrl } from '../dynatask.js';
import { openStore } from '../store/open.js';
import { type CommonOptions, databaseOf } from './database.js';
import { printJson, UserError } from './output.js';

export interface MigrateOptions extends CommonOptions {
  check?: boolean;
}

export async function migrate(opts: MigrateOptions): Promise<number> {
  const database = databaseOf(opts);
  if (isServerUrl(database))
    throw new UserError(`migrate needs the database itself, not a dynatask server (${database})`);
  const store = await openStore(database);
  try {
    if (opts.check) {
      const pending = await store.pendingMigrations();
      if (opts.json) printJson({ database: store.kind, pending });
      else if (pending.length) console.log(`pending migrations: ${pending.join(', ')}`);
      else console.log('the schema is up to date');
      return pending.length ? 1 : 0;
    }
    const applied = await store.migrate();
    if (opts.json) printJson({ database: store.kind, applied });
    else if (applied.length) console.log(`applied ${applied.join(', ')}`);
    else console.log('the schema is up to date');
    return 0;
  } finally {
    await store.close();
  }
}
