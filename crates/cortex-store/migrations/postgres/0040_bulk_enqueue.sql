-- Bulk enqueue (issue 17): every inserted job and event maintains fewer index entries, and a legal insert no
-- longer calls PL/pgSQL. Nothing a query uses is lost (docs/PERFORMANCE.md, "Bulk enqueue: what one job costs").
--
-- 1. `job_session` and `job_parent` keep only rows that have a session / a parent. Every query on them (and the
--    ON DELETE SET NULL actions of their foreign keys) compares the column with `=` or `= ANY`, which implies
--    IS NOT NULL, so the partial indexes serve them; a job without a session or parent (every bulk job) is no
--    longer added to either.
DROP INDEX job_session;
CREATE INDEX job_session ON job (session_id, created_at) WHERE session_id IS NOT NULL;
DROP INDEX job_parent;
CREATE INDEX job_parent ON job (parent_job_id) WHERE parent_job_id IS NOT NULL;

-- 2. `agent_event_type (type, created_at)` served one query: an agent's `llm.usage` events since a time (the
--    budget's calls-per-window count). A partial index on exactly that replaces it, so other events (job
--    states, deltas, tool calls …) skip it.
DROP INDEX agent_event_type;
CREATE INDEX agent_event_usage ON agent_event (agent_id, created_at) WHERE type = 'llm.usage';

-- 3. The job state guard fires only when it may refuse: an insert whose status is not an initial one, an
--    update that changes the status. The function and the transition table are unchanged, so the same pairs
--    are refused with the same errors; SQLite's triggers already carry these WHEN clauses.
DROP TRIGGER job_status_guard ON job;
CREATE TRIGGER job_status_guard_insert BEFORE INSERT ON job
FOR EACH ROW WHEN (NEW.status NOT IN ('pending', 'scheduled')) EXECUTE FUNCTION job_status_guard();
CREATE TRIGGER job_status_guard_update BEFORE UPDATE OF status ON job
FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status) EXECUTE FUNCTION job_status_guard();
