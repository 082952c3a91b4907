-- Core schema (SPEC §3): identity, agents, sessions, jobs, events, tools, approvals, budgets.
-- Times are unix milliseconds (INTEGER); ids are UUIDv7 as 16-byte BLOBs; JSON documents are TEXT.

CREATE TABLE user_account (
    id BLOB PRIMARY KEY,
    display_name TEXT NOT NULL,
    email TEXT,
    role TEXT NOT NULL CHECK (role IN ('admin', 'approver', 'operator', 'viewer', 'none')),
    password_hash TEXT,
    disabled_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX user_account_email ON user_account (email) WHERE email IS NOT NULL;

CREATE TABLE api_key (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'approver', 'operator', 'viewer')),
    user_id BLOB REFERENCES user_account (id),
    budget TEXT,
    expires_at INTEGER,
    last_used_at INTEGER,
    revoked_at INTEGER,
    source TEXT NOT NULL CHECK (source IN ('bootstrap', 'env', 'api')),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE audit_log (
    id BLOB PRIMARY KEY,
    actor_type TEXT NOT NULL CHECK (actor_type IN ('user', 'api_key', 'agent', 'system', 'channel_user')),
    actor_id TEXT,
    action TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id TEXT,
    details TEXT NOT NULL,
    ip TEXT,
    request_id TEXT,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX audit_log_target ON audit_log (target_type, target_id, created_at);
CREATE INDEX audit_log_action ON audit_log (action, created_at);

CREATE TABLE agent (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    slug TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    description TEXT NOT NULL,
    system_prompt TEXT NOT NULL,
    model_config TEXT NOT NULL,
    resource_limits TEXT NOT NULL,
    max_concurrent_jobs INTEGER NOT NULL CHECK (max_concurrent_jobs > 0),
    access_mode TEXT NOT NULL CHECK (access_mode IN ('open', 'bound_chats', 'allowlist', 'approval_queue')),
    skills TEXT NOT NULL,
    subagents TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'disabled', 'archived')),
    health_state TEXT NOT NULL CHECK (health_state IN ('healthy', 'degraded', 'quarantined')),
    quarantine_reason TEXT,
    health_reset_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE session (
    id BLOB PRIMARY KEY,
    agent_id BLOB NOT NULL REFERENCES agent (id) ON DELETE CASCADE,
    user_id BLOB REFERENCES user_account (id),
    origin TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'idle', 'archived', 'closed')),
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    message_count INTEGER NOT NULL DEFAULT 0,
    last_activity_at INTEGER NOT NULL,
    closed_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX session_agent ON session (agent_id, user_id, status, last_activity_at DESC);

CREATE TABLE job (
    id BLOB PRIMARY KEY,
    agent_id BLOB NOT NULL REFERENCES agent (id) ON DELETE CASCADE,
    session_id BLOB REFERENCES session (id) ON DELETE SET NULL,
    kind TEXT NOT NULL CHECK (kind IN ('chat', 'task', 'scheduled', 'subagent', 'replay', 'heartbeat', 'memory_extract', 'content_publish')),
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
    updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX job_claim ON job (status, priority DESC, run_at, id);
CREATE INDEX job_agent ON job (agent_id, created_at);
CREATE INDEX job_agent_status ON job (agent_id, status);
CREATE INDEX job_session ON job (session_id, created_at);
CREATE INDEX job_parent ON job (parent_job_id);
CREATE INDEX job_claimed_by ON job (claimed_by) WHERE claimed_by IS NOT NULL;
CREATE UNIQUE INDEX job_idempotency ON job (agent_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- The database half of the job state machine (SPEC §4.1): the same pairs as cortex_core::job::TRANSITIONS.
CREATE TABLE job_transition (
    from_status TEXT NOT NULL,
    to_status TEXT NOT NULL,
    PRIMARY KEY (from_status, to_status)
) STRICT, WITHOUT ROWID;
INSERT INTO job_transition (from_status, to_status) VALUES
    ('pending', 'scheduled'), ('pending', 'failed'),
    ('scheduled', 'running'), ('scheduled', 'failed'),
    ('running', 'completed'), ('running', 'failed'), ('running', 'timed_out'),
    ('running', 'waiting_for_approval'), ('running', 'pending'), ('running', 'scheduled'),
    ('waiting_for_approval', 'scheduled'), ('waiting_for_approval', 'failed'), ('waiting_for_approval', 'timed_out'),
    ('failed', 'retrying'), ('failed', 'dead_letter'),
    ('timed_out', 'retrying'), ('timed_out', 'dead_letter'),
    ('retrying', 'scheduled'), ('retrying', 'failed'),
    ('dead_letter', 'retrying');

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

CREATE TABLE session_message (
    id BLOB PRIMARY KEY,
    session_id BLOB NOT NULL REFERENCES session (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content TEXT NOT NULL,
    job_id BLOB REFERENCES job (id) ON DELETE SET NULL,
    source TEXT,
    created_at INTEGER NOT NULL,
    UNIQUE (session_id, seq)
) STRICT;

CREATE TABLE agent_event (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id BLOB NOT NULL,
    job_id BLOB,
    session_id BLOB,
    type TEXT NOT NULL CHECK (type IN ('job.state', 'llm.request', 'llm.delta', 'llm.message', 'llm.usage', 'tool.call',
        'tool.result', 'tool.denied', 'tool.rate_limited', 'approval.requested', 'approval.decided', 'steer.injected',
        'steer.acknowledged', 'checkpoint', 'subagent.spawned', 'subagent.finished', 'cost.alert', 'breaker.trip',
        'message.received', 'message.sent', 'job.completed', 'job.failed', 'error')),
    payload TEXT NOT NULL,
    tokens_in INTEGER,
    tokens_out INTEGER,
    cost_usd REAL,
    model TEXT,
    tool_ref TEXT,
    actor TEXT NOT NULL CHECK (actor IN ('agent', 'operator', 'system')),
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX agent_event_job ON agent_event (job_id, seq);
CREATE INDEX agent_event_agent ON agent_event (agent_id, seq);
CREATE INDEX agent_event_type ON agent_event (type, created_at);

CREATE TABLE worker (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    stopped_at INTEGER
) STRICT;

CREATE TABLE lease (
    name TEXT PRIMARY KEY,
    holder BLOB NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;

CREATE TABLE agent_tool_policy (
    id BLOB PRIMARY KEY,
    agent_id BLOB NOT NULL REFERENCES agent (id) ON DELETE CASCADE,
    tool_ref TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    approval TEXT NOT NULL CHECK (approval IN ('never', 'always', 'risk')),
    risk TEXT CHECK (risk IN ('p0', 'p1', 'p2', 'p3')),
    condition TEXT,
    rate_limit TEXT,
    cost_budget TEXT,
    data_scope TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (agent_id, tool_ref)
) STRICT;

CREATE TABLE tool_call (
    id BLOB PRIMARY KEY,
    job_id BLOB NOT NULL REFERENCES job (id) ON DELETE CASCADE,
    agent_id BLOB NOT NULL,
    call_id TEXT NOT NULL,
    turn INTEGER NOT NULL,
    tool_ref TEXT NOT NULL,
    input TEXT NOT NULL,
    input_hash TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('requested', 'awaiting_approval', 'running', 'completed', 'failed', 'rejected', 'interrupted')),
    output TEXT,
    is_error INTEGER NOT NULL DEFAULT 0,
    approval_id BLOB,
    idempotent INTEGER NOT NULL,
    duration_ms INTEGER,
    cost_usd REAL NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (job_id, call_id)
) STRICT;
CREATE INDEX tool_call_agent_tool ON tool_call (agent_id, tool_ref, created_at);

CREATE TABLE approval_request (
    id BLOB PRIMARY KEY,
    job_id BLOB NOT NULL REFERENCES job (id) ON DELETE CASCADE,
    tool_call_id BLOB REFERENCES tool_call (id) ON DELETE CASCADE,
    agent_id BLOB NOT NULL,
    action_type TEXT NOT NULL CHECK (action_type IN ('tool', 'job', 'request')),
    action_summary TEXT NOT NULL,
    action_detail TEXT NOT NULL,
    tool_ref TEXT,
    args_hash TEXT,
    risk TEXT NOT NULL CHECK (risk IN ('p0', 'p1', 'p2', 'p3')),
    token_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
    requested_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    decided_at INTEGER,
    decided_by BLOB REFERENCES user_account (id),
    decided_by_key BLOB,
    decided_via TEXT CHECK (decided_via IN ('api', 'dashboard', 'token', 'telegram', 'discord', 'slack', 'whatsapp', 'policy')),
    reason TEXT,
    approver_user_id BLOB,
    executed_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX approval_pending_token ON approval_request (token_hash) WHERE status = 'pending';
CREATE INDEX approval_pending_expiry ON approval_request (expires_at) WHERE status = 'pending';
CREATE INDEX approval_job ON approval_request (job_id);
CREATE INDEX approval_status ON approval_request (status, created_at);

CREATE TABLE approval_audit (
    id BLOB PRIMARY KEY,
    approval_id BLOB NOT NULL REFERENCES approval_request (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL CHECK (event IN ('created', 'notified', 'notification_failed', 'reminder_sent', 'escalated', 'decided', 'unauthorized_attempt', 'expired', 'executed')),
    actor TEXT NOT NULL,
    details TEXT NOT NULL,
    entry_hash TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (approval_id, seq)
) STRICT;

CREATE TABLE steering_message (
    id BLOB PRIMARY KEY,
    agent_id BLOB NOT NULL REFERENCES agent (id) ON DELETE CASCADE,
    job_id BLOB REFERENCES job (id) ON DELETE CASCADE,
    instruction TEXT NOT NULL,
    priority TEXT NOT NULL CHECK (priority IN ('normal', 'urgent')),
    state TEXT NOT NULL CHECK (state IN ('queued', 'injected', 'expired')),
    injected_at_turn INTEGER,
    created_by TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX steering_job ON steering_message (job_id, state);

CREATE TABLE provider_credential (
    id BLOB PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('llm', 'embedding', 'search', 'tool_secret', 'speech')),
    name TEXT NOT NULL,
    api_style TEXT CHECK (api_style IN ('openai', 'anthropic')),
    base_url TEXT,
    secret_enc TEXT,
    models TEXT NOT NULL,
    prices TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'error', 'disabled')),
    last_used_at INTEGER,
    last_error TEXT,
    error_count INTEGER NOT NULL DEFAULT 0,
    source TEXT NOT NULL CHECK (source IN ('env', 'api')),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (kind, name)
) STRICT;

CREATE TABLE mcp_server (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    slug TEXT NOT NULL UNIQUE,
    transport TEXT NOT NULL CHECK (transport IN ('stdio', 'http')),
    command TEXT,
    args TEXT NOT NULL,
    env_enc TEXT,
    env_keys TEXT NOT NULL,
    url TEXT,
    headers_enc TEXT,
    header_keys TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'active', 'degraded', 'error', 'disabled')),
    protocol_version TEXT,
    server_info TEXT,
    capabilities TEXT,
    probe_interval_seconds INTEGER NOT NULL CHECK (probe_interval_seconds BETWEEN 1 AND 3600),
    last_healthy_at INTEGER,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE mcp_tool (
    id BLOB PRIMARY KEY,
    server_id BLOB NOT NULL REFERENCES mcp_server (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    tool_ref TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    input_schema TEXT NOT NULL,
    annotations TEXT,
    available INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (server_id, name)
) STRICT;

CREATE TABLE webhook_tool (
    id BLOB PRIMARY KEY,
    agent_id BLOB REFERENCES agent (id) ON DELETE CASCADE,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    input_schema TEXT NOT NULL,
    url TEXT NOT NULL,
    method TEXT NOT NULL,
    headers_enc TEXT,
    header_keys TEXT NOT NULL,
    timeout_ms INTEGER NOT NULL,
    risk TEXT NOT NULL CHECK (risk IN ('p0', 'p1', 'p2', 'p3')),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- Spend per scope and period with in-flight reservations, so concurrent turns cannot overspend (SPEC §5.1).
CREATE TABLE budget_ledger (
    scope_kind TEXT NOT NULL CHECK (scope_kind IN ('agent', 'api_key', 'session', 'job')),
    scope_id BLOB NOT NULL,
    period TEXT NOT NULL,
    tokens_spent INTEGER NOT NULL DEFAULT 0,
    tokens_reserved INTEGER NOT NULL DEFAULT 0,
    usd_spent REAL NOT NULL DEFAULT 0,
    usd_reserved REAL NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (scope_kind, scope_id, period)
) STRICT;

-- Open reservations; a crash leaves them here and recovery settles them at their worst case.
CREATE TABLE budget_reservation (
    id BLOB PRIMARY KEY,
    job_id BLOB NOT NULL,
    entries TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    usd REAL NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX budget_reservation_job ON budget_reservation (job_id);

CREATE TABLE memory_record (
    id BLOB PRIMARY KEY,
    agent_id BLOB NOT NULL REFERENCES agent (id) ON DELETE CASCADE,
    type TEXT NOT NULL CHECK (type IN ('fact', 'preference', 'event', 'system_rule', 'lesson', 'relationship')),
    content TEXT NOT NULL,
    tags TEXT NOT NULL,
    importance INTEGER NOT NULL CHECK (importance BETWEEN 1 AND 5),
    confidence REAL NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('manual', 'extraction', 'tool', 'markdown')),
    source_ref TEXT,
    content_hash TEXT NOT NULL,
    access_count INTEGER NOT NULL DEFAULT 0,
    last_accessed_at INTEGER,
    deleted_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX memory_agent ON memory_record (agent_id, created_at);
