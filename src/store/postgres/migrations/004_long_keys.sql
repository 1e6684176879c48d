-- dynatask schema, version 4 (PostgreSQL): spawn keys and dedup keys of any length the API
-- allows (8,192 characters, e.g. URLs; up to 4 bytes each in UTF-8). A B-tree index entry
-- holds at most about 2,700 bytes, so the unique indexes on the keys hold their SHA-256
-- instead (32 bytes). SHA-256, not md5: keys can come from outside (a crawler's URLs), and two
-- keys made to collide would be taken for one. The lookups compare the hash, then the key.
--
-- SQLite needs no such change: its index entries have no size limit.

-- convert_to() is only STABLE because an encoding name could change meaning; with a fixed
-- name it is immutable, which an index expression requires.
CREATE FUNCTION :"schema".key_hash(key text) RETURNS bytea
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$ SELECT pg_catalog.sha256(pg_catalog.convert_to(key, 'UTF8')) $$;

DROP INDEX :"schema".tasks_spawn_key;
CREATE UNIQUE INDEX tasks_spawn_key ON :"schema".tasks (job_id, parent_id, :"schema".key_hash(spawn_key));

DROP INDEX :"schema".tasks_dedup_key;
CREATE UNIQUE INDEX tasks_dedup_key ON :"schema".tasks (job_id, :"schema".key_hash(dedup_key))
  WHERE dedup_key IS NOT NULL;
