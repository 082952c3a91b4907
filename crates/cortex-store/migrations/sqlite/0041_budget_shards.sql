-- Budget ledger shards (issue 17, scale-out). A line without a limit only records spend, so its calls need
-- not queue on one row: each job's calls use one of 16 rows of the line (`shard` from the job id), and a
-- line's figures are the sum of its rows. A line with a limit is reserved on shard 0 and checked against
-- the sum of all its rows, as before (docs/PERFORMANCE.md, section 14). SQLite cannot change a primary key
-- in place, so the table is rebuilt.
CREATE TABLE budget_ledger_sharded (
    scope_kind TEXT NOT NULL CHECK (scope_kind IN ('agent', 'api_key', 'session', 'job')),
    scope_id BLOB NOT NULL,
    period TEXT NOT NULL,
    shard INTEGER NOT NULL DEFAULT 0,
    tokens_spent INTEGER NOT NULL DEFAULT 0,
    tokens_reserved INTEGER NOT NULL DEFAULT 0,
    usd_spent REAL NOT NULL DEFAULT 0,
    usd_reserved REAL NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (scope_kind, scope_id, period, shard)
) STRICT;
INSERT INTO budget_ledger_sharded (scope_kind, scope_id, period, tokens_spent, tokens_reserved, usd_spent, usd_reserved, updated_at)
    SELECT scope_kind, scope_id, period, tokens_spent, tokens_reserved, usd_spent, usd_reserved, updated_at FROM budget_ledger;
DROP TABLE budget_ledger;
ALTER TABLE budget_ledger_sharded RENAME TO budget_ledger;
