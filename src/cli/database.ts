/** Which database a command uses, and opening it. */
import { existsSync } from 'node:fs';
import { DEFAULT_DATABASE, type Dynatask, type OpenOptions, open } from '../dynatask.js';
import type { TaskMap } from '../engine/context.js';
import { ValidationError } from '../engine/errors.js';
import { UserError } from './output.js';

/** Options every command takes. */
export interface CommonOptions {
  database?: string;
  json?: boolean;
}

/** `--database`, else $DYNATASK_DATABASE_URL (unless empty), else the embedded default file. */
export function databaseOf(opts: CommonOptions): string {
  return opts.database ?? (process.env.DYNATASK_DATABASE_URL || DEFAULT_DATABASE);
}

const isFile = (database: string) => database !== ':memory:' && !/^[a-z][a-z0-9+.-]*:\/\//i.test(database);

/**
 * Opens dynatask on `database`. Commands that only inspect refuse a SQLite file that does not
 * exist: opening it would create an empty database where the user expected one with jobs.
 */
export async function openDatabase<M extends TaskMap = TaskMap>(
  database: string,
  opts: Omit<OpenOptions, 'database' | 'store'> & { create?: boolean } = {},
): Promise<Dynatask<M>> {
  const { create = false, ...rest } = opts;
  if (!create && isFile(database) && !existsSync(database))
    throw new UserError(
      `no database at ${database}: run \`dynatask demo\` to create one, or pass --database <path> (or set DYNATASK_DATABASE_URL)`,
    );
  try {
    return await open<M>({ ...rest, database });
  } catch (e) {
    if (e instanceof ValidationError || !(e instanceof Error)) throw e;
    // A wrong path is the usual cause (not a SQLite file, no permission): name the database.
    throw new UserError(`cannot open database ${database}: ${e.message}`);
  }
}

/** Runs `fn` with dynatask open on the command's database, and closes it afterwards. */
export async function withDatabase<T>(
  opts: CommonOptions & { namespace?: string },
  fn: (dt: Dynatask) => Promise<T>,
): Promise<T> {
  const dt = await openDatabase(databaseOf(opts), opts.namespace ? { namespace: opts.namespace } : {});
  try {
    return await fn(dt);
  } finally {
    await dt.close();
  }
}
