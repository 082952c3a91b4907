-- Fast memory search (SPEC §9.5–§9.6, issue 16).
--
-- Rows changed since a time, per agent: the embedded vector index catches up from its persisted copy with them.
CREATE INDEX memory_changes ON memory_record (agent_id, updated_at);

-- The embedded vector index of an agent as last persisted (format owned by `cortex-memory`): a cache that a
-- restart loads instead of decoding every row. `through_ms` is the latest `updated_at` it includes; rows
-- changed since are applied on load. The relational rows stay the source of truth; deleting this row only
-- costs one rebuild.
CREATE TABLE memory_vector_index (
    agent_id BLOB PRIMARY KEY REFERENCES agent (id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    through_ms INTEGER NOT NULL,
    data BLOB NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- Keyword index, rebuilt: contentless FTS5 holding only live records (not deleted, not superseded), with the
-- agent as an indexed column (`<agent id hex>0`: ending in a digit, the porter stemmer leaves it whole), so
-- a search ranks and limits inside the index before it touches `memory_record`. The agent column weighs 0
-- in the rank. `rowid` is `memory_record.rowid` (the store never runs VACUUM; see 0013).
DROP TRIGGER memory_record_fts_insert;
DROP TRIGGER memory_record_fts_delete;
DROP TRIGGER memory_record_fts_update;
DROP TABLE memory_record_fts;
CREATE VIRTUAL TABLE memory_record_fts USING fts5 (
    agent,
    content,
    content = '',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
INSERT INTO memory_record_fts (memory_record_fts, rank) VALUES ('rank', 'bm25(0.0, 1.0)');
INSERT INTO memory_record_fts (rowid, agent, content)
    SELECT rowid, lower(hex(agent_id)) || '0', content FROM memory_record
    WHERE deleted_at IS NULL AND superseded_by IS NULL;

CREATE TRIGGER memory_record_fts_insert AFTER INSERT ON memory_record
WHEN new.deleted_at IS NULL AND new.superseded_by IS NULL BEGIN
    INSERT INTO memory_record_fts (rowid, agent, content) VALUES (new.rowid, lower(hex(new.agent_id)) || '0', new.content);
END;
CREATE TRIGGER memory_record_fts_delete AFTER DELETE ON memory_record
WHEN old.deleted_at IS NULL AND old.superseded_by IS NULL BEGIN
    INSERT INTO memory_record_fts (memory_record_fts, rowid, agent, content)
    VALUES ('delete', old.rowid, lower(hex(old.agent_id)) || '0', old.content);
END;
CREATE TRIGGER memory_record_fts_update AFTER UPDATE OF content, deleted_at, superseded_by ON memory_record BEGIN
    INSERT INTO memory_record_fts (memory_record_fts, rowid, agent, content)
    SELECT 'delete', old.rowid, lower(hex(old.agent_id)) || '0', old.content
    WHERE old.deleted_at IS NULL AND old.superseded_by IS NULL;
    INSERT INTO memory_record_fts (rowid, agent, content)
    SELECT new.rowid, lower(hex(new.agent_id)) || '0', new.content
    WHERE new.deleted_at IS NULL AND new.superseded_by IS NULL;
END;
