/**
 * The embedded store: one SQLite file in WAL mode, driven by better-sqlite3.
 *
 * better-sqlite3 is synchronous, so a transaction here is BEGIN IMMEDIATE ... COMMIT around
 * the engine's async operation, with an in-process mutex so two operations of this process
 * never interleave on the one connection. Other processes may open the same file: SQLite's
 * own write lock (with busy_timeout) serialises them.
 */
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { TaskState } from '../../core/states.js';
import {
  CLAIM_COLUMNS as CLAIM,
  COMPLETED_COLUMNS as COMPLETED,
  JSON_TEXT_COLUMNS,
  KEYED_COLUMNS as KEYED,
  OUTCOME_COLUMNS as OUTCOME,
} from '../columns.js';
import { Mutex } from '../mutex.js';
import type {
  AttemptRow,
  ClaimByIdsQuery,
  ClaimCandidate,
  ClaimQuery,
  ClaimRow,
  CompletedRow,
  DepRow,
  JobRow,
  KeyedRow,
  ListJobsQuery,
  OutcomeRow,
  SlotRow,
  Store,
  StoreTx,
  TaskCore,
  TaskPage,
  TaskPatch,
  TaskRow,
  TypeConfigRow,
} from '../store.js';

type Statement = Database.Statement;

const TASK_COLUMNS = [
  'id',
  'job_id',
  'namespace',
  'parent_id',
  'spawn_key',
  'dedup_key',
  'type',
  'payload',
  'state',
  'priority',
  'run_at',
  'attempt',
  'attempt_base',
  'max_attempts',
  'backoff_ms',
  'max_backoff_ms',
  'timeout_ms',
  'run_token',
  'lease_expires_at',
  'concurrency_key',
  'slots_held',
  'open_children',
  'wait_mode',
  'wait_remaining',
  'awaited',
  'unobserved_failures',
  'observed',
  'ignore_failure',
  'deps_remaining',
  'run_regardless',
  'handler_done',
  'result',
  'error',
  'progress',
  'created_at',
  'started_at',
  'finished_at',
  'settled_at',
  'children_settled_at',
  'worker_id',
] as const satisfies ReadonlyArray<keyof TaskRow>;

const CORE = TASK_COLUMNS.filter((c) => !JSON_TEXT_COLUMNS.has(c));
const CORE_COLUMNS = CORE.join(', ');
const OUTCOME_COLUMNS = OUTCOME.join(', ');
const KEYED_COLUMNS = KEYED.join(', ');
const CLAIM_COLUMNS = CLAIM.join(', ');
const COMPLETED_COLUMNS = COMPLETED.join(', ');

/** Where the migrations live, next to this file both in src/ and in dist/. */
const MIGRATIONS_DIR = new URL('./migrations/', import.meta.url);

/** The migration files of this version, in the order they apply. */
function migrationFiles(): string[] {
  return readdirSync(MIGRATIONS_DIR)
    .filter((f) => f.endsWith('.sql'))
    .sort();
}

/**
 * Builds row objects from better-sqlite3's raw arrays. Its own objects cost about 60% more per
 * row read (it sets each property through V8's API; an object literal of a fixed shape is
 * compiled once). The columns are this file's constants, never input.
 */
function rowBuilder<T>(columns: readonly string[]): (values: unknown[]) => T {
  return new Function('r', `return { ${columns.map((c, i) => `${c}: r[${i}]`).join(', ')} };`) as (
    values: unknown[],
  ) => T;
}

/** A statement in raw mode with its row builder: `get` and `all` return objects again. */
class RowReader<T> {
  private readonly build: (values: unknown[]) => T;
  constructor(
    private readonly stmt: Statement,
    columns: readonly string[],
  ) {
    stmt.raw(true);
    this.build = rowBuilder<T>(columns);
  }
  get(...args: unknown[]): T | undefined {
    const r = this.stmt.get(...args) as unknown[] | undefined;
    return r === undefined ? undefined : this.build(r);
  }
  all(...args: unknown[]): T[] {
    const rows = this.stmt.all(...args) as unknown[][];
    const out: T[] = new Array(rows.length);
    for (let i = 0; i < rows.length; i++) out[i] = this.build(rows[i]!);
    return out;
  }
}

/** IN-lists are bound in chunks of this size to stay under SQLite's parameter limit. */
const CHUNK = 500;

function chunks<T>(items: T[], size = CHUNK): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

export interface SqliteStoreOptions {
  /** File path, or ':memory:'. */
  path: string;
  /** PRAGMA synchronous: NORMAL (default) survives a process crash; FULL also survives power loss. */
  synchronous?: 'NORMAL' | 'FULL';
  /** How long a write waits for another connection's write lock before SQLITE_BUSY. Default 10 s. */
  busyTimeoutMs?: number;
}

export class SqliteStore implements Store {
  readonly kind = 'sqlite' as const;
  private readonly db: Database.Database;
  private readonly mutex = new Mutex();
  private readonly cache = new Map<string, Statement>();
  /** Built on first use: its statements need the migrated schema. */
  private txOps: StoreTx | undefined;

  constructor(opts: SqliteStoreOptions) {
    if (opts.path !== ':memory:') mkdirSync(dirname(opts.path), { recursive: true });
    this.db = new Database(opts.path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma(`synchronous = ${opts.synchronous ?? 'NORMAL'}`);
    this.db.pragma(`busy_timeout = ${Math.max(0, Math.floor(opts.busyTimeoutMs ?? 10_000))}`);
    // A task row and its index entries are touched several times in its life: keep the hot
    // pages in memory (64 MiB page cache, memory-mapped reads) instead of SQLite's 2 MiB default.
    this.db.pragma('cache_size = -65536');
    this.db.pragma('mmap_size = 268435456');
    this.db.pragma('temp_store = MEMORY');
  }

  /** A cached prepared statement. */
  private st(sql: string): Statement {
    let s = this.cache.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.cache.set(sql, s);
    }
    return s;
  }

  async pendingMigrations(): Promise<string[]> {
    return this.mutex.run(async () => {
      const table = this.db
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'")
        .get();
      const done = new Set(
        table
          ? (
              this.db.prepare('SELECT version FROM schema_migrations').all() as Array<{ version: string }>
            ).map((r) => r.version)
          : [],
      );
      return migrationFiles().filter((f) => !done.has(f));
    });
  }

  async migrate(): Promise<string[]> {
    return this.mutex.run(async () => {
      this.db.exec(
        'CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)',
      );
      const files = migrationFiles();
      // IMMEDIATE takes the write lock first, so two processes migrating at once apply each file once.
      this.db.exec('BEGIN IMMEDIATE');
      try {
        const done = new Set(
          (this.db.prepare('SELECT version FROM schema_migrations').all() as Array<{ version: string }>).map(
            (r) => r.version,
          ),
        );
        const unknown = [...done].filter((v) => !files.includes(v));
        if (unknown.length)
          throw new Error(
            `this database has migrations this version of dynatask does not know (${unknown.join(', ')}): upgrade dynatask`,
          );
        const applied: string[] = [];
        for (const f of files) {
          if (done.has(f)) continue;
          this.db.exec(readFileSync(new URL(f, MIGRATIONS_DIR), 'utf8'));
          this.db
            .prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)')
            .run(f, Date.now());
          applied.push(f);
        }
        this.db.exec('COMMIT');
        return applied;
      } catch (e) {
        this.db.exec('ROLLBACK');
        throw e;
      }
    });
  }

  async transaction<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    return this.mutex.run(async () => {
      // Prepared once: db.exec parses its text on each call (a small cost; COMMIT's own is the I/O).
      this.st('BEGIN IMMEDIATE').run();
      try {
        this.txOps ??= this.makeTx();
        const out = await fn(this.txOps);
        this.st('COMMIT').run();
        return out;
      } catch (e) {
        if (this.db.inTransaction) this.st('ROLLBACK').run();
        throw e;
      }
    });
  }

  private makeTx(): StoreTx {
    const st = (sql: string) => this.st(sql);
    const rowPlaceholders = `(${TASK_COLUMNS.map(() => '?').join(', ')})`;
    const insertInto = `INSERT OR IGNORE INTO tasks (${TASK_COLUMNS.join(', ')}) VALUES`;
    const insert1 = st(`${insertInto} ${rowPlaceholders}`);
    const insert100 = st(`${insertInto} ${Array(100).fill(rowPlaceholders).join(', ')}`);
    const exists = st('SELECT 1 FROM tasks WHERE id = ?').pluck(true);
    const jobPlaceholders = '(?, ?, ?, ?, ?, ?, ?)';
    const insertJobsSql =
      'INSERT INTO jobs (id, namespace, type, root_task_id, state, created_at, settled_at) VALUES';
    const insertJob1 = st(`${insertJobsSql} ${jobPlaceholders}`);
    const insertJob100 = st(`${insertJobsSql} ${Array(100).fill(jobPlaceholders).join(', ')}`);
    const reader = <T>(sql: string, columns: readonly string[]) =>
      new RowReader<T>(this.db.prepare(sql), columns);
    const getTask = reader<TaskCore>(`SELECT ${CORE_COLUMNS} FROM tasks WHERE id = ?`, CORE);
    const claimRead = reader<ClaimRow>(`SELECT ${CLAIM_COLUMNS} FROM tasks WHERE id = ?`, CLAIM);
    const claimWrite = st(
      `UPDATE tasks SET state = 'running', attempt = ?, run_token = ?, started_at = ?, slots_held = ?,
         timeout_ms = ?, lease_expires_at = ?, worker_id = ? WHERE id = ?`,
    );
    const completeRead = reader<CompletedRow & { run_token: number }>(
      `SELECT ${COMPLETED_COLUMNS}, run_token FROM tasks WHERE id = ?`,
      [...COMPLETED, 'run_token'],
    );
    const outcomeRead = reader<OutcomeRow>(`SELECT ${OUTCOME_COLUMNS} FROM tasks WHERE id = ?`, OUTCOME);
    const childrenRead = reader<OutcomeRow>(
      `SELECT ${OUTCOME_COLUMNS} FROM tasks WHERE parent_id = ? ORDER BY id`,
      OUTCOME,
    );
    const keyedByParent = reader<KeyedRow>(`SELECT ${KEYED_COLUMNS} FROM tasks WHERE parent_id = ?`, KEYED);
    const keyedRead = reader<KeyedRow>(
      `SELECT ${KEYED_COLUMNS} FROM tasks WHERE parent_id = ? AND spawn_key = ?`,
      KEYED,
    );
    const completeWrite = st(
      `UPDATE tasks SET result = ?, error = NULL, finished_at = ?, handler_done = 1, lease_expires_at = NULL,
         wait_mode = 0, state = ?, settled_at = ? WHERE id = ?`,
    );
    const patchStatements = new Map<string, Statement>();

    const tx: StoreTx = {
      now: () => Date.now(),

      async insertJobs(rows: JobRow[]) {
        // 100 to a statement, as tasks are.
        let i = 0;
        for (; i + 100 <= rows.length; i += 100) {
          const values: unknown[] = [];
          for (let j = i; j < i + 100; j++) {
            const r = rows[j]!;
            values.push(r.id, r.namespace, r.type, r.root_task_id, r.state, r.created_at, r.settled_at);
          }
          insertJob100.run(values);
        }
        for (; i < rows.length; i++) {
          const r = rows[i]!;
          insertJob1.run(r.id, r.namespace, r.type, r.root_task_id, r.state, r.created_at, r.settled_at);
        }
      },

      async getJobs(ids: string[]) {
        const s = st('SELECT * FROM jobs WHERE id = ?');
        const out: JobRow[] = [];
        for (const id of ids) {
          const r = s.get(id) as JobRow | undefined;
          if (r) out.push(r);
        }
        return out;
      },

      async updateJobs(patches) {
        const s = st('UPDATE jobs SET state = ?, settled_at = ? WHERE id = ?');
        for (const p of patches) s.run(p.state, p.settled_at, p.id);
      },

      async insertTasks(rows: TaskRow[]) {
        // Rows go 100 to a statement: binding is per value either way, but a multi-row
        // INSERT saves most of the per-statement cost.
        // No RETURNING (it costs a third more per row): when a statement inserted fewer rows
        // than it carried, the ids tell which (an ignored row's new id is nowhere).
        const inserted = new Set<string>();
        let i = 0;
        for (; i + 100 <= rows.length; i += 100) {
          const values: unknown[] = [];
          for (let j = i; j < i + 100; j++) {
            const r = rows[j]!;
            for (const c of TASK_COLUMNS) values.push(r[c]);
          }
          const all = insert100.run(values).changes === 100;
          for (let j = i; j < i + 100; j++) {
            const id = rows[j]!.id;
            if (all || exists.get(id) !== undefined) inserted.add(id);
          }
        }
        for (; i < rows.length; i++) {
          const r = rows[i]!;
          if (insert1.run(TASK_COLUMNS.map((c) => r[c])).changes === 1) inserted.add(r.id);
        }
        return inserted;
      },

      async getTasks(ids: string[]) {
        const out: TaskCore[] = [];
        for (const id of ids) {
          const r = getTask.get(id);
          if (r) out.push(r);
        }
        return out;
      },

      async updateTasks(patches: TaskPatch[]) {
        for (const p of patches) {
          const cols = Object.keys(p).filter((k) => k !== 'id');
          if (cols.length === 0) continue;
          const sig = cols.join(',');
          let s = patchStatements.get(sig);
          if (!s) {
            s = st(`UPDATE tasks SET ${cols.map((c) => `${c} = ?`).join(', ')} WHERE id = ?`);
            patchStatements.set(sig, s);
          }
          const values = cols.map((c) => (p as Record<string, unknown>)[c]);
          s.run(...values, p.id);
        }
      },

      async findChildrenByKey(parentId: string, keys: string[]) {
        if (keys.length > 64) {
          // Many keys (a re-run of a big fan-out): one range scan beats a lookup per key.
          const want = new Set(keys);
          return keyedByParent.all(parentId).filter((r) => want.has(r.spawn_key!));
        }
        const out: KeyedRow[] = [];
        for (const k of keys) {
          const r = keyedRead.get(parentId, k);
          if (r) out.push(r);
        }
        return out;
      },

      async findByDedupKey(jobId: string, keys: string[]) {
        const s = st(`SELECT ${KEYED_COLUMNS} FROM tasks WHERE job_id = ? AND dedup_key = ?`);
        const out: KeyedRow[] = [];
        for (const k of keys) {
          const r = s.get(jobId, k) as KeyedRow | undefined;
          if (r) out.push(r);
        }
        return out;
      },

      async children(parentId: string) {
        return childrenRead.all(parentId);
      },

      async outcomes(ids: string[]) {
        const out: OutcomeRow[] = [];
        for (const id of ids) {
          const r = outcomeRead.get(id);
          if (r) out.push(r);
        }
        return out;
      },

      // Claims and completions read the rows first and then write them with plain UPDATEs:
      // measured alone, an UPDATE ... RETURNING costs SQLite about twice a SELECT plus an UPDATE.
      async claimByIds(q: ClaimByIdsQuery) {
        const rows: ClaimRow[] = [];
        for (const id of q.ids) {
          const r = claimRead.get(id);
          if (r?.state !== 'queued') continue;
          const timeout = r.timeout_ms ?? q.typeTimeouts[r.type] ?? null;
          r.state = 'running';
          r.attempt = Math.max(r.attempt, 1);
          r.run_token += 1;
          r.started_at = q.now;
          r.slots_held = q.slotsHeld[r.id] ?? 0;
          r.timeout_ms = timeout;
          // Capped by the attempt's timeout (plus grace): a hung handler loses its task when
          // its timeout passes, even while its worker keeps heartbeating.
          r.lease_expires_at =
            timeout === null ? q.now + q.leaseMs : Math.min(q.now + q.leaseMs, q.now + timeout + q.graceMs);
          claimWrite.run(
            r.attempt,
            r.run_token,
            r.started_at,
            r.slots_held,
            r.timeout_ms,
            r.lease_expires_at,
            q.workerId,
            r.id,
          );
          rows.push(r);
        }
        return rows;
      },

      async completeRunning(items, now) {
        const out: CompletedRow[] = [];
        for (const it of items) {
          const r = completeRead.get(it.id);
          if (r?.state !== 'running' || r.run_token !== it.token) continue;
          const settles = r.open_children === 0 && r.unobserved_failures === 0;
          r.state = settles ? 'succeeded' : 'completing';
          // Never before a child's settle time (see TaskRow.children_settled_at).
          completeWrite.run(
            it.result,
            now,
            r.state,
            settles ? Math.max(now, r.children_settled_at ?? now) : null,
            r.id,
          );
          out.push(r);
        }
        return out;
      },

      // LIMIT (SELECT ?), not LIMIT ?: SQLite prepares a statement again on each run when its
      // planner sees a bound LIMIT, which cost four times the scan; a subquery hides the value.
      async claimCandidates(q: ClaimQuery) {
        if (!q.withKeys) {
          // Index-only: the claim index covers every column read here.
          return st(
            `SELECT id, type, priority, run_at, NULL AS concurrency_key FROM tasks
             WHERE namespace = ? AND type = ? AND state = 'queued' AND run_at <= ?
             ORDER BY priority DESC, run_at, id LIMIT (SELECT ?)`,
          ).all(q.namespace, q.type, q.now, q.limit) as ClaimCandidate[];
        }
        return st(
          `SELECT id, type, priority, run_at, concurrency_key FROM tasks
           WHERE namespace = ? AND type = ? AND state = 'queued' AND run_at <= ?
             AND (concurrency_key IS NULL OR concurrency_key NOT IN (SELECT value FROM json_each(?)))
           ORDER BY priority DESC, run_at, id LIMIT (SELECT ?)`,
        ).all(q.namespace, q.type, q.now, JSON.stringify(q.excludeKeys), q.limit) as ClaimCandidate[];
      },

      async expiredLeases(now: number, limit: number) {
        return st(
          `SELECT ${CORE_COLUMNS} FROM tasks WHERE state = 'running' AND lease_expires_at < ? ORDER BY lease_expires_at LIMIT ?`,
        ).all(now, limit) as TaskCore[];
      },

      async unsettledSubtree(rootId: string) {
        return st(
          `WITH RECURSIVE sub(id) AS (
             SELECT id FROM tasks WHERE id = ?
             UNION ALL
             SELECT t.id FROM tasks t JOIN sub ON t.parent_id = sub.id
           )
           SELECT ${CORE_COLUMNS.split(', ')
             .map((c) => `t.${c}`)
             .join(', ')} FROM tasks t JOIN sub ON t.id = sub.id
           WHERE t.state NOT IN ('succeeded', 'failed', 'cancelled', 'skipped')`,
        ).all(rootId) as TaskCore[];
      },

      async insertDeps(rows: DepRow[]) {
        const s = st('INSERT OR IGNORE INTO task_deps (job_id, depends_on, task_id) VALUES (?, ?, ?)');
        for (const r of rows) s.run(r.job_id, r.depends_on, r.task_id);
      },

      async dependents(tasks) {
        // Most databases have no dependency edges at all: one look instead of one per task.
        if (tasks.length > 1 && st('SELECT 1 FROM task_deps LIMIT 1').get() === undefined) return [];
        const s = st('SELECT * FROM task_deps WHERE job_id = ? AND depends_on = ?');
        const out: DepRow[] = [];
        for (const t of tasks) out.push(...(s.all(t.job_id, t.id) as DepRow[]));
        return out;
      },

      async insertAttempts(rows: AttemptRow[]) {
        const s = st(
          'INSERT OR REPLACE INTO task_attempts (job_id, task_id, attempt, started_at, finished_at, error) VALUES (?, ?, ?, ?, ?, ?)',
        );
        for (const r of rows) s.run(r.job_id, r.task_id, r.attempt, r.started_at, r.finished_at, r.error);
      },

      async putStep(jobId: string, taskId: string, name: string, value: string) {
        st('INSERT OR REPLACE INTO task_steps (job_id, task_id, name, value) VALUES (?, ?, ?, ?)').run(
          jobId,
          taskId,
          name,
          value,
        );
      },

      async getSlots(namespace: string, keys: string[]) {
        const s = st('SELECT * FROM slots WHERE namespace = ? AND key = ?');
        const out: SlotRow[] = [];
        for (const key of [...new Set(keys)].sort()) {
          const r = s.get(namespace, key) as SlotRow | undefined;
          if (r) out.push(r);
        }
        return out;
      },

      async fullKeySlots(namespace: string) {
        // 'key;' is the first text after every 'key:...': a range of the primary key.
        const any = st(
          `SELECT 1 FROM slots WHERE namespace = ? AND key >= 'key:' AND key < 'key;' LIMIT 1`,
        ).get(namespace);
        if (!any) return { any: false, full: [] };
        const full = st(
          `SELECT key FROM slots INDEXED BY slots_full
           WHERE namespace = ? AND running >= max AND key >= 'key:' AND key < 'key;'`,
        ).all(namespace) as Array<{ key: string }>;
        return { any: true, full: full.map((r) => r.key) };
      },

      async dropUnusedKeySlots(limit: number) {
        return st(
          `DELETE FROM slots WHERE (namespace, key) IN (
             SELECT s.namespace, s.key FROM slots s
             WHERE s.key >= 'key:' AND s.key < 'key;' AND s.running = 0
               AND NOT EXISTS (SELECT 1 FROM tasks t INDEXED BY tasks_by_concurrency_key
                 WHERE t.namespace = s.namespace AND t.concurrency_key = s.key AND t.concurrency_key IS NOT NULL
                   AND t.state NOT IN ('succeeded', 'failed', 'cancelled', 'skipped'))
             LIMIT ?)`,
        ).run(limit).changes;
      },

      async setSlotMax(namespace: string, key: string, max: number | null) {
        if (max === null) {
          st('DELETE FROM slots WHERE namespace = ? AND key = ?').run(namespace, key);
          return;
        }
        st(
          `INSERT INTO slots (namespace, key, max, running) VALUES (?, ?, ?, 0)
           ON CONFLICT (namespace, key) DO UPDATE SET max = excluded.max`,
        ).run(namespace, key, max);
      },

      async adjustSlots(namespace: string, deltas: Map<string, number>) {
        const s = st('UPDATE slots SET running = max(0, running + ?) WHERE namespace = ? AND key = ?');
        for (const [key, d] of deltas) if (d !== 0) s.run(d, namespace, key);
      },

      async getTypeConfigs(keys: Array<{ namespace: string; type: string }>) {
        const s = st('SELECT * FROM type_configs WHERE namespace = ? AND type = ?');
        const out: TypeConfigRow[] = [];
        for (const k of keys) {
          const r = s.get(k.namespace, k.type) as TypeConfigRow | undefined;
          if (r) out.push(r);
        }
        return out;
      },

      async upsertTypeConfigs(rows: TypeConfigRow[]) {
        const s = st(
          `INSERT INTO type_configs (namespace, type, max_attempts, backoff_ms, max_backoff_ms, timeout_ms, concurrency)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (namespace, type) DO UPDATE SET max_attempts = excluded.max_attempts,
             backoff_ms = excluded.backoff_ms, max_backoff_ms = excluded.max_backoff_ms,
             timeout_ms = excluded.timeout_ms, concurrency = excluded.concurrency`,
        );
        for (const r of rows)
          s.run(
            r.namespace,
            r.type,
            r.max_attempts,
            r.backoff_ms,
            r.max_backoff_ms,
            r.timeout_ms,
            r.concurrency,
          );
      },
    };
    return tx;
  }

  // ---- read-only queries: no mutex needed for a single statement, but keep ordering with writes.

  private read<T>(fn: () => T): Promise<T> {
    return this.mutex.run(async () => fn());
  }

  getJob(id: string) {
    return this.read(() => this.st('SELECT * FROM jobs WHERE id = ?').get(id) as JobRow | undefined);
  }

  jobCounts(jobId: string) {
    return this.read(
      () =>
        this.st('SELECT state, count(*) AS n FROM tasks WHERE job_id = ? GROUP BY state').all(
          jobId,
        ) as Array<{
          state: TaskState;
          n: number;
        }>,
    );
  }

  listJobs(q: ListJobsQuery) {
    const where: string[] = [];
    const args: unknown[] = [];
    if (q.namespace !== undefined) {
      where.push('namespace = ?');
      args.push(q.namespace);
    }
    if (q.state) {
      where.push('state = ?');
      args.push(q.state);
    }
    if (q.type) {
      where.push('type = ?');
      args.push(q.type);
    }
    if (q.createdAfter !== undefined) {
      where.push('created_at >= ?');
      args.push(q.createdAfter);
    }
    if (q.createdBefore !== undefined) {
      where.push('created_at < ?');
      args.push(q.createdBefore);
    }
    if (q.before) {
      where.push('id < ?');
      args.push(q.before);
    }
    const sql = `SELECT * FROM jobs ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ?`;
    return this.read(() => this.st(sql).all(...args, q.limit) as JobRow[]);
  }

  getTask(id: string) {
    return this.read(() => this.st('SELECT * FROM tasks WHERE id = ?').get(id) as TaskRow | undefined);
  }

  attempts(jobId: string, taskId: string) {
    return this.read(
      () =>
        this.st('SELECT * FROM task_attempts WHERE job_id = ? AND task_id = ? ORDER BY attempt').all(
          jobId,
          taskId,
        ) as AttemptRow[],
    );
  }

  taskPage(jobId: string, after: string | null, limit: number): Promise<TaskPage> {
    return this.read(() => {
      const rows = this.st('SELECT * FROM tasks WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?').all(
        jobId,
        after ?? '',
        limit + 1,
      ) as TaskRow[];
      const more = rows.length > limit;
      const tasks = more ? rows.slice(0, limit) : rows;
      return { tasks, next: more ? tasks[tasks.length - 1]!.id : null };
    });
  }

  nextRunAt(namespace: string, types: string[]) {
    return this.read(() => {
      let best: number | null = null;
      const s = this.st(
        `SELECT min(run_at) AS t FROM tasks WHERE namespace = ? AND type = ? AND state = 'queued'`,
      );
      for (const t of types) {
        const r = s.get(namespace, t) as { t: number | null };
        if (r.t !== null && (best === null || r.t < best)) best = r.t;
      }
      return best;
    });
  }

  getStep(jobId: string, taskId: string, name: string) {
    return this.read(() => {
      const r = this.st('SELECT value FROM task_steps WHERE job_id = ? AND task_id = ? AND name = ?').get(
        jobId,
        taskId,
        name,
      ) as { value: string } | undefined;
      return r?.value;
    });
  }

  typeConfigs(namespace: string) {
    return this.read(
      () => this.st('SELECT * FROM type_configs WHERE namespace = ?').all(namespace) as TypeConfigRow[],
    );
  }

  countTasks() {
    return this.read(
      () =>
        this.st(
          `SELECT namespace, type, 'queued' AS state, count(*) AS n FROM tasks WHERE state = 'queued' GROUP BY namespace, type
           UNION ALL
           SELECT namespace, type, 'running' AS state, count(*) AS n FROM tasks WHERE state = 'running' GROUP BY namespace, type`,
        ).all() as Array<{ namespace: string; type: string; state: 'queued' | 'running'; n: number }>,
    );
  }

  queuedByType(namespace: string) {
    return this.read(
      () =>
        this.st(
          `SELECT type, count(*) AS n FROM tasks WHERE namespace = ? AND state = 'queued' GROUP BY type`,
        ).all(namespace) as Array<{ type: string; n: number }>,
    );
  }

  touchWorker(id: string, namespace: string, types: string[], now: number) {
    return this.read(() => {
      this.st(
        `INSERT INTO workers (id, namespace, types, last_seen) VALUES (?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET types = excluded.types, last_seen = excluded.last_seen`,
      ).run(id, namespace, JSON.stringify(types), now);
    });
  }

  removeWorker(id: string) {
    return this.read(() => {
      this.st('DELETE FROM workers WHERE id = ?').run(id);
    });
  }

  liveTypes(namespace: string, since: number) {
    return this.read(() => {
      const rows = this.st('SELECT types FROM workers WHERE namespace = ? AND last_seen >= ?').all(
        namespace,
        since,
      ) as Array<{ types: string }>;
      const set = new Set<string>();
      for (const r of rows) for (const t of JSON.parse(r.types) as string[]) set.add(t);
      return [...set].sort();
    });
  }

  purgeJobs(namespace: string, before: number, limit: number) {
    return this.transaction(async () => {
      const ids = (
        this.st(
          `SELECT id FROM jobs WHERE settled_at IS NOT NULL AND settled_at < ? AND namespace = ?
           ORDER BY settled_at LIMIT ?`,
        ).all(before, namespace, limit) as Array<{ id: string }>
      ).map((r) => r.id);
      for (const part of chunks(ids)) {
        const list = JSON.stringify(part);
        for (const table of ['tasks', 'task_deps', 'task_attempts', 'task_steps']) {
          this.st(`DELETE FROM ${table} WHERE job_id IN (SELECT value FROM json_each(?))`).run(list);
        }
        this.st('DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?))').run(list);
      }
      return ids.length;
    });
  }

  async close(): Promise<void> {
    await this.mutex.run(async () => {
      this.db.close();
    });
  }
}
