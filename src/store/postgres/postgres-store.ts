/**
 * The PostgreSQL store: many processes, one database. Same tables and semantics as the SQLite
 * store; every object lives in one schema (default `dynatask`).
 *
 * A transaction takes a client from the pool and runs BEGIN ... COMMIT around the engine's
 * operation, at READ COMMITTED. Rows a transition reads to change are locked: `getTasks` locks
 * in id order, claims skip locked rows, slot counts are locked while a claim takes them.
 *
 * One store runs up to `parallelTransactions` transactions at once (default 3), so that Node
 * prepares one batch while PostgreSQL executes another; further ones wait their turn, in order.
 * The engine stamps a transaction's writes and events with the database's clock read as it begins:
 * two overlapping transactions (of one process, or of two) may commit in the other order than
 * they began, and the one that began first may then settle a parent after seeing a child
 * settled by the other, with an earlier stamp. Stamps that must stay ordered are made so from
 * the rows themselves: a parent carries the latest settle time of its children
 * (`children_settled_at`, written with the counter update it already gets), and never settles
 * before it (see settle.ts). A transaction that would wait long for a row lock gives up its turn
 * instead (see LOCK_TIMEOUT_FIRST_MS). Queries outside transactions (getJob, getTask, ...) use
 * the other connections.
 * A transaction that deadlocks anyway (two batches updating rows in different orders) is
 * rolled back by Postgres and run again here, and so is one that lost a race for a spawn or
 * dedup key (see PostgresTx.lostKeyRace): the engine's operations only touch the store inside
 * the transaction, so running one again is safe.
 *
 * Choosing the schema: `?schema=name` on the URL (removed before connecting), or the `schema`
 * option. Bigints (millisecond times, counts) come back as JavaScript numbers.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import pg from 'pg';
import { isConnectionError } from '../../core/connection.js';
import { ValidationError } from '../../core/errors.js';
import type { TaskState } from '../../core/states.js';
import { Semaphore } from '../mutex.js';
import type {
  AttemptRow,
  ClaimReadyQuery,
  ClaimRow,
  JobRow,
  ListJobsQuery,
  ReadyNotice,
  Store,
  StoreTx,
  TaskPage,
  TaskRow,
  TypeConfigRow,
} from '../store.js';
import { DB_NOW_MS, listJobsSql, queries } from './queries.js';
import { ReadyListener, readyChannel } from './ready.js';
import { type ClaimedRow, callerHoldsError, claimedRows, PostgresTx, type TxContext } from './tx.js';

/** Where the migrations live, next to this file both in src/ and in dist/. */
const MIGRATIONS_DIR = new URL('./migrations/', import.meta.url);

export const DEFAULT_SCHEMA = 'dynatask';

/**
 * Planner settings of the store's connections. A batch (256 completions, say) updates rows
 * by key; with the default random_page_cost of 4 (spinning disks), Postgres prices 256 index
 * lookups above a scan of the whole table, and would scan every job or task on each batch
 * once a table holds a few tens of thousands of rows: O(n) per batch. 1.1 is the usual
 * setting for SSDs and cached data, which a work queue's hot rows are.
 */
const PLANNER = '-c random_page_cost=1.1';

/** The mark on wake-ups sent from callers' transactions: no store drops them as its own. */
const EXTERNAL_ORIGIN = 'external';

export interface PostgresStoreOptions {
  /** A postgres:// or postgresql:// URL; `?schema=` chooses the schema. */
  url: string;
  /** The schema of every dynatask table (wins over the URL's). Default `dynatask`. */
  schema?: string;
  /** Connections in the pool. Default 10. */
  poolSize?: number;
  /**
   * Transactions of this store in flight at once (the others wait their turn). Default 1, at
   * most `poolSize - 1`: one connection stays for reads. Experimental above 1: faster (flat
   * over HTTP about 1.6x), but the commit answers of two connections can reach this process in
   * the other order, and so can a task's events (a `running` before its `queued`); issue 11
   * tracks it.
   */
  parallelTransactions?: number;
}

/**
 * See PostgresStoreOptions.parallelTransactions. One until events are released in commit order
 * across connections: a task's events must come in the order of its transitions.
 */
const DEFAULT_PARALLEL_TRANSACTIONS = 1;

/** Splits the `schema` parameter off a connection URL: pg would pass it to the server. */
export function parsePostgresUrl(url: string): { url: string; schema: string | undefined } {
  const q = url.indexOf('?');
  if (q < 0) return { url, schema: undefined };
  const params = new URLSearchParams(url.slice(q + 1));
  const schema = params.get('schema') ?? undefined;
  params.delete('schema');
  const rest = params.toString();
  return { url: rest ? `${url.slice(0, q)}?${rest}` : url.slice(0, q), schema };
}

/** Postgres errors after which the whole transaction can simply run again. */
const RETRYABLE = new Set([
  '40P01', // deadlock_detected
  '40001', // serialization_failure
]);
const MAX_TRIES = 8;

/**
 * A store transaction waits this long for a row lock, then rolls back, gives up its turn and
 * runs again later: a row held by someone else's transaction (a
 * caller's `options.transaction`, in this process or another) must not stall every other
 * operation of the process behind it. The wait doubles on each try (a hot row under heavy
 * contention still gets its turn), and the operation gives up after LOCK_WAIT_FOR_MS.
 */
const LOCK_TIMEOUT_FIRST_MS = 200;
const LOCK_TIMEOUT_MAX_MS = 3200;
const LOCK_WAIT_FOR_MS = 60_000;
const LOCK_NOT_AVAILABLE = '55P03';

/** The database's clock in ms: every time a transaction stamps or compares (leases, run_at). */
const DB_NOW = `SELECT ${DB_NOW_MS} AS now`;

/** Connection errors are retried with a doubling delay from the first to the last, for this long in all. */
const RECONNECT_FIRST_MS = 50;
const RECONNECT_MAX_MS = 1000;
const RECONNECT_FOR_MS = 20_000;

/** A connection error at COMMIT: the transaction may or may not have committed. */
export class CommitOutcomeUnknownError extends Error {
  constructor(override readonly cause: unknown) {
    super(
      `the connection broke during COMMIT: the transaction may or may not have committed (${(cause as Error)?.message})`,
    );
    this.name = 'CommitOutcomeUnknownError';
  }
}

/** int8 as a JavaScript number: every bigint here (ms times, counts) is far below 2^53. */
const types = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === pg.types.builtins.INT8 && format !== 'binary') return (v: string) => Number(v);
    return pg.types.getTypeParser(oid, format);
  },
} as pg.CustomTypesConfig;

export class PostgresStore implements Store {
  readonly kind = 'postgres' as const;
  readonly schema: string;
  private readonly pool: pg.Pool;
  private readonly ctx: TxContext;
  /** The store's turns: transactions beyond `parallelTransactions` wait here, in order. */
  private readonly turns: Semaphore;
  private readonly ready: ReadyListener;
  private closing: Promise<void> | undefined;
  private closed = false;
  private inflight = 0;
  private drained: (() => void) | undefined;

  constructor(opts: PostgresStoreOptions) {
    const parsed = parsePostgresUrl(opts.url);
    this.schema = opts.schema ?? parsed.schema ?? DEFAULT_SCHEMA;
    if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(this.schema))
      throw new ValidationError(
        `schema ${JSON.stringify(this.schema)}: use letters, digits and underscores (at most 63), not starting with a digit`,
      );
    const poolSize = opts.poolSize ?? 10;
    this.turns = new Semaphore(
      Math.max(1, Math.min(opts.parallelTransactions ?? DEFAULT_PARALLEL_TRANSACTIONS, poolSize - 1)),
    );
    this.pool = new pg.Pool({
      connectionString: parsed.url,
      max: poolSize,
      types,
      options: PLANNER,
    });
    // An idle connection that breaks (server restart) is dropped by the pool; the next query
    // opens a new one. Without a listener the error would crash the process.
    this.pool.on('error', () => {});
    // pg-pool listens for a client's errors only while it is idle, and a client emits 'error'
    // whenever its connection breaks with no query in flight (pg_terminate_backend, a restart):
    // every client keeps a listener of its own, so no moment between checkout and release can
    // crash the process. Queries in flight still fail, and the pool drops broken clients.
    this.pool.on('connect', (client) => client.on('error', () => {}));
    const s = `"${this.schema}"`;
    const channel = readyChannel(this.schema);
    this.ready = new ReadyListener({ connectionString: parsed.url, types }, channel);
    this.ctx = {
      schema: s,
      q: queries(s),
      updates: new Map(),
      names: new Map(),
      channel,
      origin: this.ready.origin,
    };
  }

  async pendingMigrations(): Promise<string[]> {
    const exists = await this.rows<{ t: string | null }>('SELECT to_regclass($1) AS t', [
      `${this.ctx.schema}.schema_migrations`,
    ]);
    if (!exists[0]?.t) return migrationFiles();
    const done = new Set(
      (
        await this.rows<{ version: string }>(`SELECT version FROM ${this.ctx.schema}.schema_migrations`, [])
      ).map((r) => r.version),
    );
    return migrationFiles().filter((f) => !done.has(f));
  }

  /** Applies the migrations not yet applied, in order, in one transaction; returns them. */
  async migrate(): Promise<string[]> {
    const s = this.ctx.schema;
    const files = migrationFiles();
    return this.withClient(async (client) => {
      // Must come first: a second process migrating the same schema at the same time waits
      // here, then finds the versions the first one recorded.
      await client.query('SELECT pg_advisory_xact_lock($1::bigint)', [migrationLockKey(this.schema)]);
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${s}`);
      await client.query(
        `CREATE TABLE IF NOT EXISTS ${s}.schema_migrations (
           version text PRIMARY KEY,
           applied_at timestamptz NOT NULL DEFAULT now()
         )`,
      );
      const done = new Set(
        (await client.query<{ version: string }>(`SELECT version FROM ${s}.schema_migrations`)).rows.map(
          (r) => r.version,
        ),
      );
      const unknown = [...done].filter((v) => !files.includes(v));
      if (unknown.length)
        throw new Error(
          `schema ${this.schema} has migrations this version of dynatask does not know (${unknown.join(', ')}): upgrade dynatask`,
        );
      const applied: string[] = [];
      for (const f of files) {
        if (done.has(f)) continue;
        await client.query(readFileSync(new URL(f, MIGRATIONS_DIR), 'utf8').replaceAll(':"schema"', s));
        await client.query(`INSERT INTO ${s}.schema_migrations (version) VALUES ($1)`, [f]);
        applied.push(f);
      }
      return applied;
    });
  }

  async transaction<T>(fn: (tx: StoreTx) => Promise<T>, opts?: { clockLater?: boolean }): Promise<T> {
    let lockTimeoutMs = LOCK_TIMEOUT_FIRST_MS;
    let giveUpAt: number | undefined;
    for (;;) {
      try {
        return await this.turns.run(() => this.runTransaction(fn, lockTimeoutMs, opts?.clockLater));
      } catch (e) {
        if ((e as { code?: string }).code !== LOCK_NOT_AVAILABLE || this.closing) throw e;
        giveUpAt ??= Date.now() + LOCK_WAIT_FOR_MS;
        if (Date.now() >= giveUpAt)
          throw new Error(
            `dynatask: rows this operation needs stayed locked by another transaction for ${LOCK_WAIT_FOR_MS / 1000} s (an uncommitted options.transaction?)`,
            { cause: e },
          );
        // Without a turn: the process's other operations go on meanwhile.
        await new Promise((r) => setTimeout(r, lockTimeoutMs / 2 + Math.random() * (lockTimeoutMs / 2)));
        lockTimeoutMs = Math.min(lockTimeoutMs * 2, LOCK_TIMEOUT_MAX_MS);
      }
    }
  }

  /**
   * Open transactions of callers (`options.transaction`) in this process, by the tasks whose
   * rows they locked. A ctx call about such a task from outside that transaction would wait
   * for the caller, who waits for the call: it is refused instead (assertNotHeldByCaller).
   */
  private readonly callerLocks = new Map<string, pg.ClientBase>();

  /** Refuses a call about a task an open transaction of the caller holds (see PostgresTx.assertNotHeldByCaller). */
  assertNotHeldByCaller(taskId: string): void {
    if (this.callerHolding(taskId)) throw callerHoldsError(taskId);
  }

  /** The caller's client holding a task's row, if its transaction is still open. */
  private callerHolding(taskId: string): pg.ClientBase | undefined {
    const client = this.callerLocks.get(taskId);
    if (!client) return undefined;
    // 'T': in a transaction, 'E': in a failed one (locks held until ROLLBACK); 'I': committed or rolled back.
    const status = (client as { getTransactionStatus?: () => string | null }).getTransactionStatus?.();
    if (status === 'T' || status === 'E') return client;
    this.callerLocks.delete(taskId);
    return undefined;
  }

  /**
   * Runs `fn` on `client`, a connection of the caller's inside a transaction they began; the
   * caller commits. Takes none of the store's turns, and is not run again on a conflict: a
   * failure is the caller's to handle, by rolling back. Its wake-ups carry a mark of their
   * own, so this store's workers hear them too, on commit.
   */
  async transactionWith<T>(client: unknown, fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    if (typeof (client as pg.ClientBase | null)?.query !== 'function')
      throw new ValidationError(
        'options.transaction must be a pg Client or PoolClient inside a transaction the caller began',
      );
    const c = client as pg.ClientBase;
    return this.tracked('statement', async () => {
      const now = (await c.query<{ now: number }>({ text: DB_NOW, types })).rows[0]!.now;
      const tx = new PostgresTx(c, { ...this.ctx, origin: EXTERNAL_ORIGIN, types }, now, {
        holder: c,
        holding: (id) => this.callerHolding(id),
      });
      const out = await fn(tx);
      await tx.sendNotices();
      // Rows it locked stay locked until the caller commits or rolls back.
      for (const id of tx.locked) this.callerLocks.set(id, c);
      // Forget transactions that have ended, now and then, so the map stays small.
      if (this.callerLocks.size > 1024) for (const id of [...this.callerLocks.keys()]) this.callerHolding(id);
      return out;
    });
  }

  private async runTransaction<T>(
    fn: (tx: StoreTx) => Promise<T>,
    lockTimeoutMs: number,
    clockLater = false,
  ): Promise<T> {
    // One round trip: BEGIN, the lock wait allowed, and the database's time; with the first
    // statement when the operation needs no time before it.
    const begin = `BEGIN; SET LOCAL lock_timeout = ${Math.round(lockTimeoutMs)}; ${DB_NOW}`;
    let reconnectMs = RECONNECT_FIRST_MS;
    let reconnectUntil: number | undefined;
    for (let attempt = 1; ; attempt++) {
      let tx: PostgresTx | undefined;
      try {
        return await this.withClient(
          (client, now) => {
            tx = new PostgresTx(
              client,
              this.ctx,
              now,
              { holding: (id) => this.callerHolding(id) },
              clockLater ? begin : undefined,
            );
            return fn(tx);
          },
          () => tx!.commitSql(),
          clockLater ? '' : begin,
        );
      } catch (e) {
        // A connection lost before COMMIT: Postgres rolled the transaction back. Run it again
        // once the server answers, with a doubling delay, for a bounded time. (Lost during
        // COMMIT, the outcome is unknown: withClient throws CommitOutcomeUnknownError, and
        // the caller's leases settle it.)
        if (isConnectionError(e) && !this.closing) {
          reconnectUntil ??= Date.now() + RECONNECT_FOR_MS;
          if (Date.now() + reconnectMs > reconnectUntil) throw e;
          await new Promise((r) => setTimeout(r, reconnectMs * (0.5 + Math.random() / 2)));
          reconnectMs = Math.min(reconnectMs * 2, RECONNECT_MAX_MS);
          attempt--; // not a conflict: does not count against MAX_TRIES
          continue;
        }
        const code = (e as { code?: string }).code;
        const again = tx?.lostKeyRace || (code !== undefined && RETRYABLE.has(code));
        if (!again || attempt >= MAX_TRIES) throw e;
        // The other transaction goes on; start again a little later, at a random moment.
        await new Promise((r) => setTimeout(r, Math.random() * 5 * attempt));
      }
    }
  }

  /** BEGIN, `fn`, COMMIT (`commitSql()`: with notices) on one pooled client; ROLLBACK if `fn` throws. */
  private withClient<T>(
    fn: (client: pg.PoolClient, now?: number) => Promise<T>,
    commitSql = () => 'COMMIT',
    begin = 'BEGIN',
  ): Promise<T> {
    return this.tracked('transaction', async () => {
      const client = await this.pool.connect();
      let broken: Error | undefined;
      // A checked-out client whose connection breaks emits 'error' (pg-pool listens only while
      // it is idle): unheard, that would crash the process. The query in flight fails anyway.
      const onError = (e: Error) => {
        broken ??= e;
      };
      client.on('error', onError);
      let committing = false;
      try {
        const began = begin ? ((await client.query(begin)) as pg.QueryResult | pg.QueryResult[]) : undefined;
        const last = Array.isArray(began) ? began[began.length - 1] : began;
        const out = await fn(client, (last?.rows[0] as { now?: number } | undefined)?.now);
        // Broken already (its 'error' came in): COMMIT cannot reach the server, so the
        // transaction did not commit, and may run again.
        if (broken) throw broken;
        committing = true;
        await client.query(commitSql()); // COMMIT, with the transaction's notices if any
        return out;
      } catch (e) {
        if (committing && isConnectionError(e)) {
          broken ??= e as Error;
          throw new CommitOutcomeUnknownError(e);
        }
        if (!broken)
          await client.query('ROLLBACK').catch((rollbackError: Error) => {
            broken = rollbackError; // the connection is unusable: the pool must not reuse it
          });
        throw e;
      } finally {
        client.removeListener('error', onError);
        client.release(broken);
      }
    });
  }

  private async rows<R extends pg.QueryResultRow>(text: string, values: unknown[]): Promise<R[]> {
    return (await this.query<R>(text, values)).rows;
  }

  private query<R extends pg.QueryResultRow>(text: string, values: unknown[]): Promise<pg.QueryResult<R>> {
    return this.tracked('statement', () => this.pool.query<R>(text, values));
  }

  /** Wake-ups from other stores' transactions (see ready.ts); one LISTEN connection while subscribed. */
  onReady(listener: (notice: ReadyNotice) => void): () => void {
    return this.ready.subscribe(listener);
  }

  // ---- read-only queries and single statements, outside any transaction

  async getJob(id: string): Promise<JobRow | undefined> {
    return (await this.rows<JobRow>(this.ctx.q.getJob, [id]))[0];
  }

  jobCounts(jobId: string): Promise<Array<{ state: TaskState; n: number }>> {
    return this.rows(this.ctx.q.jobCounts, [jobId]);
  }

  listJobs(q: ListJobsQuery): Promise<JobRow[]> {
    const filters: Parameters<typeof listJobsSql>[1] = [];
    const values: unknown[] = [];
    const add = (f: (typeof filters)[number], v: unknown) => {
      filters.push(f);
      values.push(v);
    };
    if (q.namespace !== undefined) add('namespace', q.namespace);
    if (q.state) add('state', q.state);
    if (q.type) add('type', q.type);
    if (q.createdAfter !== undefined) add('createdAfter', q.createdAfter);
    if (q.createdBefore !== undefined) add('createdBefore', q.createdBefore);
    if (q.before) add('before', q.before);
    return this.rows(listJobsSql(this.ctx.schema, filters), [...values, q.limit]);
  }

  async getTask(id: string): Promise<TaskRow | undefined> {
    return (await this.rows<TaskRow>(this.ctx.q.getTask, [id]))[0];
  }

  attempts(jobId: string, taskId: string): Promise<AttemptRow[]> {
    return this.rows(this.ctx.q.attempts, [jobId, taskId]);
  }

  async taskPage(jobId: string, after: string | null, limit: number): Promise<TaskPage> {
    const rows = await this.rows<TaskRow>(this.ctx.q.taskPage, [jobId, after ?? '', limit + 1]);
    const more = rows.length > limit;
    const tasks = more ? rows.slice(0, limit) : rows;
    return { tasks, next: more ? tasks[tasks.length - 1]!.id : null };
  }

  typeConfigs(namespace: string): Promise<TypeConfigRow[]> {
    return this.rows(this.ctx.q.typeConfigs, [namespace]);
  }

  async nextRunAt(namespace: string, types: string[]): Promise<number | null> {
    if (!types.length) return null;
    // Prepared (an idle worker's one read after each short claim): planned once per connection.
    const [r] = (
      await this.tracked('statement', () =>
        this.pool.query<{ t: number | null; now: number }>({
          name: 'dynatask_next_run_at',
          text: this.ctx.q.nextRunAt,
          values: [namespace, types],
        }),
      )
    ).rows;
    // On this process's clock: the worker sleeps until then.
    return r?.t == null ? null : r.t - r.now + Date.now();
  }

  /**
   * The one-statement claim on its own: it commits as it returns, and takes the database's
   * time when it runs. One round trip, in the store's order of transactions.
   */
  claimReady(q: Omit<ClaimReadyQuery, 'now'>): Promise<{ now: number; rows: ClaimRow[] } | null> {
    return this.turns.run(() =>
      this.tracked('transaction', async () => {
        const { rows } = await this.pool.query<ClaimedRow>({
          name: 'dynatask_claim_ready',
          text: this.ctx.q.claimReady,
          values: [
            q.namespace,
            q.types,
            null,
            q.limit,
            q.leaseMs,
            q.graceMs,
            JSON.stringify(q.typeTimeouts),
            q.workerId,
          ],
        });
        return claimedRows(rows);
      }),
    );
  }

  async getStep(jobId: string, taskId: string, name: string): Promise<string | undefined> {
    return (await this.rows<{ value: string }>(this.ctx.q.getStep, [jobId, taskId, name]))[0]?.value;
  }

  queuedByType(namespace: string): Promise<Array<{ type: string; n: number }>> {
    return this.rows(this.ctx.q.queuedByType, [namespace]);
  }

  countTasks(): Promise<Array<{ namespace: string; type: string; state: 'queued' | 'running'; n: number }>> {
    return this.rows(this.ctx.q.countTasks, []);
  }

  async touchWorker(id: string, namespace: string, types: string[], now: number): Promise<void> {
    await this.query(this.ctx.q.touchWorker, [id, namespace, types, Date.now() - now]);
  }

  async removeWorker(id: string): Promise<void> {
    await this.query(this.ctx.q.removeWorker, [id]);
  }

  async liveTypes(namespace: string, since: number): Promise<string[]> {
    const rows = await this.rows<{ type: string }>(this.ctx.q.liveTypes, [namespace, Date.now() - since]);
    return rows.map((r) => r.type).sort();
  }

  async purgeJobs(namespace: string, before: number, limit: number): Promise<number> {
    return (await this.query(this.ctx.q.purgeJobs, [namespace, Date.now() - before, limit])).rowCount ?? 0;
  }

  /**
   * Closes the pool once the work in flight is done. Transactions are refused at once; single
   * statements (reads) go on until none has been in flight for a turn of the event loop, so
   * that a transaction committing now can still make its follow-up read (a worker's next poll
   * time), as it could on SQLite, where both run before close() does. (And pg-pool's end()
   * would leave a checkout queued for a connection waiting forever: nothing may be in flight
   * when it is called.)
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      do {
        if (this.inflight > 0) await new Promise<void>((r) => (this.drained = r));
        await new Promise((r) => setImmediate(r));
      } while (this.inflight > 0);
      this.closed = true;
      await this.ready.close();
      await this.pool.end();
    })();
    return this.closing;
  }

  /** Runs `op`, counted as in flight for close(); a transaction only while the store is open. */
  private async tracked<T>(kind: 'transaction' | 'statement', op: () => Promise<T>): Promise<T> {
    if (this.closed || (kind === 'transaction' && this.closing))
      throw new Error('the dynatask store is closed');
    this.inflight++;
    try {
      return await op();
    } finally {
      if (--this.inflight === 0) this.drained?.();
    }
  }
}

/** The migration files of this version, in the order they apply. */
function migrationFiles(): string[] {
  return readdirSync(MIGRATIONS_DIR)
    .filter((f) => f.endsWith('.sql'))
    .sort();
}

/** The advisory lock that serialises migrations of one schema (a stable 64-bit hash of it). */
function migrationLockKey(schema: string): string {
  return createHash('sha256').update(`dynatask migrate ${schema}`).digest().readBigInt64BE(0).toString();
}
