-- Core hardening (issue 12); the SQLite migration of the same number rebuilds its tables for the same result.
-- 1. `job.kind` and `agent_event.type` lose their CHECK lists: the code validates them (typed enums), so a new
--    job kind or event type needs no schema change.
-- 2. `job.idempotency_hash`: the fingerprint of the request that used the idempotency key, so the same key with
--    a different request is refused instead of silently answered with the first job.
-- 3. Indexes retention needs: old terminal jobs by `completed_at`, old audit entries by `created_at`, and the two
--    foreign keys whose actions run when a job or a tool call is deleted (`session_message.job_id`,
--    `approval_request.tool_call_id`).
ALTER TABLE job DROP CONSTRAINT job_kind_check;
ALTER TABLE agent_event DROP CONSTRAINT agent_event_type_check;
ALTER TABLE job ADD COLUMN idempotency_hash TEXT;

CREATE INDEX job_completed ON job (completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX session_message_job ON session_message (job_id);
CREATE INDEX approval_tool_call ON approval_request (tool_call_id);
CREATE INDEX audit_log_created ON audit_log (created_at);
