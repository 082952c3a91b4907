-- Webhook tools name `tool_secret` credentials to inject at call time (SPEC §6.3 `credential_refs`):
-- a JSON array of {credential, inject_as, header_name, format}; the values stay in provider_credential.
ALTER TABLE webhook_tool ADD COLUMN credential_refs JSONB NOT NULL DEFAULT '[]';
