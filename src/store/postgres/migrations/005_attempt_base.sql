-- The attempts a task had used when an operator last retried it (retryTask): its budget of
-- attempts and its backoff count from there, so each retry gives the same fresh budget.
-- (src/store/sqlite/migrations/005_attempt_base.sql is the same for SQLite.)
ALTER TABLE :"schema".tasks ADD COLUMN attempt_base integer NOT NULL DEFAULT 0;
