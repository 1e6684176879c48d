-- The attempts a task had used when an operator last retried it (retryTask): its budget of
-- attempts and its backoff count from there, so each retry gives the same fresh budget.
ALTER TABLE tasks ADD COLUMN attempt_base INTEGER NOT NULL DEFAULT 0;
