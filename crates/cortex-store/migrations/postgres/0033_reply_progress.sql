-- Streamed replies in chat and approval notice targets (issue 13, point 8; SPEC §3.2 `approval_notify[]`).
--
-- `reply_draft`: the progress message(s) a chat job's reply is streaming into, one row per job. The
-- process that inserts the row owns the job's progress; `platform_message_ids` are the draft message
-- (Telegram, Discord, Slack: one id, edited) or the chunks already sent (WhatsApp: ids in order, their
-- text concatenated in `shown_text`). The final reply (an outbox row) reads it to edit the draft or send
-- only the rest, also after a restart. `editing_until` is set while a progress call is in flight, so the
-- final delivery waits for it instead of racing it. `status` turns `final` once the reply's delivery
-- took the draft over; progress never touches a final draft.
CREATE TABLE reply_draft (
    job_id UUID PRIMARY KEY REFERENCES job (id) ON DELETE CASCADE,
    channel_id UUID NOT NULL REFERENCES channel (id) ON DELETE CASCADE,
    holder UUID NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('streaming', 'final')),
    platform_message_ids TEXT,
    shown_text TEXT NOT NULL,
    editing_until BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Where a waiting job's approval notice also goes: `[{channel_id, chat_id}]`, a typed document owned by
-- `cortex_core::agent::ApprovalTarget`.
ALTER TABLE agent ADD COLUMN approval_notify JSONB NOT NULL DEFAULT '[]';
