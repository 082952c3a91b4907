-- Channel access control (SPEC §8.8): wrong pairing guesses counted against the codes they aimed at, the
-- chat an access request came from (where the decision is told), and the per-user message count the
-- router's rate limit reads.
ALTER TABLE pairing_code ADD COLUMN failed_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE access_request ADD COLUMN reply_target JSONB;
ALTER TABLE access_request ADD COLUMN message_preview TEXT;
CREATE INDEX inbound_message_user ON inbound_message (user_id, agent_id, created_at);
