-- Spend through a credential moves off its row (issue 17, scale-out): every model call added to the one
-- `provider_credential` row, so the calls of every worker queued on that row's lock through each commit.
-- Each job's calls now add to one of 16 rows (`shard` from the job id); a credential's figures are
-- their sum (docs/PERFORMANCE.md, section 14).
CREATE TABLE credential_usage (
    credential_id BLOB NOT NULL REFERENCES provider_credential (id) ON DELETE CASCADE,
    shard INTEGER NOT NULL,
    calls INTEGER NOT NULL DEFAULT 0,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (credential_id, shard)
) STRICT;
INSERT INTO credential_usage (credential_id, shard, calls, tokens_in, tokens_out, cost_usd)
    SELECT id, 0, calls, tokens_in, tokens_out, cost_usd FROM provider_credential
    WHERE calls <> 0 OR tokens_in <> 0 OR tokens_out <> 0 OR cost_usd <> 0;
ALTER TABLE provider_credential DROP COLUMN calls;
ALTER TABLE provider_credential DROP COLUMN tokens_in;
ALTER TABLE provider_credential DROP COLUMN tokens_out;
ALTER TABLE provider_credential DROP COLUMN cost_usd;
