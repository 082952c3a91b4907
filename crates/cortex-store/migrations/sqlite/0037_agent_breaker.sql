-- Agent breaker (SPEC §5.7): when a job's failure becomes final, the agent's last few finished jobs since
-- its `health_reset_at` are read newest first to count consecutive failures. Without this index that read
-- would sort every finished job of the agent; with it, it walks the agent's newest finished jobs only.
CREATE INDEX job_agent_completed ON job (agent_id, completed_at) WHERE completed_at IS NOT NULL;
