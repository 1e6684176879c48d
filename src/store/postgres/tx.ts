/**
 * The StoreTx of the Postgres store: the operations the engine runs inside one transaction,
 * on the transaction's client. Each is one statement (one round trip) whatever the batch size.
 */
import type pg from 'pg';
import { ConflictError } from '../../core/errors.js';
import type {
  AttemptRow,
  ClaimByIdsQuery,
  ClaimCandidate,
  ClaimQuery,
  ClaimReadyQuery,
  ClaimRow,
  CompletedRow,
  DepRow,
  JobRow,
  KeyedRow,
  OutcomeRow,
  SlotRow,
  StoreTx,
  TaskCore,
  TaskPatch,
  TaskRow,
  TypeConfigRow,
} from '../store.js';
import { isNullable, TASK_COLUMNS, type TaskColumn } from './columns.js';
import { type Queries, updateTasksSql } from './queries.js';
import { readyPayload } from './ready.js';

/** Shared by the transactions of one store: statement texts, and the UPDATEs built so far. */
export interface TxContext {
  schema: string;
  q: Queries;
  updates: Map<string, string>;
  /** The schema's wake-up channel, and this store's mark on what it sends (see ready.ts). */
  channel: string;
  origin: string;
  /** Type parsers to name on every query: set when the client is the caller's, not the pool's. */
  types?: pg.CustomTypesConfig;
  /** Names of the prepared statements, by text (the same on every connection of the pool). */
  names: Map<string, string>;
}

export class PostgresTx implements StoreTx {
  /**
   * Set when insertTasks skipped a row because a concurrent transaction had just taken its
   * key. The engine then gives up on the operation; the store runs it again, and this time
   * it finds the other transaction's task (as if the two had run one after the other).
   */
  lostKeyRace = false;
  /** Row addresses of the claim candidates this transaction holds locked, by id. */
  private readonly candidateTids = new Map<string, string>();
  /** Payloads of the wake-ups to send on commit (see notifyReady). */
  private readonly notices: string[] = [];

  /**
   * Writes whose answer nobody needs (updates of tasks, jobs, slots; attempts), rendered with
   * their values as literals: they go out with the next statement, or with COMMIT, in one
   * round trip (a simple multi-statement query), in the order they were made.
   */
  private readonly pending: string[] = [];

  /** While `together` gathers its statements: each, to be sent with the others. */
  private gathering:
    | Array<{ sql: string; done: (r: pg.QueryResult) => void; fail: (e: unknown) => void }>
    | undefined;

  /** Ids of the task rows this transaction locked (for a caller's transaction: see PostgresStore). */
  readonly locked = new Set<string>();

  constructor(
    private readonly client: pg.ClientBase,
    private readonly ctx: TxContext,
    /** The database's time when the transaction began; undefined until `begin` has gone out. */
    private at: number | undefined,
    private readonly callers: {
      /** The caller's client this transaction runs on, if any. */
      holder?: pg.ClientBase;
      /** The open caller's transaction of this process holding a task's row, if any. */
      holding(taskId: string): pg.ClientBase | undefined;
    },
    /**
     * BEGIN, not sent yet: it goes out with the first statement (one round trip fewer), and
     * ends with the database's time (its third result), which `now` returns from then on.
     */
    begin?: string,
  ) {
    if (begin !== undefined) this.pending.push(begin);
  }

  /**
   * Refuses a call about a task whose row an open transaction of the caller holds, unless
   * this is that transaction: it would wait for the caller, who waits for it.
   */
  assertNotHeldByCaller(taskId: string): void {
    const holder = this.callers.holding(taskId);
    if (holder && holder !== this.callers.holder) throw callerHoldsError(taskId);
  }

  private async rows<R>(text: string, values: unknown[], prepared = false): Promise<R[]> {
    return (await this.query(text, values, prepared)).rows as R[];
  }

  /**
   * One statement, after the pending writes. A caller's own client parses bigints as strings
   * by default: its queries say how to parse them (as numbers, like the store's pool),
   * whatever the client's settings.
   *
   * With pending writes, the statement rides with them, its values inlined. Otherwise, when
   * `prepared` (a statement of one task, whose plan does not depend on a batch's size), it is
   * a named prepared statement of the connection: planned once, not on every call.
   */
  private async query(text: string, values: unknown[], prepared = false): Promise<pg.QueryResult> {
    const gathering = this.gathering;
    if (gathering)
      return new Promise((done, fail) =>
        gathering.push({ sql: inline(this.client, text, values), done, fail }),
      );
    if (this.pending.length) return (await this.send([inline(this.client, text, values)]))[0]!;
    const types = this.ctx.types;
    // Not on a caller's connection: its prepared statements are the caller's business.
    if (prepared && !types) {
      let name = this.ctx.names.get(text);
      if (name === undefined) {
        name = `dynatask_${this.ctx.names.size}`;
        this.ctx.names.set(text, name);
      }
      return this.client.query({ name, text, values });
    }
    return types ? this.client.query({ text, values, types }) : this.client.query(text, values);
  }

  /**
   * The operations, each one statement, in one round trip (with the pending writes): a simple
   * query of their statements, values inlined, which Postgres runs one after the other, each
   * with its own snapshot, as if they had been awaited in turn. None may need another's answer.
   */
  async together<T extends unknown[]>(ops: { [K in keyof T]: () => Promise<T[K]> }): Promise<T> {
    const gathered: NonNullable<typeof this.gathering> = [];
    this.gathering = gathered;
    let results: Array<Promise<unknown>>;
    try {
      results = ops.map((op) => op());
    } finally {
      this.gathering = undefined;
    }
    if (gathered.length) {
      try {
        const out = await this.send(gathered.map((g) => g.sql));
        for (const [i, g] of gathered.entries()) g.done(out[i]!);
      } catch (e) {
        for (const g of gathered) g.fail(e);
      }
    }
    return (await Promise.all(results)) as T;
  }

  /**
   * The pending writes (and BEGIN, if not sent yet), then these statements, in one simple
   * query; returns the results of these statements.
   */
  private async send(statements: string[]): Promise<pg.QueryResult[]> {
    const beginning = this.at === undefined;
    const out = await this.simple([...this.pending.splice(0), ...statements].join(';\n'));
    const list = Array.isArray(out) ? out : [out];
    if (beginning) this.at = (list[2]!.rows[0] as { now: number }).now;
    return list.slice(list.length - statements.length);
  }

  /** A simple query (no parameters; several statements allowed): one result, or one per statement. */
  private simple(text: string): Promise<pg.QueryResult | pg.QueryResult[]> {
    const types = this.ctx.types;
    return (types ? this.client.query({ text, types }) : this.client.query(text)) as Promise<
      pg.QueryResult | pg.QueryResult[]
    >;
  }

  /** A write whose answer is not needed: sent with the next statement, or with COMMIT. */
  private defer(text: string, values: unknown[]): void {
    this.pending.push(inline(this.client, text, values));
  }

  /** The database's clock, not this machine's: processes on machines whose clocks differ agree on leases and run times. */
  now(): number {
    if (this.at === undefined)
      throw new Error('dynatask: the transaction has not read the clock yet (its first statement reads it)');
    return this.at;
  }

  async insertJobs(rows: JobRow[]): Promise<void> {
    if (!rows.length) return;
    // A job id is the caller's idempotency key: one a concurrent transaction has just taken
    // means running this one again, which then finds that job.
    const inserted = await this.query(
      this.ctx.q.insertJobs,
      [
        rows.map((r) => r.id),
        rows.map((r) => r.namespace),
        rows.map((r) => r.type),
        rows.map((r) => r.root_task_id),
        rows.map((r) => r.state),
        rows.map((r) => r.created_at),
        rows.map((r) => r.settled_at),
      ],
      rows.length === 1,
    );
    if ((inserted.rowCount ?? 0) < rows.length) {
      this.lostKeyRace = true;
      throw new Error('a concurrent submit took the same job id');
    }
  }

  async getJobs(ids: string[]): Promise<JobRow[]> {
    if (!ids.length) return [];
    return this.rows(this.ctx.q.getJobs, [ids], ids.length === 1);
  }

  async updateJobs(
    patches: Array<{ id: string; state: JobRow['state']; settled_at: number | null }>,
  ): Promise<void> {
    if (!patches.length) return;
    this.defer(this.ctx.q.updateJobs, [
      patches.map((p) => p.id),
      patches.map((p) => p.state),
      patches.map((p) => p.settled_at),
    ]);
  }

  async insertTasks(rows: TaskRow[]): Promise<Set<string>> {
    if (!rows.length) return new Set();
    const inserted = await this.rows<{ id: string }>(
      this.ctx.q.insertTasks,
      TASK_COLUMNS.map((c) => rows.map((r) => r[c])),
      rows.length === 1,
    );
    if (inserted.length < rows.length) this.lostKeyRace = true;
    return new Set(inserted.map((r) => r.id));
  }

  async getTasks(ids: string[], opts?: { skipLocked?: boolean }): Promise<TaskCore[]> {
    if (!ids.length) return [];
    const rows = await this.rows<TaskCore>(
      opts?.skipLocked ? this.ctx.q.getTasksSkipLocked : this.ctx.q.getTasks,
      [ids],
      ids.length === 1,
    );
    if (this.callers.holder) for (const r of rows) this.locked.add(r.id);
    return rows;
  }

  /**
   * All patches in one UPDATE. Patches of one id are merged first, later columns winning, as
   * if applied in order (one statement cannot update a row twice).
   */
  async updateTasks(patches: TaskPatch[]): Promise<void> {
    const byId = new Map<string, Record<string, unknown>>();
    for (const p of patches) {
      const merged = byId.get(p.id) ?? {};
      for (const [k, v] of Object.entries(p)) if (k !== 'id' && v !== undefined) merged[k] = v;
      byId.set(p.id, merged);
    }
    for (const [id, p] of byId) if (Object.keys(p).length === 0) byId.delete(id);
    if (!byId.size) return;
    const merged = [...byId.values()];
    const names = [...new Set(merged.flatMap((p) => Object.keys(p)))].sort() as TaskColumn[];
    const columns = names.map((name) => ({ name, partial: merged.some((p) => !(name in p)) }));
    const key = columns.map((c) => (c.partial ? `${c.name}?` : c.name)).join(',');
    let sql = this.ctx.updates.get(key);
    if (!sql) {
      sql = updateTasksSql(this.ctx.schema, columns);
      this.ctx.updates.set(key, sql);
    }
    const values: unknown[] = [[...byId.keys()]];
    for (const { name, partial } of columns) {
      values.push(merged.map((p) => p[name] ?? null));
      if (partial && isNullable(name)) values.push(merged.map((p) => name in p));
    }
    this.defer(sql, values);
  }

  async findChildrenByKey(parentId: string, keys: string[]): Promise<KeyedRow[]> {
    if (!keys.length) return [];
    return this.rows(this.ctx.q.findChildrenByKey, [parentId, keys], keys.length === 1);
  }

  async findByDedupKey(jobId: string, keys: string[]): Promise<KeyedRow[]> {
    if (!keys.length) return [];
    return this.rows(this.ctx.q.findByDedupKey, [jobId, keys]);
  }

  async children(parentId: string): Promise<OutcomeRow[]> {
    return this.rows(this.ctx.q.children, [parentId], true);
  }

  async outcomes(ids: string[]): Promise<OutcomeRow[]> {
    if (!ids.length) return [];
    return this.rows(this.ctx.q.outcomes, [ids], ids.length === 1);
  }

  async claimCandidates(q: ClaimQuery): Promise<ClaimCandidate[]> {
    const rows = await this.rows<ClaimCandidate & { ctid?: string }>(this.ctx.q.claimCandidates, [
      q.namespace,
      q.type,
      q.now,
      q.limit,
      q.excludeKeys,
    ]);
    for (const r of rows) {
      this.candidateTids.set(r.id, r.ctid!);
      delete r.ctid;
    }
    return rows;
  }

  async claimReady(q: ClaimReadyQuery): Promise<ClaimRow[] | null> {
    // Prepared: its plan (each type's best due tasks, by the claim index) is the same for any limit.
    const rows = await this.rows<ClaimedRow>(
      this.ctx.q.claimReady,
      [
        q.namespace,
        q.types,
        q.now,
        q.limit,
        q.leaseMs,
        q.graceMs,
        JSON.stringify(q.typeTimeouts),
        q.workerId,
      ],
      true,
    );
    return claimedRows(rows)?.rows ?? null;
  }

  /**
   * Claims candidates this transaction holds, found by their physical row address (ctid):
   * their locks keep it from changing. A join by id would be planned from the statistics,
   * which lag behind a queue that just grew, and could scan every queued task per claim.
   */
  async claimByIds(q: ClaimByIdsQuery): Promise<ClaimRow[]> {
    if (!q.ids.length) return [];
    const tids = q.ids.map((id) => {
      const tid = this.candidateTids.get(id);
      if (tid === undefined)
        throw new Error(`claimByIds: task ${id} was not a candidate of this transaction`);
      return tid;
    });
    return this.rows(this.ctx.q.claimByIds, [
      tids,
      q.ids.map((id) => q.slotsHeld[id] ?? 0),
      q.now,
      q.leaseMs,
      q.graceMs,
      JSON.stringify(q.typeTimeouts),
      q.workerId,
    ]);
  }

  async completeRunning(
    items: Array<{ id: string; token: number; result: string | null }>,
    now: number,
  ): Promise<CompletedRow[]> {
    if (!items.length) return [];
    return this.rows(
      this.ctx.q.completeRunning,
      [items.map((i) => i.id), items.map((i) => i.token), items.map((i) => i.result), now],
      items.length === 1,
    );
  }

  async expiredLeases(now: number, limit: number): Promise<TaskCore[]> {
    return this.rows(this.ctx.q.expiredLeases, [now, limit]);
  }

  /**
   * One statement, read again only if it missed something: its snapshot may predate a spawn
   * that committed while it waited for a parent's lock. Each unsettled task counts its
   * unsettled children (open_children), so a result is complete when every task in it has
   * that many children in it. Once the statement has locked a parent, no child can be
   * spawned under it, so a second read (a new snapshot) finds the rest.
   */
  async unsettledSubtree(rootId: string): Promise<TaskCore[]> {
    for (let read = 1; ; read++) {
      const rows = await this.rows<TaskCore>(this.ctx.q.unsettledSubtree, [rootId]);
      const found = new Map<string, number>();
      for (const r of rows)
        if (r.parent_id !== null) found.set(r.parent_id, (found.get(r.parent_id) ?? 0) + 1);
      if (read >= 5 || rows.every((r) => (found.get(r.id) ?? 0) === r.open_children)) return rows;
    }
  }

  async insertDeps(rows: DepRow[]): Promise<void> {
    if (!rows.length) return;
    await this.query(this.ctx.q.insertDeps, [
      rows.map((r) => r.job_id),
      rows.map((r) => r.depends_on),
      rows.map((r) => r.task_id),
    ]);
  }

  async dependents(tasks: Array<{ job_id: string; id: string }>): Promise<DepRow[]> {
    if (!tasks.length) return [];
    return this.rows(
      this.ctx.q.dependents,
      [tasks.map((t) => t.job_id), tasks.map((t) => t.id)],
      tasks.length === 1,
    );
  }

  async insertAttempts(rows: AttemptRow[]): Promise<void> {
    // One statement cannot upsert a row twice: the last of a repeated attempt wins, as in order.
    const last = new Map(rows.map((r) => [`${r.job_id}\0${r.task_id}\0${r.attempt}`, r]));
    if (!last.size) return;
    const list = [...last.values()];
    this.defer(this.ctx.q.insertAttempts, [
      list.map((r) => r.job_id),
      list.map((r) => r.task_id),
      list.map((r) => r.attempt),
      list.map((r) => r.started_at),
      list.map((r) => r.finished_at),
      list.map((r) => r.error),
    ]);
  }

  async putStep(jobId: string, taskId: string, name: string, value: string): Promise<void> {
    await this.query(this.ctx.q.putStep, [jobId, taskId, name, value]);
  }

  async getSlots(namespace: string, keys: string[]): Promise<SlotRow[]> {
    if (!keys.length) return [];
    return this.rows<SlotRow>(this.ctx.q.getSlots, [namespace, keys]);
  }

  async fullKeySlots(namespace: string): Promise<{ any: boolean; full: string[] }> {
    const [r] = await this.rows<{ any: boolean; full: string[] }>(this.ctx.q.fullKeySlots, [namespace]);
    return { any: r?.any ?? false, full: r?.full ?? [] };
  }

  async dropUnusedKeySlots(limit: number): Promise<number> {
    const locked = await this.rows<{ namespace: string; key: string }>(this.ctx.q.unusedKeySlots, [limit]);
    if (!locked.length) return 0;
    const r = await this.query(this.ctx.q.dropKeySlots, [
      locked.map((l) => l.namespace),
      locked.map((l) => l.key),
    ]);
    return r.rowCount ?? 0;
  }

  async setSlotMax(namespace: string, key: string, max: number | null): Promise<void> {
    if (max === null) await this.query(this.ctx.q.deleteSlot, [namespace, key]);
    else await this.query(this.ctx.q.setSlotMax, [namespace, key, max]);
  }

  async adjustSlots(namespace: string, deltas: Map<string, number>): Promise<void> {
    const changed = [...deltas].filter(([, d]) => d !== 0);
    if (!changed.length) return;
    this.defer(this.ctx.q.adjustSlots, [namespace, changed.map(([k]) => k), changed.map(([, d]) => d)]);
  }

  /** Kept for commitSql: Postgres delivers a NOTIFY on commit, and drops it on rollback. */
  async notifyReady(namespace: string, types: string[]): Promise<void> {
    this.notices.push(readyPayload(this.ctx.origin, namespace, types));
  }

  /**
   * Sends the pending writes and the notices inside the transaction (a caller's own, which
   * the caller commits): Postgres holds the notices until that commit, and drops them on rollback.
   */
  async sendNotices(): Promise<void> {
    const sql = this.tail();
    if (sql.length) await this.simple(sql.join(';\n'));
  }

  /** COMMIT, preceded by the pending writes and the notices: one round trip (a simple multi-statement query). */
  commitSql(): string {
    return [...this.tail(), 'COMMIT'].join(';\n');
  }

  /** What is left to send before the transaction ends: the pending writes, then the notices. */
  private tail(): string[] {
    const channel = this.client.escapeLiteral(this.ctx.channel);
    return [
      ...this.pending.splice(0),
      ...this.notices.splice(0).map((p) => `SELECT pg_notify(${channel}, ${this.client.escapeLiteral(p)})`),
    ];
  }

  async getTypeConfigs(keys: Array<{ namespace: string; type: string }>): Promise<TypeConfigRow[]> {
    if (!keys.length) return [];
    return this.rows(this.ctx.q.getTypeConfigs, [keys.map((k) => k.namespace), keys.map((k) => k.type)]);
  }

  async upsertTypeConfigs(rows: TypeConfigRow[]): Promise<void> {
    const last = new Map(rows.map((r) => [`${r.namespace}\0${r.type}`, r]));
    if (!last.size) return;
    const list = [...last.values()];
    await this.query(this.ctx.q.upsertTypeConfigs, [
      list.map((r) => r.namespace),
      list.map((r) => r.type),
      list.map((r) => r.max_attempts),
      list.map((r) => r.backoff_ms),
      list.map((r) => r.max_backoff_ms),
      list.map((r) => r.timeout_ms),
      list.map((r) => r.concurrency),
    ]);
  }
}

/**
 * A statement with its values in place of its parameters, as literals: the text Postgres
 * would parse from each parameter, quoted (every parameter of these statements is cast, or
 * compared with a column, so an untyped literal takes the type the parameter would).
 */
export function inline(client: pg.ClientBase, text: string, values: unknown[]): string {
  return text.replace(/\$(\d+)/g, (_, n: string) => literal(client, values[Number(n) - 1]));
}

function literal(client: pg.ClientBase, v: unknown): string {
  if (v === null || v === undefined) return 'NULL';
  if (Array.isArray(v)) {
    const items = v.map((e) =>
      e === null || e === undefined ? 'NULL' : `"${String(e).replace(/[\\"]/g, '\\$&')}"`,
    );
    return client.escapeLiteral(`{${items.join(',')}}`);
  }
  if (typeof v === 'number' && !Number.isFinite(v)) throw new Error(`not a finite number: ${v}`);
  return client.escapeLiteral(String(v));
}

/** A row of the one-statement claim (queries.ts, claimReady). */
export type ClaimedRow = ClaimRow & { _limited: boolean; _now: number };

/** The rows claimed, with the time the claim used; null when the namespace has limits. */
export function claimedRows(rows: ClaimedRow[]): { now: number; rows: ClaimRow[] } | null {
  if (rows[0]?._limited) return null;
  const claimed: ClaimRow[] = [];
  for (const r of rows) {
    if (r.id === null) continue; // the row of NULLs: nothing claimed
    const { _limited, _now, ...row } = r;
    claimed.push(row);
  }
  return { now: rows[0]!._now, rows: claimed };
}

/** The refusal of a call that would wait for a caller's own open transaction. */
export function callerHoldsError(taskId: string): ConflictError {
  return new ConflictError(
    `task ${taskId} is locked by the transaction passed as options.transaction (to ctx.spawn), which has not committed: commit or roll it back before other calls about this task (ctx.step, ctx.progress, ctx.spawn without it, ctx.waitAll), or pass it to ctx.spawn again`,
  );
}
