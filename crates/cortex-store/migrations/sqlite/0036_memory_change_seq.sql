-- Memory change sequence (SPEC §9.5, issue 16): an exact, cheap way for a vector index to know what changed.
--
-- Every transaction that writes an agent's memory records takes the agent's next `memory_change.seq` (one
-- upsert that locks the agent's row until commit, so on PostgreSQL the sequence follows commit order) and
-- stamps it on every record it writes (`memory_record.change_seq`). A cached index remembers the sequence it
-- covers and catches up with `change_seq > covered` only; the persisted embedded index stores it too
-- (`memory_vector_index.through_seq`). Rows written before this migration have sequence 0: a fresh index
-- (covering -1) reads them once.
CREATE TABLE memory_change (
    agent_id BLOB PRIMARY KEY REFERENCES agent (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL
) STRICT;

ALTER TABLE memory_record ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
DROP INDEX memory_changes;
CREATE INDEX memory_changes ON memory_record (agent_id, change_seq);

-- The persisted indexes covered times, not sequences: drop them (a cache; the next search rebuilds once).
DELETE FROM memory_vector_index;
ALTER TABLE memory_vector_index RENAME COLUMN through_ms TO through_seq;
