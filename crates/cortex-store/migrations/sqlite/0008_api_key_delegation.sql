-- API keys know who created them (SPEC Appendix B "API keys"): a non-admin sees and revokes only itself and
-- the keys it created, revoking a key revokes the keys created with it, and keys made by a non-admin draw on
-- their creator's rate budget (`rate_scope_id`) instead of multiplying it. A key may carry its own limit.
ALTER TABLE api_key ADD COLUMN created_by_key_id BLOB REFERENCES api_key (id);
ALTER TABLE api_key ADD COLUMN created_by_user_id BLOB REFERENCES user_account (id);
ALTER TABLE api_key ADD COLUMN rate_scope_id BLOB;
ALTER TABLE api_key ADD COLUMN rate_limit_per_minute INTEGER CHECK (rate_limit_per_minute > 0);
UPDATE api_key SET rate_scope_id = id;
CREATE INDEX api_key_created_by_key ON api_key (created_by_key_id);
CREATE INDEX api_key_rate_scope ON api_key (rate_scope_id);
