-- dynatask schema, version 1 (PostgreSQL): the same tables and columns as the SQLite schema
-- (src/store/sqlite/migrations/001_init.sql), with Postgres types.
--
-- :"schema" stands for the configured schema (default dynatask); the store substitutes it, and
-- `psql -v schema=dynatask -f 001_init.sql` runs this file as it is.
--
-- Keys, for sharding (issue 3, point 8): every table that holds a job's rows is keyed job id
-- first, and so is every index on it that a job's own queries use, so that a distributed
-- Postgres with job_id as distribution column keeps all of a job's rows on one shard. The
-- exceptions are indexes that are cross-job by nature (claiming work of a type, lease expiry,
-- listing jobs) and the lookup of a task by id alone: on a distributed engine each shard
-- keeps its own part of them.
--
-- Ids are UUIDv7 text, compared in byte order (COLLATE "C") as SQLite and JavaScript compare
-- them, whatever the database's default collation. Times are milliseconds since the epoch.
-- JSON columns (payload, result, error, progress) hold the engine's serialised text as is.

CREATE TABLE :"schema".jobs (
  id           text COLLATE "C" PRIMARY KEY,
  namespace    text COLLATE "C" NOT NULL,
  type         text COLLATE "C" NOT NULL,
  root_task_id text COLLATE "C" NOT NULL,
  state        text NOT NULL,
  created_at   bigint NOT NULL,
  settled_at   bigint
);
-- Job ids are UUIDv7, so ordering by id is ordering by creation time.
CREATE INDEX jobs_by_state ON :"schema".jobs (namespace, state, id);
CREATE INDEX jobs_by_type ON :"schema".jobs (namespace, type, id);
CREATE INDEX jobs_by_namespace ON :"schema".jobs (namespace, id);
CREATE INDEX jobs_settled ON :"schema".jobs (settled_at) WHERE settled_at IS NOT NULL;

CREATE TABLE :"schema".tasks (
  job_id              text COLLATE "C" NOT NULL,
  id                  text COLLATE "C" NOT NULL,
  namespace           text COLLATE "C" NOT NULL,
  parent_id           text COLLATE "C",
  spawn_key           text COLLATE "C",
  dedup_key           text COLLATE "C",
  type                text COLLATE "C" NOT NULL,
  payload             text,
  state               text NOT NULL,
  priority            integer NOT NULL,
  run_at              bigint NOT NULL,
  attempt             integer NOT NULL,
  max_attempts        integer,
  backoff_ms          bigint,
  max_backoff_ms      bigint,
  timeout_ms          bigint,
  run_token           integer NOT NULL,
  lease_expires_at    bigint,
  concurrency_key     text COLLATE "C",
  slots_held          integer NOT NULL,
  open_children       integer NOT NULL,
  wait_mode           integer NOT NULL,
  wait_remaining      integer NOT NULL,
  awaited             integer NOT NULL,
  unobserved_failures integer NOT NULL,
  observed            integer NOT NULL,
  ignore_failure      integer NOT NULL,
  deps_remaining      integer NOT NULL,
  run_regardless      integer NOT NULL,
  handler_done        integer NOT NULL,
  result              text,
  error               text,
  progress            text,
  created_at          bigint NOT NULL,
  started_at          bigint,
  finished_at         bigint,
  settled_at          bigint,
  -- Also pages a job's tree in creation order.
  PRIMARY KEY (job_id, id)
);
-- A task by id alone: the engine's attempt references carry no job id. Not unique, because a
-- distributed table can enforce uniqueness only with the distribution column; ids are UUIDv7.
CREATE INDEX tasks_by_id ON :"schema".tasks (id);
-- Idempotent spawn: one child per (parent, key); also a parent's children.
CREATE UNIQUE INDEX tasks_spawn_key ON :"schema".tasks (job_id, parent_id, spawn_key);
-- Dedup keys are unique within a job.
CREATE UNIQUE INDEX tasks_dedup_key ON :"schema".tasks (job_id, dedup_key) WHERE dedup_key IS NOT NULL;
-- Counting a job's tasks by state.
CREATE INDEX tasks_by_job_state ON :"schema".tasks (job_id, state);
-- Claim: ready tasks of one type, best first. Partial, so settled rows cost nothing here.
CREATE INDEX tasks_claim ON :"schema".tasks (namespace, type, priority DESC, run_at, id) WHERE state = 'queued';
-- Lease recovery.
CREATE INDEX tasks_leases ON :"schema".tasks (lease_expires_at) WHERE state = 'running';

CREATE TABLE :"schema".task_deps (
  job_id     text COLLATE "C" NOT NULL,
  depends_on text COLLATE "C" NOT NULL,
  task_id    text COLLATE "C" NOT NULL,
  PRIMARY KEY (job_id, depends_on, task_id)
);

CREATE TABLE :"schema".task_attempts (
  job_id      text COLLATE "C" NOT NULL,
  task_id     text COLLATE "C" NOT NULL,
  attempt     integer NOT NULL,
  started_at  bigint NOT NULL,
  finished_at bigint NOT NULL,
  error       text NOT NULL,
  PRIMARY KEY (job_id, task_id, attempt)
);

CREATE TABLE :"schema".task_steps (
  job_id  text COLLATE "C" NOT NULL,
  task_id text COLLATE "C" NOT NULL,
  name    text COLLATE "C" NOT NULL,
  value   text NOT NULL,
  PRIMARY KEY (job_id, task_id, name)
);

CREATE TABLE :"schema".type_configs (
  namespace      text COLLATE "C" NOT NULL,
  type           text COLLATE "C" NOT NULL,
  max_attempts   integer,
  backoff_ms     bigint,
  max_backoff_ms bigint,
  timeout_ms     bigint,
  concurrency    integer,
  PRIMARY KEY (namespace, type)
);

CREATE TABLE :"schema".slots (
  namespace text COLLATE "C" NOT NULL,
  key       text COLLATE "C" NOT NULL,
  max       integer NOT NULL,
  running   integer NOT NULL,
  PRIMARY KEY (namespace, key)
);

CREATE TABLE :"schema".workers (
  id        text COLLATE "C" PRIMARY KEY,
  namespace text COLLATE "C" NOT NULL,
  types     text[] NOT NULL,
  last_seen bigint NOT NULL
);
