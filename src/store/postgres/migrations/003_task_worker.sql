-- The worker that claimed a task last (its worker id, as the worker names itself): the task
-- view shows it while the task runs, so an operator can tell which worker holds it.
ALTER TABLE :"schema".tasks ADD COLUMN worker_id text COLLATE "C";
