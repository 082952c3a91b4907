-- Master-key verification (SPEC §17.3): one row per key id that has encrypted secrets, holding a fixed
-- plaintext encrypted with that key, so `serve` detects a wrong CORTEX_MASTER_KEY at startup instead of
-- leaving secrets silently unreadable. `retired_at` is set once rotation has re-encrypted everything.

CREATE TABLE secret_key_check (
    key_id TEXT PRIMARY KEY,
    check_enc TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);
