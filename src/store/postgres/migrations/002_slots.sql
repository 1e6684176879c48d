-- Concurrency slots stay few and cheap to read: a claim reads only the full key slots (to pass
-- over their tasks) and the slots of the types and keys it takes, and the lease sweeper deletes
-- a key's slot once no unsettled task carries the key.

-- The full slots of a namespace, without reading the others.
CREATE INDEX slots_full ON :"schema".slots (namespace, key) WHERE running >= max;

-- Whether an unsettled task still carries a concurrency key (before its slot is deleted).
CREATE INDEX tasks_by_concurrency_key ON :"schema".tasks (namespace, concurrency_key)
  WHERE concurrency_key IS NOT NULL AND state NOT IN ('succeeded', 'failed', 'cancelled', 'skipped');
