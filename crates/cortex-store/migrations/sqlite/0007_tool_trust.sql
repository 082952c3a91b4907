-- What an operator vouches for about external tools (issue 12).
-- A webhook tool whose endpoint honours `Idempotency-Key` is re-run after a crash interrupted it
-- (SPEC Appendix B "Failover"); by default it is not.
ALTER TABLE webhook_tool ADD COLUMN idempotent INTEGER NOT NULL DEFAULT 0;
-- Calls to an MCP server nobody marked trusted need a human once untrusted content is in the context
-- (SPEC Appendix B "Untrusted content gates egress"); a server's own annotations never make it trusted.
ALTER TABLE mcp_server ADD COLUMN trusted INTEGER NOT NULL DEFAULT 0;
-- Errors stored before MCP secrets were redacted may quote them; the next probe records a fresh one.
UPDATE mcp_server SET last_error = NULL;
