-- Live memory extraction (SPEC §9.2, issue 16): per session, the last message seq already extracted and
-- the one extraction job that is queued or running for it (later triggers move or coalesce into it).
-- No foreign key on the job: retention deletes old jobs, and a missing or finished job means "none".
ALTER TABLE session ADD COLUMN extracted_through_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE session ADD COLUMN extraction_job_id BLOB;
