-- The Argon2id salt of a passphrase master key lives in the database, so every process sharing it derives
-- the same key (a salt is not secret).
CREATE TABLE secret_salt (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    salt TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
