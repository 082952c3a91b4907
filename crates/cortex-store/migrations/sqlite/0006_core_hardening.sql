-- no-transaction
-- Core hardening (issue 12).
-- 1. `job.kind` and `agent_event.type` lose their CHECK lists: the code validates them (typed enums), so a new
--    job kind or event type needs no table rebuild. SQLite cannot drop a CHECK, so both tables are rebuilt here
--    once, following SQLite's documented procedure: foreign keys off (only possible outside a transaction, hence
--    `no-transaction` and the explicit BEGIN/COMMIT), copy, drop, rename, recreate indexes and triggers.
--    Everything else (the other CHECKs, the state-machine triggers, every index) is kept as it was.
-- 2. `job.idempotency_hash`: the fingerprint of the request that used the idempotency key, so the same key with
--    a different request is refused instead of silently answered with the first job.
-- 3. Indexes retention needs: old terminal jobs by `completed_at`, old audit entries by `created_at`, and the two
--    foreign keys whose actions run when a job or a tool call is deleted (`session_message.job_id`,
--    `approval_request.tool_call_id`).
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

CREATE TABLE job_new (
    id BLOB PRIMARY KEY,
    agent_id BLOB NOT NULL REFERENCES agent (id) ON DELETE CASCADE,
    session_id BLOB REFERENCES session (id) ON DELETE SET NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'scheduled', 'running', 'waiting_for_approval', 'completed', 'failed', 'timed_out', 'retrying', 'dead_letter')),
    priority INTEGER NOT NULL CHECK (priority BETWEEN -100 AND 100),
    payload TEXT NOT NULL,
    result TEXT,
    error TEXT,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL CHECK (max_attempts BETWEEN 1 AND 100),
    timeout_seconds INTEGER NOT NULL CHECK (timeout_seconds BETWEEN 1 AND 3600),
    run_at INTEGER NOT NULL,
    resume INTEGER NOT NULL DEFAULT 0,
    attempt_elapsed_ms INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    claimed_by BLOB,
    heartbeat_at INTEGER,
    started_at INTEGER,
    attempt_started_at INTEGER,
    completed_at INTEGER,
    checkpoint TEXT,
    checkpoint_crc INTEGER,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    llm_calls INTEGER NOT NULL DEFAULT 0,
    tool_calls INTEGER NOT NULL DEFAULT 0,
    parent_job_id BLOB REFERENCES job (id) ON DELETE SET NULL,
    delegation_depth INTEGER NOT NULL DEFAULT 0,
    approval_id BLOB,
    idempotency_key TEXT,
    created_by TEXT,
    traceparent TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    idempotency_hash TEXT
) STRICT;
INSERT INTO job_new (id, agent_id, session_id, kind, status, priority, payload, result, error, attempt, max_attempts,
    timeout_seconds, run_at, resume, attempt_elapsed_ms, cancel_requested, claimed_by, heartbeat_at, started_at,
    attempt_started_at, completed_at, checkpoint, checkpoint_crc, tokens_in, tokens_out, cost_usd, llm_calls, tool_calls,
    parent_job_id, delegation_depth, approval_id, idempotency_key, created_by, traceparent, created_at, updated_at)
SELECT id, agent_id, session_id, kind, status, priority, payload, result, error, attempt, max_attempts,
    timeout_seconds, run_at, resume, attempt_elapsed_ms, cancel_requested, claimed_by, heartbeat_at, started_at,
    attempt_started_at, completed_at, checkpoint, checkpoint_crc, tokens_in, tokens_out, cost_usd, llm_calls, tool_calls,
    parent_job_id, delegation_depth, approval_id, idempotency_key, created_by, traceparent, created_at, updated_at
FROM job;
DROP TABLE job;
ALTER TABLE job_new RENAME TO job;

CREATE INDEX job_claim ON job (status, priority DESC, run_at, id);
CREATE INDEX job_agent ON job (agent_id, created_at);
CREATE INDEX job_agent_status ON job (agent_id, status);
CREATE INDEX job_session ON job (session_id, created_at);
CREATE INDEX job_parent ON job (parent_job_id);
CREATE INDEX job_claimed_by ON job (claimed_by) WHERE claimed_by IS NOT NULL;
CREATE UNIQUE INDEX job_idempotency ON job (agent_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX job_completed ON job (completed_at) WHERE completed_at IS NOT NULL;

CREATE TRIGGER job_initial_status BEFORE INSERT ON job
FOR EACH ROW WHEN NEW.status NOT IN ('pending', 'scheduled')
BEGIN
    SELECT RAISE(ABORT, 'illegal job transition: a job starts pending or scheduled');
END;

CREATE TRIGGER job_status_transition BEFORE UPDATE OF status ON job
FOR EACH ROW WHEN NEW.status IS NOT OLD.status
    AND NOT EXISTS (SELECT 1 FROM job_transition WHERE from_status = OLD.status AND to_status = NEW.status)
BEGIN
    SELECT RAISE(ABORT, 'illegal job transition');
END;

CREATE TABLE agent_event_new (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id BLOB NOT NULL,
    job_id BLOB,
    session_id BLOB,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    tokens_in INTEGER,
    tokens_out INTEGER,
    cost_usd REAL,
    model TEXT,
    tool_ref TEXT,
    actor TEXT NOT NULL CHECK (actor IN ('agent', 'operator', 'system')),
    created_at INTEGER NOT NULL
) STRICT;
INSERT INTO agent_event_new (seq, agent_id, job_id, session_id, type, payload, tokens_in, tokens_out, cost_usd, model,
    tool_ref, actor, created_at)
SELECT seq, agent_id, job_id, session_id, type, payload, tokens_in, tokens_out, cost_usd, model, tool_ref, actor, created_at
FROM agent_event;
-- Event ids are SSE resume points: carry the AUTOINCREMENT high-water mark over, so no id is ever handed out twice.
DELETE FROM sqlite_sequence WHERE name = 'agent_event_new';
INSERT INTO sqlite_sequence (name, seq) SELECT 'agent_event_new', seq FROM sqlite_sequence WHERE name = 'agent_event';
DROP TABLE agent_event;
ALTER TABLE agent_event_new RENAME TO agent_event;

CREATE INDEX agent_event_job ON agent_event (job_id, seq);
CREATE INDEX agent_event_agent ON agent_event (agent_id, seq);
CREATE INDEX agent_event_type ON agent_event (type, created_at);

CREATE INDEX session_message_job ON session_message (job_id);
CREATE INDEX approval_tool_call ON approval_request (tool_call_id);
CREATE INDEX audit_log_created ON audit_log (created_at);

COMMIT;
PRAGMA foreign_keys = ON;
