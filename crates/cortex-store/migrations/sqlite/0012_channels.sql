-- Channels (SPEC §8): chat-platform bots, agent ↔ chat bindings, platform identities, access control, the
-- inbound dedupe log, receive cursors and the generic durable outbox.
-- Times are unix milliseconds (INTEGER); ids are UUIDv7 as 16-byte BLOBs; JSON documents are TEXT.

-- One bot on one platform. `config` holds non-secret settings; `secrets_enc` the encrypted JSON map of
-- tokens (cell `channel.secrets_enc.<id>`), `secret_keys` the names of the secrets that are set.
CREATE TABLE channel (
    id BLOB PRIMARY KEY,
    type TEXT NOT NULL CHECK (type IN ('telegram', 'discord', 'slack', 'whatsapp')),
    name TEXT NOT NULL UNIQUE,
    config TEXT NOT NULL,
    secrets_enc TEXT,
    secret_keys TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('env', 'api')),
    enabled INTEGER NOT NULL,
    inbound_policy TEXT NOT NULL CHECK (inbound_policy IN ('open', 'allowlist')),
    default_agent_id BLOB REFERENCES agent (id) ON DELETE SET NULL,
    bot_identity TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- Which agent answers a chat. `channel_id` NULL binds the chat on every channel of `channel_type`.
CREATE TABLE channel_binding (
    id BLOB PRIMARY KEY,
    agent_id BLOB NOT NULL REFERENCES agent (id) ON DELETE CASCADE,
    channel_type TEXT NOT NULL CHECK (channel_type IN ('telegram', 'discord', 'slack', 'whatsapp')),
    channel_id BLOB REFERENCES channel (id) ON DELETE CASCADE,
    chat_id TEXT NOT NULL,
    respond_to TEXT CHECK (respond_to IN ('all', 'mentions')),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX channel_binding_pinned ON channel_binding (channel_id, chat_id) WHERE channel_id IS NOT NULL;
CREATE UNIQUE INDEX channel_binding_any ON channel_binding (channel_type, chat_id) WHERE channel_id IS NULL;
CREATE INDEX channel_binding_agent ON channel_binding (agent_id);

-- A platform user of one channel, linked to the (cross-channel) user account it speaks for.
CREATE TABLE channel_mapping (
    id BLOB PRIMARY KEY,
    channel_id BLOB NOT NULL REFERENCES channel (id) ON DELETE CASCADE,
    platform_user_id TEXT NOT NULL,
    user_id BLOB NOT NULL REFERENCES user_account (id) ON DELETE CASCADE,
    display_name TEXT NOT NULL,
    pairing_failures INTEGER NOT NULL DEFAULT 0,
    pairing_window_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (channel_id, platform_user_id)
) STRICT;
CREATE INDEX channel_mapping_user ON channel_mapping (user_id);

-- Channel gate for `inbound_policy = allowlist`.
CREATE TABLE channel_allowlist (
    channel_id BLOB NOT NULL REFERENCES channel (id) ON DELETE CASCADE,
    platform_user_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (channel_id, platform_user_id)
) STRICT;

-- Who may talk to an agent (SPEC §8.8).
CREATE TABLE agent_grant (
    id BLOB PRIMARY KEY,
    agent_id BLOB NOT NULL REFERENCES agent (id) ON DELETE CASCADE,
    user_id BLOB NOT NULL REFERENCES user_account (id) ON DELETE CASCADE,
    access TEXT NOT NULL CHECK (access IN ('read', 'write')),
    origin TEXT NOT NULL CHECK (origin IN ('open', 'bound_chat', 'invite', 'pairing', 'approval')),
    status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    expires_at INTEGER,
    rate_limit TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (agent_id, user_id)
) STRICT;

-- Operator-made, single-use, short-lived codes a chat user redeems for a grant.
CREATE TABLE pairing_code (
    id BLOB PRIMARY KEY,
    agent_id BLOB NOT NULL REFERENCES agent (id) ON DELETE CASCADE,
    code TEXT NOT NULL UNIQUE,
    access TEXT NOT NULL CHECK (access IN ('read', 'write')),
    created_by TEXT,
    expires_at INTEGER NOT NULL,
    redeemed_at INTEGER,
    redeemed_by BLOB REFERENCES user_account (id) ON DELETE SET NULL,
    revoked_at INTEGER,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX pairing_code_agent ON pairing_code (agent_id, created_at);

CREATE TABLE access_request (
    id BLOB PRIMARY KEY,
    agent_id BLOB NOT NULL REFERENCES agent (id) ON DELETE CASCADE,
    user_id BLOB NOT NULL REFERENCES user_account (id) ON DELETE CASCADE,
    channel_id BLOB REFERENCES channel (id) ON DELETE SET NULL,
    chat_id TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied')),
    reason TEXT,
    decided_by TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX access_request_pending ON access_request (agent_id, user_id) WHERE status = 'pending';
CREATE INDEX access_request_agent ON access_request (agent_id, status, created_at);

-- Every inbound platform message or button press, persisted before the platform is acknowledged. The
-- unique key makes webhook retries and gateway replays land on the row that is already there.
CREATE TABLE inbound_message (
    id BLOB PRIMARY KEY,
    channel_id BLOB NOT NULL REFERENCES channel (id) ON DELETE CASCADE,
    platform_message_id TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    event TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('received', 'routed', 'refused', 'ignored', 'failed')),
    user_id BLOB REFERENCES user_account (id) ON DELETE SET NULL,
    agent_id BLOB REFERENCES agent (id) ON DELETE SET NULL,
    job_id BLOB REFERENCES job (id) ON DELETE SET NULL,
    detail TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (channel_id, platform_message_id)
) STRICT;
CREATE INDEX inbound_message_status ON inbound_message (status, created_at);

-- Where a receive loop resumes (Telegram's next update offset, a gateway's session and sequence).
CREATE TABLE channel_cursor (
    channel_id BLOB PRIMARY KEY REFERENCES channel (id) ON DELETE CASCADE,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- The durable outbox: every outbound side effect is a row written in the transaction of the state that
-- produced it, and `delivered` only with the platform's id for it (`platform_message_id`).
CREATE TABLE outbox (
    id BLOB PRIMARY KEY,
    channel_id BLOB REFERENCES channel (id) ON DELETE CASCADE,
    target TEXT NOT NULL,
    payload TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_expires_at INTEGER,
    claimed_by BLOB,
    platform_message_id TEXT,
    last_error TEXT,
    job_id BLOB REFERENCES job (id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
CREATE INDEX outbox_channel ON outbox (channel_id, created_at);
