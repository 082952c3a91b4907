-- Dashboard login (SPEC §3.1, §11.1, Appendix B "Local users", "Login providers", "Dashboard sessions").
-- Local passwords live in user_account.password_hash (0001). Web sessions store only the SHA-256 of their
-- 256-bit id. Failed logins are rows so that throttling holds across processes. The first-run setup is a
-- single row: a second setup cannot insert it again.

CREATE TABLE web_session (
    id UUID PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    user_id UUID NOT NULL REFERENCES user_account (id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    last_active_at BIGINT NOT NULL,
    ip TEXT,
    user_agent TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX web_session_user ON web_session (user_id);
CREATE INDEX web_session_expires ON web_session (expires_at);

CREATE TABLE login_attempt (
    id UUID PRIMARY KEY,
    ip TEXT NOT NULL,
    account TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX login_attempt_ip ON login_attempt (ip, created_at);
CREATE INDEX login_attempt_account ON login_attempt (account, created_at);

CREATE TABLE dashboard_setup (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    user_id UUID NOT NULL REFERENCES user_account (id),
    api_key_id UUID NOT NULL REFERENCES api_key (id),
    created_at BIGINT NOT NULL
);

CREATE TABLE login_provider (
    id UUID PRIMARY KEY,
    provider TEXT NOT NULL UNIQUE CHECK (provider IN ('github', 'google', 'oidc')),
    display_name TEXT,
    client_id TEXT NOT NULL,
    client_secret_enc TEXT,
    issuer_url TEXT,
    authorize_url TEXT,
    token_url TEXT,
    userinfo_url TEXT,
    api_url TEXT,
    auto_signup BOOLEAN NOT NULL DEFAULT FALSE,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE user_identity (
    id UUID PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES user_account (id) ON DELETE CASCADE,
    provider TEXT NOT NULL CHECK (provider IN ('github', 'google', 'oidc')),
    subject TEXT NOT NULL,
    email TEXT,
    email_verified BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (provider, subject)
);
CREATE INDEX user_identity_user ON user_identity (user_id);

CREATE TABLE oauth_state (
    id UUID PRIMARY KEY,
    state_hash TEXT NOT NULL UNIQUE,
    provider TEXT NOT NULL,
    pkce_verifier TEXT,
    nonce TEXT,
    redirect_to TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX oauth_state_expires ON oauth_state (expires_at);
