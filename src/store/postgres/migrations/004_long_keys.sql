-- dynatask schema, version 4 (PostgreSQL): spawn keys and dedup keys of any length the API
-- allows (8,192 characters, e.g. URLs; up to 4 bytes each in UTF-8). A B-tree index entry
-- holds at most about 2,700 bytes, so a key longer than 2,048 bytes is indexed by its SHA-256
-- (32 bytes) instead. SHA-256, not md5: keys can come from outside (a crawler's URLs), and two
-- keys made to collide would be taken for one. The lookups compare the hash, then the key.
--
-- Short keys (nearly all: `#0`, `#1`, ... and most URLs) keep a plain index: key_hash() is a
-- SQL function that index maintenance cannot inline, and hashing every key through it made a
-- spawn of 10,000 children twice as slow. A partial index is maintained only for the rows its
-- predicate admits, so the hash is computed for long keys alone.
--
-- SQLite needs no such change: its index entries have no size limit.

-- convert_to() is only STABLE because an encoding name could change meaning; with a fixed
-- name it is immutable, which an index expression requires.
CREATE FUNCTION :"schema".key_hash(key text) RETURNS bytea
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$ SELECT pg_catalog.sha256(pg_catalog.convert_to(key, 'UTF8')) $$;

DROP INDEX :"schema".tasks_spawn_key;
CREATE UNIQUE INDEX tasks_spawn_key ON :"schema".tasks (job_id, parent_id, spawn_key)
  WHERE octet_length(spawn_key) <= 2048;
CREATE UNIQUE INDEX tasks_spawn_key_long ON :"schema".tasks (job_id, parent_id, :"schema".key_hash(spawn_key))
  WHERE octet_length(spawn_key) > 2048;

DROP INDEX :"schema".tasks_dedup_key;
CREATE UNIQUE INDEX tasks_dedup_key ON :"schema".tasks (job_id, dedup_key)
  WHERE octet_length(dedup_key) <= 2048;
CREATE UNIQUE INDEX tasks_dedup_key_long ON :"schema".tasks (job_id, :"schema".key_hash(dedup_key))
  WHERE octet_length(dedup_key) > 2048;
