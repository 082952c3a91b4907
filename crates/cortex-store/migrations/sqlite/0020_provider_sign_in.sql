-- Provider sign-in (issue 15): authorization code with PKCE.
-- A credential obtained by signing in remembers the flow (to refresh it), its refresh token (encrypted
-- like the secret, for `provider_credential.refresh_enc.<id>`) and when its secret expires.
ALTER TABLE provider_credential ADD COLUMN sign_in TEXT;
ALTER TABLE provider_credential ADD COLUMN refresh_enc TEXT;
ALTER TABLE provider_credential ADD COLUMN expires_at INTEGER;
-- A sign-in in progress: single use (deleted when completed), valid for 10 minutes. The PKCE verifier is
-- encrypted for `provider_sign_in.verifier_enc.<id>`; `state` is the random value the callback carries.
CREATE TABLE provider_sign_in (
    id BLOB PRIMARY KEY,
    state TEXT NOT NULL UNIQUE,
    provider TEXT NOT NULL,
    credential_name TEXT NOT NULL,
    verifier_enc TEXT NOT NULL,
    callback_url TEXT NOT NULL,
    base_url TEXT,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
