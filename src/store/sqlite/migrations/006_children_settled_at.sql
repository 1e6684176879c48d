-- The latest settle time among a task's children, written with the counter update each
-- settling child makes: a parent never settles before it (see the Postgres migration).
ALTER TABLE tasks ADD COLUMN children_settled_at INTEGER;
