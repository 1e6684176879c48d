/**
 * Every SQL statement of the Postgres store, one named constant per store operation, so the
 * SQL reads in one place and each operation is one round trip. Column lists come from
 * columns.ts (checked against the row types); `s` is the quoted schema name.
 *
 * Batches bind one array per column and expand them with `unnest(...)`, or match with
 * `= ANY($1)`: a batch of any size is one statement with a fixed text, never one per row.
 */
import {
  arrayType,
  CLAIM_COLUMNS,
  COMPLETED_COLUMNS,
  CORE_COLUMNS,
  isNullable,
  KEYED_COLUMNS,
  list,
  OUTCOME_COLUMNS,
  TASK_COLUMNS,
  type TaskColumn,
} from './columns.js';

const SETTLED = `('succeeded', 'failed', 'cancelled', 'skipped')`;

/**
 * The database's clock in ms. The queries outside transactions take times on the caller's
 * clock as ages (now minus the time) and apply them to this, so that processes whose clocks
 * differ agree with each other and with the rows' times, which are all the database's.
 */
export const DB_NOW_MS = 'floor(extract(epoch FROM clock_timestamp()) * 1000)::int8';

/** A parent's job id, so that lookups of its children use the job-first keys. */
const jobOfTask = (s: string, param: string) => `(SELECT job_id FROM ${s}.tasks WHERE id = ${param} LIMIT 1)`;
/**
 * Rows whose `column` is one of the keys in `param`, through the key indexes of migration 004:
 * keys of up to 2,048 bytes by the plain partial index, longer ones by their hash (computed
 * for the long keys only). Each branch repeats its index's predicate so that the planner uses it.
 */
const byKey = (s: string, select: string, where: string, column: string, param: string) =>
  `${select} WHERE ${where} AND ${column} = ANY(${param}::text[]) AND octet_length(${column}) <= 2048
   UNION ALL
   ${select} WHERE ${where} AND octet_length(${column}) > 2048
     AND ${s}.key_hash(${column}) = ANY(ARRAY(SELECT ${s}.key_hash(k) FROM unnest(${param}::text[]) AS k
                                             WHERE octet_length(k) > 2048))
     AND ${column} = ANY(${param}::text[])`;

export function queries(s: string) {
  return {
    // ------------------------------------------------------------------ jobs

    /** $1..$7: arrays of id, namespace, type, root_task_id, state, created_at, settled_at. */
    insertJobs: `INSERT INTO ${s}.jobs (id, namespace, type, root_task_id, state, created_at, settled_at)
      SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[])
      ON CONFLICT (id) DO NOTHING`,

    /** $1: ids. */
    getJobs: `SELECT * FROM ${s}.jobs WHERE id = ANY($1::text[])`,

    /** $1..$3: arrays of id, state, settled_at. */
    updateJobs: `UPDATE ${s}.jobs AS j SET state = u.state, settled_at = u.settled_at
      FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(id, state, settled_at)
      WHERE j.id = u.id`,

    /** $1: id. */
    getJob: `SELECT * FROM ${s}.jobs WHERE id = $1`,

    /** $1: job id. Task counts by state. */
    jobCounts: `SELECT state, count(*)::integer AS n FROM ${s}.tasks WHERE job_id = $1 GROUP BY state`,

    // ------------------------------------------------------------------ tasks

    /**
     * One array per task column ($1.. in TASK_COLUMNS order). Rows whose spawn key or dedup
     * key is taken are skipped (also when a concurrent transaction took it first).
     */
    insertTasks: `INSERT INTO ${s}.tasks (${list(TASK_COLUMNS)})
      SELECT * FROM unnest(${TASK_COLUMNS.map((c, i) => `$${i + 1}::${arrayType(c)}`).join(', ')})
      ON CONFLICT DO NOTHING
      RETURNING id`,

    /**
     * $1: ids. Locks the rows, in id order: transactions that lock overlapping sets take the
     * locks in the same order, so they queue instead of deadlocking.
     */
    getTasks: `SELECT ${list(CORE_COLUMNS)} FROM ${s}.tasks WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE`,

    /** $1: ids. Locks the rows no other transaction holds; leaves the others out. */
    getTasksSkipLocked: `SELECT ${list(CORE_COLUMNS)} FROM ${s}.tasks WHERE id = ANY($1::text[])
      ORDER BY id FOR UPDATE SKIP LOCKED`,

    /** $1: id. The whole row, for reading. */
    getTask: `SELECT * FROM ${s}.tasks WHERE id = $1`,

    /** $1: parent id, $2: spawn keys. The index holds the keys' hashes (migration 004). */
    findChildrenByKey: byKey(
      s,
      `SELECT ${list(KEYED_COLUMNS)} FROM ${s}.tasks`,
      `job_id = ${jobOfTask(s, '$1')} AND parent_id = $1`,
      'spawn_key',
      '$2',
    ),

    /** $1: job id, $2: dedup keys. */
    findByDedupKey: byKey(
      s,
      `SELECT ${list(KEYED_COLUMNS)} FROM ${s}.tasks`,
      'job_id = $1',
      'dedup_key',
      '$2',
    ),

    /** $1: parent id. Its children with their outcomes, in creation order. */
    children: `SELECT ${list(OUTCOME_COLUMNS)} FROM ${s}.tasks
      WHERE job_id = ${jobOfTask(s, '$1')} AND parent_id = $1 ORDER BY id`,

    /** $1: ids. */
    outcomes: `SELECT ${list(OUTCOME_COLUMNS)} FROM ${s}.tasks WHERE id = ANY($1::text[])`,

    /**
     * $1: items' ids, $2: their attempt tokens, $3: their results, $4: now. Guarded: only rows
     * still running under that token change. RETURNING gives the values after the update. A
     * task settling here never settles before its children (TaskRow.children_settled_at).
     */
    completeRunning: `UPDATE ${s}.tasks AS t SET
        result = u.result, error = NULL, finished_at = $4, handler_done = 1, lease_expires_at = NULL,
        wait_mode = 0,
        state = CASE WHEN t.open_children = 0 AND t.unobserved_failures = 0 THEN 'succeeded' ELSE 'completing' END,
        settled_at = CASE WHEN t.open_children = 0 AND t.unobserved_failures = 0
          THEN GREATEST($4::bigint, t.children_settled_at) END
      FROM unnest($1::text[], $2::integer[], $3::text[]) AS u(id, token, result)
      WHERE t.id = u.id AND t.run_token = u.token AND t.state = 'running'
      RETURNING ${list(COMPLETED_COLUMNS, 't')}`,

    /**
     * $1: namespace, $2: type, $3: now, $4: limit, $5: full keys. Queued tasks that are due,
     * best first. The claim then locks the slots of their keys (getSlots) and reads them fresh.
     * SKIP LOCKED: a task another claimer holds is passed over, not waited for; the locks
     * taken here keep the chosen rows queued until claimByIds updates them.
     */
    claimCandidates: `SELECT id, type, priority, run_at, concurrency_key, ctid::text AS ctid FROM ${s}.tasks
      WHERE namespace = $1 AND type = $2 AND state = 'queued' AND run_at <= $3
        AND (concurrency_key IS NULL OR NOT concurrency_key = ANY($5::text[]))
      ORDER BY priority DESC, run_at, id
      LIMIT $4
      FOR UPDATE SKIP LOCKED`,

    /**
     * $1: row addresses (ctid) of candidates this transaction holds locked, $2: slot bits held
     * per row, $3: now, $4: lease ms, $5: grace ms, $6: default timeout per type (a JSON
     * object), $7: the claiming worker's id. Claims them: running, token bumped, leased. The lease is capped by the attempt's
     * timeout (plus grace), so a hung handler loses its task when its timeout passes, even
     * while its worker keeps heartbeating.
     *
     * Found by ctid alone (a TID scan, whatever the statistics say): the candidates' locks keep
     * them queued and in place. Joining by id, or testing `state = 'queued'`, lets the planner
     * pick the partial claim index from statistics that lag behind a queue that just grew, and
     * scan every queued task on each claim.
     */
    claimByIds: `UPDATE ${s}.tasks AS t SET
        state = 'running', attempt = greatest(t.attempt, 1), run_token = t.run_token + 1,
        started_at = $3::bigint, slots_held = u.held, worker_id = $7::text,
        timeout_ms = coalesce(t.timeout_ms, ($6::jsonb ->> t.type)::bigint),
        lease_expires_at = CASE WHEN coalesce(t.timeout_ms, ($6::jsonb ->> t.type)::bigint) IS NULL
          THEN $3::bigint + $4::bigint
          ELSE least($3::bigint + $4::bigint, $3::bigint + coalesce(t.timeout_ms, ($6::jsonb ->> t.type)::bigint) + $5::bigint) END
      FROM unnest($1::tid[], $2::integer[]) AS u(tid, held)
      WHERE t.ctid = u.tid AND t.ctid = ANY($1::tid[])
      RETURNING ${list(CLAIM_COLUMNS, 't')}`,

    /**
     * $1: namespace, $2: types, $3: now, $4: limit, $5: lease ms, $6: grace ms, $7: default
     * timeout per type (a JSON object), $8: the claiming worker's id. $3 null: the statement's
     * own time, on the database's clock (a claim outside a transaction; `_now` returns it).
     * The whole claim in one statement, for a namespace
     * without concurrency limits (no slot rows; a limit always has one): the best due tasks
     * of each type, locked (SKIP LOCKED), the best `limit` of those claimed. Claims nothing
     * when the namespace has slots: the caller then takes the general path (getSlots,
     * claimCandidates, claimByIds). Every row says whether it has (`_limited`); when nothing
     * is claimed, one row of NULLs carries it, so that "nothing due" is final.
     */
    claimReady: `WITH n AS (SELECT coalesce($3::bigint, floor(extract(epoch FROM statement_timestamp()) * 1000)::int8) AS now),
      lim AS (SELECT EXISTS (SELECT 1 FROM ${s}.slots WHERE namespace = $1) AS limited),
      c AS (
        SELECT x.ctid FROM unnest($2::text[]) AS ty(type)
        CROSS JOIN LATERAL (
          SELECT t.ctid, t.priority, t.run_at, t.id FROM ${s}.tasks AS t
          WHERE t.namespace = $1 AND t.type = ty.type AND t.state = 'queued' AND t.run_at <= (SELECT now FROM n)
            AND NOT (SELECT limited FROM lim)
          ORDER BY t.priority DESC, t.run_at, t.id
          LIMIT $4
          FOR UPDATE SKIP LOCKED
        ) AS x
        ORDER BY x.priority DESC, x.run_at, x.id
        LIMIT $4
      ),
      u AS (UPDATE ${s}.tasks AS t SET
        state = 'running', attempt = greatest(t.attempt, 1), run_token = t.run_token + 1,
        started_at = n.now, slots_held = 0, worker_id = $8::text,
        timeout_ms = coalesce(t.timeout_ms, ($7::jsonb ->> t.type)::bigint),
        lease_expires_at = CASE WHEN coalesce(t.timeout_ms, ($7::jsonb ->> t.type)::bigint) IS NULL
          THEN n.now + $5::bigint
          ELSE least(n.now + $5::bigint, n.now + coalesce(t.timeout_ms, ($7::jsonb ->> t.type)::bigint) + $6::bigint) END
      FROM c, n
      WHERE t.ctid = c.ctid
      RETURNING ${list(CLAIM_COLUMNS, 't')}
      )
      SELECT lim.limited AS _limited, n.now AS _now, u.* FROM n, lim LEFT JOIN u ON true`,

    /**
     * $1: now, $2: limit. Running tasks whose lease expired, locked; SKIP LOCKED leaves a task
     * that another transaction holds (its heartbeat, its completion, another sweeper) to it.
     */
    expiredLeases: `SELECT ${list(CORE_COLUMNS)} FROM ${s}.tasks
      WHERE state = 'running' AND lease_expires_at < $1
      ORDER BY lease_expires_at
      LIMIT $2
      FOR UPDATE SKIP LOCKED`,

    /**
     * $1: root id. Unsettled tasks of the subtree, root included, locked in id order: the
     * caller settles them all, and a concurrent completion must wait rather than be overwritten.
     */
    unsettledSubtree: `WITH RECURSIVE sub(job_id, id) AS (
        SELECT job_id, id FROM ${s}.tasks WHERE id = $1
        UNION ALL
        SELECT t.job_id, t.id FROM ${s}.tasks AS t JOIN sub ON t.job_id = sub.job_id AND t.parent_id = sub.id
      )
      SELECT ${list(CORE_COLUMNS, 't')} FROM ${s}.tasks AS t JOIN sub ON t.job_id = sub.job_id AND t.id = sub.id
      WHERE t.state NOT IN ${SETTLED}
      ORDER BY t.id
      FOR UPDATE OF t`,

    /** $1: job id, $2: after this id ('' for the first page), $3: limit. */
    taskPage: `SELECT * FROM ${s}.tasks WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3`,

    /** $1: namespace, $2: types. With the database's time, to convert to the caller's clock. */
    nextRunAt: `SELECT min(run_at) AS t, ${DB_NOW_MS} AS now FROM ${s}.tasks
      WHERE namespace = $1 AND type = ANY($2::text[]) AND state = 'queued'`,

    /** $1: namespace. */
    queuedByType: `SELECT type, count(*)::integer AS n FROM ${s}.tasks
      WHERE namespace = $1 AND state = 'queued' GROUP BY type`,

    /** Queued and running tasks by namespace and type (each state read from its partial index). */
    countTasks: `SELECT namespace, type, 'queued' AS state, count(*)::integer AS n FROM ${s}.tasks
        WHERE state = 'queued' GROUP BY namespace, type
      UNION ALL
      SELECT namespace, type, 'running' AS state, count(*)::integer AS n FROM ${s}.tasks
        WHERE state = 'running' GROUP BY namespace, type`,

    // ------------------------------------------------------------------ dependencies, attempts, steps

    /** $1..$3: arrays of job_id, depends_on, task_id. */
    insertDeps: `INSERT INTO ${s}.task_deps (job_id, depends_on, task_id)
      SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
      ON CONFLICT DO NOTHING`,

    /** $1, $2: arrays of job_id and the id depended on (pairs, across jobs). */
    dependents: `SELECT d.job_id, d.task_id, d.depends_on
      FROM unnest($1::text[], $2::text[]) AS k(job_id, depends_on)
      JOIN ${s}.task_deps d ON d.job_id = k.job_id AND d.depends_on = k.depends_on`,

    /** $1..$6: arrays of job_id, task_id, attempt, started_at, finished_at, error. */
    insertAttempts: `INSERT INTO ${s}.task_attempts (job_id, task_id, attempt, started_at, finished_at, error)
      SELECT * FROM unnest($1::text[], $2::text[], $3::integer[], $4::bigint[], $5::bigint[], $6::text[])
      ON CONFLICT (job_id, task_id, attempt) DO UPDATE SET started_at = excluded.started_at,
        finished_at = excluded.finished_at, error = excluded.error`,

    /** $1: job id, $2: task id. */
    attempts: `SELECT * FROM ${s}.task_attempts WHERE job_id = $1 AND task_id = $2 ORDER BY attempt`,

    /** $1: job id, $2: task id, $3: name, $4: value. */
    putStep: `INSERT INTO ${s}.task_steps (job_id, task_id, name, value) VALUES ($1, $2, $3, $4)
      ON CONFLICT (job_id, task_id, name) DO UPDATE SET value = excluded.value`,

    /** $1: job id, $2: task id, $3: name. */
    getStep: `SELECT value FROM ${s}.task_steps WHERE job_id = $1 AND task_id = $2 AND name = $3`,

    // ------------------------------------------------------------------ types, slots, workers

    /**
     * $1: namespace, $2: keys. Locked, in key order: a claim reads the free slots and then
     * takes some, so two claimers must not both see the same free slot.
     */
    getSlots: `SELECT namespace, key, max, running FROM ${s}.slots WHERE namespace = $1 AND key = ANY($2::text[])
      ORDER BY key FOR UPDATE`,

    /** $1: namespace. Whether it has key slots, and the full ones ('key;' follows every 'key:...'). */
    fullKeySlots: `SELECT EXISTS (SELECT 1 FROM ${s}.slots WHERE namespace = $1 AND key >= 'key:' AND key < 'key;') AS any,
      ARRAY(SELECT key FROM ${s}.slots WHERE namespace = $1 AND running >= max AND key >= 'key:' AND key < 'key;') AS full`,

    /**
     * $1: limit. Key slots no task holds, locked (SKIP LOCKED: a spawn upserting one holds it).
     * Their deletion (dropKeySlots) is a second statement, so that its snapshot sees every task
     * committed by a spawn that held the slot until this one locked it.
     */
    unusedKeySlots: `SELECT namespace, key FROM ${s}.slots
      WHERE key >= 'key:' AND key < 'key;' AND running = 0
      LIMIT $1 FOR UPDATE SKIP LOCKED`,

    /** $1, $2: namespaces and keys of slots locked by unusedKeySlots. Deletes those no unsettled task carries. */
    dropKeySlots: `DELETE FROM ${s}.slots AS sl USING unnest($1::text[], $2::text[]) AS k(namespace, key)
      WHERE sl.namespace = k.namespace AND sl.key = k.key AND sl.running = 0
        AND NOT EXISTS (SELECT 1 FROM ${s}.tasks AS t
          WHERE t.namespace = sl.namespace AND t.concurrency_key = sl.key AND t.state NOT IN ${SETTLED})`,

    /** $1: namespace, $2: key. Removes a limit. */
    deleteSlot: `DELETE FROM ${s}.slots WHERE namespace = $1 AND key = $2`,

    /** $1: namespace, $2: key, $3: max. Keeps the running count. */
    setSlotMax: `INSERT INTO ${s}.slots (namespace, key, max, running) VALUES ($1, $2, $3, 0)
      ON CONFLICT (namespace, key) DO UPDATE SET max = excluded.max`,

    /** $1: namespace, $2: keys, $3: their deltas. */
    adjustSlots: `UPDATE ${s}.slots AS sl SET running = greatest(0, sl.running + d.delta)
      FROM unnest($2::text[], $3::integer[]) AS d(key, delta)
      WHERE sl.namespace = $1 AND sl.key = d.key`,

    /** $1..$7: arrays of namespace, type, max_attempts, backoff_ms, max_backoff_ms, timeout_ms, concurrency. */
    upsertTypeConfigs: `INSERT INTO ${s}.type_configs
        (namespace, type, max_attempts, backoff_ms, max_backoff_ms, timeout_ms, concurrency)
      SELECT * FROM unnest($1::text[], $2::text[], $3::integer[], $4::bigint[], $5::bigint[], $6::bigint[], $7::integer[])
      ON CONFLICT (namespace, type) DO UPDATE SET max_attempts = excluded.max_attempts,
        backoff_ms = excluded.backoff_ms, max_backoff_ms = excluded.max_backoff_ms,
        timeout_ms = excluded.timeout_ms, concurrency = excluded.concurrency`,

    /** $1, $2: arrays of namespace and type (pairs). */
    getTypeConfigs: `SELECT c.* FROM unnest($1::text[], $2::text[]) AS k(namespace, type)
      JOIN ${s}.type_configs c ON c.namespace = k.namespace AND c.type = k.type`,

    /** $1: namespace. */
    typeConfigs: `SELECT * FROM ${s}.type_configs WHERE namespace = $1`,

    /** $1: id, $2: namespace, $3: types, $4: how long ago it was seen (ms). */
    touchWorker: `INSERT INTO ${s}.workers (id, namespace, types, last_seen) VALUES ($1, $2, $3, ${DB_NOW_MS} - $4::bigint)
      ON CONFLICT (id) DO UPDATE SET types = excluded.types, last_seen = excluded.last_seen`,

    /** $1: id. */
    removeWorker: `DELETE FROM ${s}.workers WHERE id = $1`,

    /** $1: namespace, $2: seen within this many ms. */
    liveTypes: `SELECT DISTINCT unnest(types) AS type FROM ${s}.workers
      WHERE namespace = $1 AND last_seen >= ${DB_NOW_MS} - $2::bigint`,

    // ------------------------------------------------------------------ retention

    /**
     * $1: namespace, $2: settled more than this many ms ago, $3: limit. Deletes up to $3 settled jobs with all their
     * rows, in one statement; returns the jobs deleted.
     */
    purgeJobs: `WITH doomed AS (
        SELECT id FROM ${s}.jobs
        WHERE settled_at IS NOT NULL AND settled_at < ${DB_NOW_MS} - $2::bigint AND namespace = $1
        ORDER BY settled_at
        LIMIT $3
        FOR UPDATE SKIP LOCKED
      ),
      gone_tasks AS (DELETE FROM ${s}.tasks WHERE job_id IN (SELECT id FROM doomed)),
      gone_deps AS (DELETE FROM ${s}.task_deps WHERE job_id IN (SELECT id FROM doomed)),
      gone_attempts AS (DELETE FROM ${s}.task_attempts WHERE job_id IN (SELECT id FROM doomed)),
      gone_steps AS (DELETE FROM ${s}.task_steps WHERE job_id IN (SELECT id FROM doomed))
      DELETE FROM ${s}.jobs WHERE id IN (SELECT id FROM doomed) RETURNING id`,
  } as const;
}

export type Queries = ReturnType<typeof queries>;

/**
 * The UPDATE for a batch of task patches touching `columns` (sorted, without id). A column
 * every patch sets is assigned as is; a NOT NULL column some patches leave out is bound as
 * NULL there and kept with coalesce; a nullable one gets a companion `<col>__set` boolean
 * array, since NULL is then a value to write.
 * Parameters: $1 the ids, then per column its values (and its flags, when it has them).
 */
export function updateTasksSql(s: string, columns: Array<{ name: TaskColumn; partial: boolean }>): string {
  const unnestArgs = ['$1::text[]'];
  const names = ['id'];
  const sets: string[] = [];
  for (const { name, partial } of columns) {
    unnestArgs.push(`$${unnestArgs.length + 1}::${arrayType(name)}`);
    names.push(name);
    if (!partial) sets.push(`${name} = u.${name}`);
    else if (!isNullable(name)) sets.push(`${name} = coalesce(u.${name}, t.${name})`);
    else {
      unnestArgs.push(`$${unnestArgs.length + 1}::boolean[]`);
      names.push(`${name}__set`);
      sets.push(`${name} = CASE WHEN u.${name}__set THEN u.${name} ELSE t.${name} END`);
    }
  }
  return `UPDATE ${s}.tasks AS t SET ${sets.join(', ')}
    FROM unnest(${unnestArgs.join(', ')}) AS u(${names.join(', ')})
    WHERE t.id = u.id`;
}

/** listJobs: the filters given, newest first. */
export function listJobsSql(
  s: string,
  filters: Array<'namespace' | 'state' | 'type' | 'createdAfter' | 'createdBefore' | 'before'>,
): string {
  const cond = {
    namespace: 'namespace = $',
    state: 'state = $',
    type: 'type = $',
    createdAfter: 'created_at >= $',
    createdBefore: 'created_at < $',
    before: 'id < $',
  };
  const where = filters.map((f, i) => `${cond[f]}${i + 1}`);
  return `SELECT * FROM ${s}.jobs ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
    ORDER BY id DESC LIMIT $${filters.length + 1}`;
}
