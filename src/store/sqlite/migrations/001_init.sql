-- dynatask schema, version 1 (SQLite).
-- Every table is keyed by job id first where it has one, so a job's rows stay together;
-- the Postgres schema (next issue) follows the same keys for sharding by job id.

CREATE TABLE jobs (
  id           TEXT PRIMARY KEY,
  namespace    TEXT NOT NULL,
  type         TEXT NOT NULL,
  root_task_id TEXT NOT NULL,
  state        TEXT NOT NULL,
  created_at   INTEGER NOT NULL,
  settled_at   INTEGER
);
-- Job ids are UUIDv7, so ordering by id is ordering by creation time.
CREATE INDEX jobs_by_state ON jobs (namespace, state, id);
CREATE INDEX jobs_by_type ON jobs (namespace, type, id);
CREATE INDEX jobs_by_namespace ON jobs (namespace, id);
CREATE INDEX jobs_settled ON jobs (settled_at) WHERE settled_at IS NOT NULL;

CREATE TABLE tasks (
  id                  TEXT PRIMARY KEY,
  job_id              TEXT NOT NULL,
  namespace           TEXT NOT NULL,
  parent_id           TEXT,
  spawn_key           TEXT,
  dedup_key           TEXT,
  type                TEXT NOT NULL,
  payload             TEXT,
  state               TEXT NOT NULL,
  priority            INTEGER NOT NULL,
  run_at              INTEGER NOT NULL,
  attempt             INTEGER NOT NULL,
  max_attempts        INTEGER,
  backoff_ms          INTEGER,
  max_backoff_ms      INTEGER,
  timeout_ms          INTEGER,
  run_token           INTEGER NOT NULL,
  lease_expires_at    INTEGER,
  concurrency_key     TEXT,
  slots_held          INTEGER NOT NULL,
  open_children       INTEGER NOT NULL,
  wait_mode           INTEGER NOT NULL,
  wait_remaining      INTEGER NOT NULL,
  awaited             INTEGER NOT NULL,
  unobserved_failures INTEGER NOT NULL,
  observed            INTEGER NOT NULL,
  ignore_failure      INTEGER NOT NULL,
  deps_remaining      INTEGER NOT NULL,
  run_regardless      INTEGER NOT NULL,
  handler_done        INTEGER NOT NULL,
  result              TEXT,
  error               TEXT,
  progress            TEXT,
  created_at          INTEGER NOT NULL,
  started_at          INTEGER,
  finished_at         INTEGER,
  settled_at          INTEGER
);
-- Idempotent spawn: one child per (parent, key).
CREATE UNIQUE INDEX tasks_spawn_key ON tasks (parent_id, spawn_key);
-- Dedup keys are unique within a job.
CREATE UNIQUE INDEX tasks_dedup_key ON tasks (job_id, dedup_key) WHERE dedup_key IS NOT NULL;
-- Paging a job's tree in creation order, and counting its tasks by state.
CREATE INDEX tasks_by_job ON tasks (job_id, id);
CREATE INDEX tasks_by_job_state ON tasks (job_id, state);
-- Claim: ready tasks of one type, best first. Partial, so settled rows cost nothing here.
CREATE INDEX tasks_claim ON tasks (namespace, type, priority DESC, run_at, id) WHERE state = 'queued';
-- Lease recovery.
CREATE INDEX tasks_leases ON tasks (lease_expires_at) WHERE state = 'running';

CREATE TABLE task_deps (
  job_id     TEXT NOT NULL,
  depends_on TEXT NOT NULL,
  task_id    TEXT NOT NULL,
  PRIMARY KEY (job_id, depends_on, task_id)
) WITHOUT ROWID;

CREATE TABLE task_attempts (
  job_id      TEXT NOT NULL,
  task_id     TEXT NOT NULL,
  attempt     INTEGER NOT NULL,
  started_at  INTEGER NOT NULL,
  finished_at INTEGER NOT NULL,
  error       TEXT NOT NULL,
  PRIMARY KEY (job_id, task_id, attempt)
) WITHOUT ROWID;

CREATE TABLE task_steps (
  job_id  TEXT NOT NULL,
  task_id TEXT NOT NULL,
  name    TEXT NOT NULL,
  value   TEXT NOT NULL,
  PRIMARY KEY (job_id, task_id, name)
) WITHOUT ROWID;

CREATE TABLE type_configs (
  namespace      TEXT NOT NULL,
  type           TEXT NOT NULL,
  max_attempts   INTEGER,
  backoff_ms     INTEGER,
  max_backoff_ms INTEGER,
  timeout_ms     INTEGER,
  concurrency    INTEGER,
  PRIMARY KEY (namespace, type)
) WITHOUT ROWID;

CREATE TABLE slots (
  namespace TEXT NOT NULL,
  key       TEXT NOT NULL,
  max       INTEGER NOT NULL,
  running   INTEGER NOT NULL,
  PRIMARY KEY (namespace, key)
) WITHOUT ROWID;

CREATE TABLE workers (
  id        TEXT PRIMARY KEY,
  namespace TEXT NOT NULL,
  types     TEXT NOT NULL,
  last_seen INTEGER NOT NULL
);
