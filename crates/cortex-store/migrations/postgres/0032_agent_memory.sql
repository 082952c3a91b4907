-- Per-agent memory switches (SPEC §3.2 `memory{enabled, auto_extract}`, §9.2; issue 16): a typed document
-- owned by `cortex_core::agent::MemorySettings`. Existing agents keep memory on, as before.
ALTER TABLE agent ADD COLUMN memory JSONB NOT NULL DEFAULT '{"enabled":true,"auto_extract":true}';
