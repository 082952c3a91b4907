-- Fast memory search (SPEC §9.5–§9.6, issue 16).
--
-- Rows changed since a time, per agent: the embedded vector index catches up from its persisted copy with them.
CREATE INDEX memory_changes ON memory_record (agent_id, updated_at);

-- The embedded vector index of an agent as last persisted (format owned by `cortex-memory`): a cache that a
-- restart loads instead of decoding every row. `through_ms` is the latest `updated_at` it includes; rows
-- changed since are applied on load. The relational rows stay the source of truth; deleting this row only
-- costs one rebuild.
CREATE TABLE memory_vector_index (
    agent_id UUID PRIMARY KEY REFERENCES agent (id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    through_ms BIGINT NOT NULL,
    data BYTEA NOT NULL,
    updated_at BIGINT NOT NULL
);
