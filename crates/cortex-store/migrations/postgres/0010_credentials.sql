-- Managed provider credentials (issue 15, SPEC §3.2, Appendix B "Credentials").
-- `provider`: the preset a credential serves when its name is not the preset's own (a team's second
-- OpenAI key named `openai-team` serves `openai`); NULL means the name is the provider.
ALTER TABLE provider_credential ADD COLUMN provider TEXT;
-- The last characters of the secret, for recognising it in lists (never enough to use it).
ALTER TABLE provider_credential ADD COLUMN secret_hint TEXT;
-- Spend through the credential, added in the same transaction as the job's own accounting.
ALTER TABLE provider_credential ADD COLUMN calls BIGINT NOT NULL DEFAULT 0;
ALTER TABLE provider_credential ADD COLUMN tokens_in BIGINT NOT NULL DEFAULT 0;
ALTER TABLE provider_credential ADD COLUMN tokens_out BIGINT NOT NULL DEFAULT 0;
ALTER TABLE provider_credential ADD COLUMN cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0;
