-- Budget ledger shards (issue 17, scale-out). A line without a limit only records spend, so its calls need
-- not queue on one row: each job's calls use one of 16 rows of the line (`shard` from the job id), and a
-- line's figures are the sum of its rows. A line with a limit is reserved on shard 0 under a row lock and
-- checked against the sum of all its rows, as before (docs/PERFORMANCE.md, section 14).
ALTER TABLE budget_ledger ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE budget_ledger DROP CONSTRAINT budget_ledger_pkey;
ALTER TABLE budget_ledger ADD PRIMARY KEY (scope_kind, scope_id, period, shard);
