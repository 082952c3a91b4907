-- Memory (SPEC §9, issue 16): provenance, supersession and embeddings on `memory_record`, plus the keyword
-- index. Provenance ids are historical references without foreign keys: a record outlives the job that
-- wrote it (retention deletes old jobs) and a purged session.
ALTER TABLE memory_record ADD COLUMN people TEXT NOT NULL DEFAULT '[]';
ALTER TABLE memory_record ADD COLUMN projects TEXT NOT NULL DEFAULT '[]';
ALTER TABLE memory_record ADD COLUMN session_id BLOB;
ALTER TABLE memory_record ADD COLUMN job_id BLOB;
ALTER TABLE memory_record ADD COLUMN message_seq INTEGER;
ALTER TABLE memory_record ADD COLUMN supersedes_id BLOB;
ALTER TABLE memory_record ADD COLUMN superseded_by BLOB;
-- Why the record exists in this form (extraction: which rule kept, merged or superseded it).
ALTER TABLE memory_record ADD COLUMN reason TEXT;
-- Unit-length f32 little-endian vector and the model that produced it; only vectors of the same model are compared.
ALTER TABLE memory_record ADD COLUMN embedding BLOB;
ALTER TABLE memory_record ADD COLUMN embedding_model TEXT;

CREATE INDEX memory_hash ON memory_record (agent_id, content_hash);

-- Keyword index: FTS5 over `content`, external content keyed by the table's rowid. memory_record has no
-- INTEGER PRIMARY KEY, so a plain VACUUM could renumber rowids; the store never runs one, and
-- `INSERT INTO memory_record_fts (memory_record_fts) VALUES ('rebuild')` restores the index if someone does.
-- Names containing `_fts` are engine-specific full-text structures (the schema-parity test skips them).
CREATE VIRTUAL TABLE memory_record_fts USING fts5 (
    content,
    content = 'memory_record',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
INSERT INTO memory_record_fts (memory_record_fts) VALUES ('rebuild');

CREATE TRIGGER memory_record_fts_insert AFTER INSERT ON memory_record BEGIN
    INSERT INTO memory_record_fts (rowid, content) VALUES (new.rowid, new.content);
END;
CREATE TRIGGER memory_record_fts_delete AFTER DELETE ON memory_record BEGIN
    INSERT INTO memory_record_fts (memory_record_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
END;
CREATE TRIGGER memory_record_fts_update AFTER UPDATE OF content ON memory_record BEGIN
    INSERT INTO memory_record_fts (memory_record_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
    INSERT INTO memory_record_fts (rowid, content) VALUES (new.rowid, new.content);
END;
