-- Same version as the PostgreSQL migration that tunes autovacuum for `job`; SQLite's claim uses the
-- job_claim index without statistics, so there is nothing to do here.
SELECT 1;
