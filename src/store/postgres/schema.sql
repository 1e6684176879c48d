-- The dynatask schema on PostgreSQL: pg_dump --schema-only of a freshly migrated schema
-- (src/store/postgres/migrations), normalised. Generated; do not edit. test/postgres.schema.test.ts
-- fails when the migrations no longer produce this; its header says how to regenerate it.

CREATE SCHEMA dynatask;

CREATE FUNCTION dynatask.key_hash(key text) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT pg_catalog.sha256(pg_catalog.convert_to(key, 'UTF8')) $$;

CREATE TABLE dynatask.jobs (
    id text NOT NULL COLLATE pg_catalog."C",
    namespace text NOT NULL COLLATE pg_catalog."C",
    type text NOT NULL COLLATE pg_catalog."C",
    root_task_id text NOT NULL COLLATE pg_catalog."C",
    state text NOT NULL,
    created_at bigint NOT NULL,
    settled_at bigint
);

CREATE TABLE dynatask.schema_migrations (
    version text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);

CREATE TABLE dynatask.slots (
    namespace text NOT NULL COLLATE pg_catalog."C",
    key text NOT NULL COLLATE pg_catalog."C",
    max integer NOT NULL,
    running integer NOT NULL
);

CREATE TABLE dynatask.task_attempts (
    job_id text NOT NULL COLLATE pg_catalog."C",
    task_id text NOT NULL COLLATE pg_catalog."C",
    attempt integer NOT NULL,
    started_at bigint NOT NULL,
    finished_at bigint NOT NULL,
    error text NOT NULL
);

CREATE TABLE dynatask.task_deps (
    job_id text NOT NULL COLLATE pg_catalog."C",
    depends_on text NOT NULL COLLATE pg_catalog."C",
    task_id text NOT NULL COLLATE pg_catalog."C"
);

CREATE TABLE dynatask.task_steps (
    job_id text NOT NULL COLLATE pg_catalog."C",
    task_id text NOT NULL COLLATE pg_catalog."C",
    name text NOT NULL COLLATE pg_catalog."C",
    value text NOT NULL
);

CREATE TABLE dynatask.tasks (
    job_id text NOT NULL COLLATE pg_catalog."C",
    id text NOT NULL COLLATE pg_catalog."C",
    namespace text NOT NULL COLLATE pg_catalog."C",
    parent_id text COLLATE pg_catalog."C",
    spawn_key text COLLATE pg_catalog."C",
    dedup_key text COLLATE pg_catalog."C",
    type text NOT NULL COLLATE pg_catalog."C",
    payload text,
    state text NOT NULL,
    priority integer NOT NULL,
    run_at bigint NOT NULL,
    attempt integer NOT NULL,
    max_attempts integer,
    backoff_ms bigint,
    max_backoff_ms bigint,
    timeout_ms bigint,
    run_token integer NOT NULL,
    lease_expires_at bigint,
    concurrency_key text COLLATE pg_catalog."C",
    slots_held integer NOT NULL,
    open_children integer NOT NULL,
    wait_mode integer NOT NULL,
    wait_remaining integer NOT NULL,
    awaited integer NOT NULL,
    unobserved_failures integer NOT NULL,
    observed integer NOT NULL,
    ignore_failure integer NOT NULL,
    deps_remaining integer NOT NULL,
    run_regardless integer NOT NULL,
    handler_done integer NOT NULL,
    result text,
    error text,
    progress text,
    created_at bigint NOT NULL,
    started_at bigint,
    finished_at bigint,
    settled_at bigint,
    worker_id text COLLATE pg_catalog."C",
    attempt_base integer DEFAULT 0 NOT NULL,
    children_settled_at bigint
);

CREATE TABLE dynatask.type_configs (
    namespace text NOT NULL COLLATE pg_catalog."C",
    type text NOT NULL COLLATE pg_catalog."C",
    max_attempts integer,
    backoff_ms bigint,
    max_backoff_ms bigint,
    timeout_ms bigint,
    concurrency integer
);

CREATE TABLE dynatask.workers (
    id text NOT NULL COLLATE pg_catalog."C",
    namespace text NOT NULL COLLATE pg_catalog."C",
    types text[] NOT NULL,
    last_seen bigint NOT NULL
);

ALTER TABLE ONLY dynatask.jobs
    ADD CONSTRAINT jobs_pkey PRIMARY KEY (id);

ALTER TABLE ONLY dynatask.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);

ALTER TABLE ONLY dynatask.slots
    ADD CONSTRAINT slots_pkey PRIMARY KEY (namespace, key);

ALTER TABLE ONLY dynatask.task_attempts
    ADD CONSTRAINT task_attempts_pkey PRIMARY KEY (job_id, task_id, attempt);

ALTER TABLE ONLY dynatask.task_deps
    ADD CONSTRAINT task_deps_pkey PRIMARY KEY (job_id, depends_on, task_id);

ALTER TABLE ONLY dynatask.task_steps
    ADD CONSTRAINT task_steps_pkey PRIMARY KEY (job_id, task_id, name);

ALTER TABLE ONLY dynatask.tasks
    ADD CONSTRAINT tasks_pkey PRIMARY KEY (job_id, id);

ALTER TABLE ONLY dynatask.type_configs
    ADD CONSTRAINT type_configs_pkey PRIMARY KEY (namespace, type);

ALTER TABLE ONLY dynatask.workers
    ADD CONSTRAINT workers_pkey PRIMARY KEY (id);

CREATE INDEX jobs_by_namespace ON dynatask.jobs USING btree (namespace, id);

CREATE INDEX jobs_by_state ON dynatask.jobs USING btree (namespace, state, id);

CREATE INDEX jobs_by_type ON dynatask.jobs USING btree (namespace, type, id);

CREATE INDEX jobs_settled ON dynatask.jobs USING btree (settled_at) WHERE (settled_at IS NOT NULL);

CREATE INDEX slots_full ON dynatask.slots USING btree (namespace, key) WHERE (running >= max);

CREATE INDEX tasks_by_concurrency_key ON dynatask.tasks USING btree (namespace, concurrency_key) WHERE ((concurrency_key IS NOT NULL) AND (state <> ALL (ARRAY['succeeded'::text, 'failed'::text, 'cancelled'::text, 'skipped'::text])));

CREATE INDEX tasks_by_id ON dynatask.tasks USING btree (id);

CREATE INDEX tasks_by_job_state ON dynatask.tasks USING btree (job_id, state);

CREATE INDEX tasks_claim ON dynatask.tasks USING btree (namespace, type, priority DESC, run_at, id) WHERE (state = 'queued'::text);

CREATE UNIQUE INDEX tasks_dedup_key ON dynatask.tasks USING btree (job_id, dedup_key) WHERE (octet_length(dedup_key) <= 2048);

CREATE UNIQUE INDEX tasks_dedup_key_long ON dynatask.tasks USING btree (job_id, dynatask.key_hash(dedup_key)) WHERE (octet_length(dedup_key) > 2048);

CREATE INDEX tasks_leases ON dynatask.tasks USING btree (lease_expires_at) WHERE (state = 'running'::text);

CREATE UNIQUE INDEX tasks_spawn_key ON dynatask.tasks USING btree (job_id, parent_id, spawn_key) WHERE (octet_length(spawn_key) <= 2048);

CREATE UNIQUE INDEX tasks_spawn_key_long ON dynatask.tasks USING btree (job_id, parent_id, dynatask.key_hash(spawn_key)) WHERE (octet_length(spawn_key) > 2048);
