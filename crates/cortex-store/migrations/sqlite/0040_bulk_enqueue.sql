-- Bulk enqueue (issue 17): every inserted job and event maintains fewer index entries. Nothing a query uses
-- is lost (docs/PERFORMANCE.md, "Bulk enqueue: what one job costs").
--
-- 1. `job_session` and `job_parent` keep only rows that have a session / a parent. Every query on them (and the
--    ON DELETE SET NULL actions of their foreign keys) compares the column with `=` or `IN`, which lets SQLite
--    use an `IS NOT NULL` partial index; a job without a session or parent (every bulk job) is no longer added
--    to either.
DROP INDEX job_session;
CREATE INDEX job_session ON job (session_id, created_at) WHERE session_id IS NOT NULL;
DROP INDEX job_parent;
CREATE INDEX job_parent ON job (parent_job_id) WHERE parent_job_id IS NOT NULL;

-- 2. `agent_event_type (type, created_at)` served one query: an agent's `llm.usage` events since a time (the
--    budget's calls-per-window count). A partial index on exactly that replaces it, so other events skip it.
DROP INDEX agent_event_type;
CREATE INDEX agent_event_usage ON agent_event (agent_id, created_at) WHERE type = 'llm.usage';
