-- Indexes the agent runtime reads on every turn (SPEC §5.6, §6.2): steering queued for "the agent's next
-- job" is found by agent, and memory_store deduplicates by content hash per agent.

CREATE INDEX steering_agent_state ON steering_message (agent_id, state);
CREATE INDEX memory_agent_hash ON memory_record (agent_id, content_hash);
