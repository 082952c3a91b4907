-- Memory (SPEC §9, issue 16): provenance, supersession and embeddings on `memory_record`, plus the keyword
-- index. Provenance ids are historical references without foreign keys: a record outlives the job that
-- wrote it (retention deletes old jobs) and a purged session.
ALTER TABLE memory_record
    ADD COLUMN people JSONB NOT NULL DEFAULT '[]',
    ADD COLUMN projects JSONB NOT NULL DEFAULT '[]',
    ADD COLUMN session_id UUID,
    ADD COLUMN job_id UUID,
    ADD COLUMN message_seq BIGINT,
    ADD COLUMN supersedes_id UUID,
    ADD COLUMN superseded_by UUID,
    -- Why the record exists in this form (extraction: which rule kept, merged or superseded it).
    ADD COLUMN reason TEXT,
    -- Unit-length f32 little-endian vector and the model that produced it; only vectors of the same model are compared.
    ADD COLUMN embedding BYTEA,
    ADD COLUMN embedding_model TEXT;

CREATE INDEX memory_hash ON memory_record (agent_id, content_hash);

-- Keyword index: an expression GIN index that the search query repeats verbatim. Names containing `_fts`
-- are engine-specific full-text structures (the schema-parity test skips them).
CREATE INDEX memory_record_fts ON memory_record USING GIN (to_tsvector('english', content));
