-- Core schema (SPEC §3): identity, agents, sessions, jobs, events, tools, approvals, budgets.
-- Times are unix milliseconds (BIGINT); ids are UUIDv7 as 16-byte UUIDs; JSON documents are TEXT.

CREATE TABLE user_account (
    id UUID PRIMARY KEY,
    display_name TEXT NOT NULL,
    email TEXT,
    role TEXT NOT NULL CHECK (role IN ('admin', 'approver', 'operator', 'viewer', 'none')),
    password_hash TEXT,
    disabled_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX user_account_email ON user_account (email) WHERE email IS NOT NULL;

CREATE TABLE api_key (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'approver', 'operator', 'viewer')),
    user_id UUID REFERENCES user_account (id),
    budget JSONB,
    expires_at BIGINT,
    last_used_at BIGINT,
    revoked_at BIGINT,
    source TEXT NOT NULL CHECK (source IN ('bootstrap', 'env', 'api')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE audit_log (
    id UUID PRIMARY KEY,
    actor_type TEXT NOT NULL CHECK (actor_type IN ('user', 'api_key', 'agent', 'system', 'channel_user')),
    actor_id TEXT,
    action TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id TEXT,
    details JSONB NOT NULL,
    ip TEXT,
    request_id TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX audit_log_target ON audit_log (target_type, target_id, created_at);
CREATE INDEX audit_log_action ON audit_log (action, created_at);

CREATE TABLE agent (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    slug TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    description TEXT NOT NULL,
    system_prompt TEXT NOT NULL,
    model_config JSONB NOT NULL,
    resource_limits JSONB NOT NULL,
    max_concurrent_jobs BIGINT NOT NULL CHECK (max_concurrent_jobs > 0),
    access_mode TEXT NOT NULL CHECK (access_mode IN ('open', 'bound_chats', 'allowlist', 'approval_queue')),
    skills JSONB NOT NULL,
    subagents JSONB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'disabled', 'archived')),
    health_state TEXT NOT NULL CHECK (health_state IN ('healthy', 'degraded', 'quarantined')),
    quarantine_reason TEXT,
    health_reset_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE session (
    id UUID PRIMARY KEY,
    agent_id UUID NOT NULL REFERENCES agent (id) ON DELETE CASCADE,
    user_id UUID REFERENCES user_account (id),
    origin TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'idle', 'archived', 'closed')),
    tokens_in BIGINT NOT NULL DEFAULT 0,
    tokens_out BIGINT NOT NULL DEFAULT 0,
    cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    message_count BIGINT NOT NULL DEFAULT 0,
    last_activity_at BIGINT NOT NULL,
    closed_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX session_agent ON session (agent_id, user_id, status, last_activity_at DESC);

CREATE TABLE job (
    id UUID PRIMARY KEY,
    agent_id UUID NOT NULL REFERENCES agent (id) ON DELETE CASCADE,
    session_id UUID REFERENCES session (id) ON DELETE SET NULL,
    kind TEXT NOT NULL CHECK (kind IN ('chat', 'task', 'scheduled', 'subagent', 'replay', 'heartbeat', 'memory_extract', 'content_publish')),
    status TEXT NOT NULL CHECK (status IN ('pending', 'scheduled', 'running', 'waiting_for_approval', 'completed', 'failed', 'timed_out', 'retrying', 'dead_letter')),
    priority BIGINT NOT NULL CHECK (priority BETWEEN -100 AND 100),
    payload JSONB NOT NULL,
    result JSONB,
    error JSONB,
    attempt BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL CHECK (max_attempts BETWEEN 1 AND 100),
    timeout_seconds BIGINT NOT NULL CHECK (timeout_seconds BETWEEN 1 AND 3600),
    run_at BIGINT NOT NULL,
    resume BOOLEAN NOT NULL DEFAULT FALSE,
    attempt_elapsed_ms BIGINT NOT NULL DEFAULT 0,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    claimed_by UUID,
    heartbeat_at BIGINT,
    started_at BIGINT,
    attempt_started_at BIGINT,
    completed_at BIGINT,
    checkpoint TEXT,
    checkpoint_crc BIGINT,
    tokens_in BIGINT NOT NULL DEFAULT 0,
    tokens_out BIGINT NOT NULL DEFAULT 0,
    cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    llm_calls BIGINT NOT NULL DEFAULT 0,
    tool_calls BIGINT NOT NULL DEFAULT 0,
    parent_job_id UUID REFERENCES job (id) ON DELETE SET NULL,
    delegation_depth BIGINT NOT NULL DEFAULT 0,
    approval_id UUID,
    idempotency_key TEXT,
    created_by TEXT,
    traceparent TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
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
);
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

CREATE FUNCTION job_status_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status NOT IN ('pending', 'scheduled') THEN
            RAISE EXCEPTION 'illegal job transition: a job starts pending or scheduled' USING ERRCODE = 'check_violation';
        END IF;
    ELSIF NEW.status IS DISTINCT FROM OLD.status
        AND NOT EXISTS (SELECT 1 FROM job_transition WHERE from_status = OLD.status AND to_status = NEW.status) THEN
        RAISE EXCEPTION 'illegal job transition % -> %', OLD.status, NEW.status USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER job_status_guard BEFORE INSERT OR UPDATE OF status ON job
FOR EACH ROW EXECUTE FUNCTION job_status_guard();

CREATE TABLE session_message (
    id UUID PRIMARY KEY,
    session_id UUID NOT NULL REFERENCES session (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content TEXT NOT NULL,
    job_id UUID REFERENCES job (id) ON DELETE SET NULL,
    source JSONB,
    created_at BIGINT NOT NULL,
    UNIQUE (session_id, seq)
);

CREATE TABLE agent_event (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id UUID NOT NULL,
    job_id UUID,
    session_id UUID,
    type TEXT NOT NULL CHECK (type IN ('job.state', 'llm.request', 'llm.delta', 'llm.message', 'llm.usage', 'tool.call',
        'tool.result', 'tool.denied', 'tool.rate_limited', 'approval.requested', 'approval.decided', 'steer.injected',
        'steer.acknowledged', 'checkpoint', 'subagent.spawned', 'subagent.finished', 'cost.alert', 'breaker.trip',
        'message.received', 'message.sent', 'job.completed', 'job.failed', 'error')),
    payload JSONB NOT NULL,
    tokens_in BIGINT,
    tokens_out BIGINT,
    cost_usd DOUBLE PRECISION,
    model TEXT,
    tool_ref TEXT,
    actor TEXT NOT NULL CHECK (actor IN ('agent', 'operator', 'system')),
    created_at BIGINT NOT NULL
);
CREATE INDEX agent_event_job ON agent_event (job_id, seq);
CREATE INDEX agent_event_agent ON agent_event (agent_id, seq);
CREATE INDEX agent_event_type ON agent_event (type, created_at);

CREATE TABLE worker (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    pid BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    stopped_at BIGINT
);

CREATE TABLE lease (
    name TEXT PRIMARY KEY,
    holder UUID NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE agent_tool_policy (
    id UUID PRIMARY KEY,
    agent_id UUID NOT NULL REFERENCES agent (id) ON DELETE CASCADE,
    tool_ref TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    approval TEXT NOT NULL CHECK (approval IN ('never', 'always', 'risk')),
    risk TEXT CHECK (risk IN ('p0', 'p1', 'p2', 'p3')),
    condition JSONB,
    rate_limit JSONB,
    cost_budget JSONB,
    data_scope JSONB,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (agent_id, tool_ref)
);

CREATE TABLE tool_call (
    id UUID PRIMARY KEY,
    job_id UUID NOT NULL REFERENCES job (id) ON DELETE CASCADE,
    agent_id UUID NOT NULL,
    call_id TEXT NOT NULL,
    turn BIGINT NOT NULL,
    tool_ref TEXT NOT NULL,
    input JSONB NOT NULL,
    input_hash TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('requested', 'awaiting_approval', 'running', 'completed', 'failed', 'rejected', 'interrupted')),
    output JSONB,
    is_error BOOLEAN NOT NULL DEFAULT FALSE,
    approval_id UUID,
    idempotent BOOLEAN NOT NULL,
    duration_ms BIGINT,
    cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (job_id, call_id)
);
CREATE INDEX tool_call_agent_tool ON tool_call (agent_id, tool_ref, created_at);

CREATE TABLE approval_request (
    id UUID PRIMARY KEY,
    job_id UUID NOT NULL REFERENCES job (id) ON DELETE CASCADE,
    tool_call_id UUID REFERENCES tool_call (id) ON DELETE CASCADE,
    agent_id UUID NOT NULL,
    action_type TEXT NOT NULL CHECK (action_type IN ('tool', 'job', 'request')),
    action_summary TEXT NOT NULL,
    action_detail JSONB NOT NULL,
    tool_ref TEXT,
    args_hash TEXT,
    risk TEXT NOT NULL CHECK (risk IN ('p0', 'p1', 'p2', 'p3')),
    token_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
    requested_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    decided_at BIGINT,
    decided_by UUID REFERENCES user_account (id),
    decided_by_key UUID,
    decided_via TEXT CHECK (decided_via IN ('api', 'dashboard', 'token', 'telegram', 'discord', 'slack', 'whatsapp', 'policy')),
    reason TEXT,
    approver_user_id UUID,
    executed_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX approval_pending_token ON approval_request (token_hash) WHERE status = 'pending';
CREATE INDEX approval_pending_expiry ON approval_request (expires_at) WHERE status = 'pending';
CREATE INDEX approval_job ON approval_request (job_id);
CREATE INDEX approval_status ON approval_request (status, created_at);

CREATE TABLE approval_audit (
    id UUID PRIMARY KEY,
    approval_id UUID NOT NULL REFERENCES approval_request (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    event TEXT NOT NULL CHECK (event IN ('created', 'notified', 'notification_failed', 'reminder_sent', 'escalated', 'decided', 'unauthorized_attempt', 'expired', 'executed')),
    actor JSONB NOT NULL,
    details JSONB NOT NULL,
    entry_hash TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (approval_id, seq)
);

CREATE TABLE steering_message (
    id UUID PRIMARY KEY,
    agent_id UUID NOT NULL REFERENCES agent (id) ON DELETE CASCADE,
    job_id UUID REFERENCES job (id) ON DELETE CASCADE,
    instruction TEXT NOT NULL,
    priority TEXT NOT NULL CHECK (priority IN ('normal', 'urgent')),
    state TEXT NOT NULL CHECK (state IN ('queued', 'injected', 'expired')),
    injected_at_turn BIGINT,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX steering_job ON steering_message (job_id, state);

CREATE TABLE provider_credential (
    id UUID PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('llm', 'embedding', 'search', 'tool_secret', 'speech')),
    name TEXT NOT NULL,
    api_style TEXT CHECK (api_style IN ('openai', 'anthropic')),
    base_url TEXT,
    secret_enc TEXT,
    models JSONB NOT NULL,
    prices JSONB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'error', 'disabled')),
    last_used_at BIGINT,
    last_error TEXT,
    error_count BIGINT NOT NULL DEFAULT 0,
    source TEXT NOT NULL CHECK (source IN ('env', 'api')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (kind, name)
);

CREATE TABLE mcp_server (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    slug TEXT NOT NULL UNIQUE,
    transport TEXT NOT NULL CHECK (transport IN ('stdio', 'http')),
    command TEXT,
    args JSONB NOT NULL,
    env_enc TEXT,
    env_keys JSONB NOT NULL,
    url TEXT,
    headers_enc TEXT,
    header_keys JSONB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'active', 'degraded', 'error', 'disabled')),
    protocol_version TEXT,
    server_info JSONB,
    capabilities JSONB,
    probe_interval_seconds BIGINT NOT NULL CHECK (probe_interval_seconds BETWEEN 1 AND 3600),
    last_healthy_at BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE mcp_tool (
    id UUID PRIMARY KEY,
    server_id UUID NOT NULL REFERENCES mcp_server (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    tool_ref TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    input_schema JSONB NOT NULL,
    annotations JSONB,
    available BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (server_id, name)
);

CREATE TABLE webhook_tool (
    id UUID PRIMARY KEY,
    agent_id UUID REFERENCES agent (id) ON DELETE CASCADE,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    input_schema JSONB NOT NULL,
    url TEXT NOT NULL,
    method TEXT NOT NULL,
    headers_enc TEXT,
    header_keys JSONB NOT NULL,
    timeout_ms BIGINT NOT NULL,
    risk TEXT NOT NULL CHECK (risk IN ('p0', 'p1', 'p2', 'p3')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Spend per scope and period with in-flight reservations, so concurrent turns cannot overspend (SPEC §5.1).
CREATE TABLE budget_ledger (
    scope_kind TEXT NOT NULL CHECK (scope_kind IN ('agent', 'api_key', 'session', 'job')),
    scope_id UUID NOT NULL,
    period TEXT NOT NULL,
    tokens_spent BIGINT NOT NULL DEFAULT 0,
    tokens_reserved BIGINT NOT NULL DEFAULT 0,
    usd_spent DOUBLE PRECISION NOT NULL DEFAULT 0,
    usd_reserved DOUBLE PRECISION NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (scope_kind, scope_id, period)
);

-- Open reservations; a crash leaves them here and recovery settles them at their worst case.
CREATE TABLE budget_reservation (
    id UUID PRIMARY KEY,
    job_id UUID NOT NULL,
    entries JSONB NOT NULL,
    tokens BIGINT NOT NULL,
    usd DOUBLE PRECISION NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX budget_reservation_job ON budget_reservation (job_id);

CREATE TABLE memory_record (
    id UUID PRIMARY KEY,
    agent_id UUID NOT NULL REFERENCES agent (id) ON DELETE CASCADE,
    type TEXT NOT NULL CHECK (type IN ('fact', 'preference', 'event', 'system_rule', 'lesson', 'relationship')),
    content TEXT NOT NULL,
    tags JSONB NOT NULL,
    importance BIGINT NOT NULL CHECK (importance BETWEEN 1 AND 5),
    confidence DOUBLE PRECISION NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('manual', 'extraction', 'tool', 'markdown')),
    source_ref TEXT,
    content_hash TEXT NOT NULL,
    access_count BIGINT NOT NULL DEFAULT 0,
    last_accessed_at BIGINT,
    deleted_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX memory_agent ON memory_record (agent_id, created_at);
