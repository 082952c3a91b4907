-- Claim and completion write fewer index entries (issue 17; docs/PERFORMANCE.md section 19). An UPDATE that is not
-- HOT adds the new row version to every index whose predicate it meets, so each index a job's row enters in every
-- state costs each claim and each completion. Two indexes did that without serving any query outside the states
-- they name:
--
-- 1. `job_claim` served the claim's candidate scan, always `status = 'scheduled'`: it now holds scheduled rows only,
--    so neither a claim (to running) nor a completion adds to it, and the scan no longer passes the entries of ended
--    jobs.
-- 2. `job_agent_status (agent_id, status)` becomes `job_live (status, agent_id)` over the unfinished states. Every
--    query naming a status there names unfinished ones as literals (running counts per agent, the reaper, promotion
--    of retrying jobs, pending session heads, unfinished jobs of an agent or a channel); a completion no longer adds to
--    it. Queries on ended jobs go through `job_completed` / `job_agent_completed`.
DROP INDEX job_claim;
CREATE INDEX job_claim ON job (priority DESC, run_at, id) WHERE status = 'scheduled';
DROP INDEX job_agent_status;
CREATE INDEX job_live ON job (status, agent_id)
    WHERE status IN ('pending', 'scheduled', 'running', 'waiting_for_approval', 'retrying');

-- 3. The state guard no longer calls PL/pgSQL for the two transitions every job makes, scheduled → running and
--    running → completed: both are rows of `job_transition`, which no statement changes, so the function could only
--    accept them. Every other change of status is checked by the function as before.
DROP TRIGGER job_status_guard_update ON job;
CREATE TRIGGER job_status_guard_update BEFORE UPDATE OF status ON job
FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status
    AND NOT ((OLD.status = 'scheduled' AND NEW.status = 'running') OR (OLD.status = 'running' AND NEW.status = 'completed')))
EXECUTE FUNCTION job_status_guard();
