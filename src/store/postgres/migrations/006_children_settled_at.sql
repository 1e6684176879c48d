-- The latest settle time among a task's children, written with the counter update each
-- settling child makes: a parent never settles before it, even when the transaction settling
-- it began before the one that settled its last child (overlapping transactions).
-- (src/store/sqlite/migrations/006_children_settled_at.sql is the same for SQLite.)
ALTER TABLE :"schema".tasks ADD COLUMN children_settled_at bigint;
