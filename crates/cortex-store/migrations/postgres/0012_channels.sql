-- Channels (SPEC §8): chat-platform bots, agent ↔ chat bindings, platform identities, access control, the
-- inbound dedupe log, receive cursors and the generic durable outbox.
-- Times are unix milliseconds (BIGINT); ids are UUIDv7 UUIDs; JSON documents are JSONB.

-- One bot on one platform. `config` holds non-secret settings; `secrets_enc` the encrypted JSON map of
-- tokens (cell `channel.secrets_enc.<id>`), `secret_keys` the names of the secrets that are set.
CREATE TABLE channel (
    id UUID PRIMARY KEY,
    type TEXT NOT NULL CHECK (type IN ('telegram', 'discord', 'slack', 'whatsapp')),
    name TEXT NOT NULL UNIQUE,
    config JSONB NOT NULL,
    secrets_enc TEXT,
    secret_keys JSONB NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('env', 'api')),
    enabled BOOLEAN NOT NULL,
    inbound_policy TEXT NOT NULL CHECK (inbound_policy IN ('open', 'allowlist')),
    default_agent_id UUID REFERENCES agent (id) ON DELETE SET NULL,
    bot_identity JSONB,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Which agent answers a chat. `channel_id` NULL binds the chat on every channel of `channel_type`.
CREATE TABLE channel_binding (
    id UUID PRIMARY KEY,
    agent_id UUID NOT NULL REFERENCES agent (id) ON DELETE CASCADE,
    channel_type TEXT NOT NULL CHECK (channel_type IN ('telegram', 'discord', 'slack', 'whatsapp')),
    channel_id UUID REFERENCES channel (id) ON DELETE CASCADE,
    chat_id TEXT NOT NULL,
    respond_to TEXT CHECK (respond_to IN ('all', 'mentions')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX channel_binding_pinned ON channel_binding (channel_id, chat_id) WHERE channel_id IS NOT NULL;
CREATE UNIQUE INDEX channel_binding_any ON channel_binding (channel_type, chat_id) WHERE channel_id IS NULL;
CREATE INDEX channel_binding_agent ON channel_binding (agent_id);

-- A platform user of one channel, linked to the (cross-channel) user account it speaks for.
CREATE TABLE channel_mapping (
    id UUID PRIMARY KEY,
    channel_id UUID NOT NULL REFERENCES channel (id) ON DELETE CASCADE,
    platform_user_id TEXT NOT NULL,
    user_id UUID NOT NULL REFERENCES user_account (id) ON DELETE CASCADE,
    display_name TEXT NOT NULL,
    pairing_failures BIGINT NOT NULL DEFAULT 0,
    pairing_window_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (channel_id, platform_user_id)
);
CREATE INDEX channel_mapping_user ON channel_mapping (user_id);

-- Channel gate for `inbound_policy = allowlist`.
CREATE TABLE channel_allowlist (
    channel_id UUID NOT NULL REFERENCES channel (id) ON DELETE CASCADE,
    platform_user_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (channel_id, platform_user_id)
);

-- Who may talk to an agent (SPEC §8.8).
CREATE TABLE agent_grant (
    id UUID PRIMARY KEY,
    agent_id UUID NOT NULL REFERENCES agent (id) ON DELETE CASCADE,
    user_id UUID NOT NULL REFERENCES user_account (id) ON DELETE CASCADE,
    access TEXT NOT NULL CHECK (access IN ('read', 'write')),
    origin TEXT NOT NULL CHECK (origin IN ('open', 'bound_chat', 'invite', 'pairing', 'approval')),
    status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    expires_at BIGINT,
    rate_limit JSONB,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (agent_id, user_id)
);

-- Operator-made, single-use, short-lived codes a chat user redeems for a grant.
CREATE TABLE pairing_code (
    id UUID PRIMARY KEY,
    agent_id UUID NOT NULL REFERENCES agent (id) ON DELETE CASCADE,
    code TEXT NOT NULL UNIQUE,
    access TEXT NOT NULL CHECK (access IN ('read', 'write')),
    created_by TEXT,
    expires_at BIGINT NOT NULL,
    redeemed_at BIGINT,
    redeemed_by UUID REFERENCES user_account (id) ON DELETE SET NULL,
    revoked_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX pairing_code_agent ON pairing_code (agent_id, created_at);

CREATE TABLE access_request (
    id UUID PRIMARY KEY,
    agent_id UUID NOT NULL REFERENCES agent (id) ON DELETE CASCADE,
    user_id UUID NOT NULL REFERENCES user_account (id) ON DELETE CASCADE,
    channel_id UUID REFERENCES channel (id) ON DELETE SET NULL,
    chat_id TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied')),
    reason TEXT,
    decided_by TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX access_request_pending ON access_request (agent_id, user_id) WHERE status = 'pending';
CREATE INDEX access_request_agent ON access_request (agent_id, status, created_at);

-- Every inbound platform message or button press, persisted before the platform is acknowledged. The
-- unique key makes webhook retries and gateway replays land on the row that is already there.
CREATE TABLE inbound_message (
    id UUID PRIMARY KEY,
    channel_id UUID NOT NULL REFERENCES channel (id) ON DELETE CASCADE,
    platform_message_id TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    event JSONB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('received', 'routed', 'refused', 'ignored', 'failed')),
    user_id UUID REFERENCES user_account (id) ON DELETE SET NULL,
    agent_id UUID REFERENCES agent (id) ON DELETE SET NULL,
    job_id UUID REFERENCES job (id) ON DELETE SET NULL,
    detail TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (channel_id, platform_message_id)
);
CREATE INDEX inbound_message_status ON inbound_message (status, created_at);

-- Where a receive loop resumes (Telegram's next update offset, a gateway's session and sequence).
CREATE TABLE channel_cursor (
    channel_id UUID PRIMARY KEY REFERENCES channel (id) ON DELETE CASCADE,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The durable outbox: every outbound side effect is a row written in the transaction of the state that
-- produced it, and `delivered` only with the platform's id for it (`platform_message_id`).
CREATE TABLE outbox (
    id UUID PRIMARY KEY,
    channel_id UUID REFERENCES channel (id) ON DELETE CASCADE,
    target JSONB NOT NULL,
    payload JSONB NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'delivered', 'failed')),
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_expires_at BIGINT,
    claimed_by UUID,
    platform_message_id TEXT,
    last_error TEXT,
    job_id UUID REFERENCES job (id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
CREATE INDEX outbox_channel ON outbox (channel_id, created_at);
