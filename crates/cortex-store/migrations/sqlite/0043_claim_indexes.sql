-- Claim and completion write fewer index entries (issue 17; docs/PERFORMANCE.md section 19). The same indexes as
-- PostgreSQL's migration 0043 by name and columns; SQLite changes an index only when one of its columns changes, so
-- here the gain is `job_claim` holding scheduled rows only: a claim removes its entry, a completion does not touch
-- it, and the claim's ordered scan passes no ended job.
DROP INDEX job_claim;
CREATE INDEX job_claim ON job (priority DESC, run_at, id) WHERE status = 'scheduled';
-- `job_live` keeps every row here: SQLite's planner uses a partial index only when a query's condition contains
-- its predicate term for term, and the unfinished-state queries name their states as `IN` lists.
DROP INDEX job_agent_status;
CREATE INDEX job_live ON job (status, agent_id);

-- The state guard skips its look-up for the two transitions every job makes (scheduled → running, running →
-- completed): both are rows of `job_transition`, which no statement changes.
DROP TRIGGER job_status_transition;
CREATE TRIGGER job_status_transition BEFORE UPDATE OF status ON job
FOR EACH ROW WHEN NEW.status IS NOT OLD.status
    AND NOT ((OLD.status = 'scheduled' AND NEW.status = 'running') OR (OLD.status = 'running' AND NEW.status = 'completed'))
    AND NOT EXISTS (SELECT 1 FROM job_transition WHERE from_status = OLD.status AND to_status = NEW.status)
BEGIN
    SELECT RAISE(ABORT, 'illegal job transition');
END;
