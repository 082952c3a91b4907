//! Drafts of streamed chat replies (issue 13, point 8): the progress message(s) a chat job's reply is
//! streaming into, one row per job.
//!
//! Progress is best effort and the final reply stays the outbox row written when the job ends; this
//! table is what lets that final delivery replace the draft instead of posting a second copy, also
//! after a restart. Ownership: the process whose [`Store::begin_reply_draft`] inserts the row streams
//! the job (no second draft from another process). Every platform call of progress is bracketed by
//! `editing_until` ([`Store::begin_draft_call`] … [`Store::end_draft_call`]), and the final delivery
//! first turns the row `final` ([`Store::finalize_reply_draft`]): progress never starts a call on a
//! final draft, and the final delivery waits while a call started before it is still in flight, so no
//! late progress edit can overwrite the final text.

use cortex_core::Timestamp;
use uuid::Uuid;

use crate::engine::{read, write};
use crate::rows::{ms, opt_time};
use crate::{Result, Store};

/// A job's reply draft as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyDraft {
    pub job_id: Uuid,
    pub channel_id: Uuid,
    /// The progress task that owns the draft.
    pub holder: Uuid,
    /// `streaming`, or `final` once the reply's delivery took it over.
    pub status: String,
    /// The draft message (platforms that edit), or every chunk sent so far in order (WhatsApp).
    pub platform_message_ids: Vec<String>,
    /// What the draft shows (edits) or the text of the chunks sent so far (WhatsApp).
    pub shown_text: String,
    /// A progress call is in flight until then.
    pub editing_until: Option<Timestamp>,
}

#[derive(sqlx::FromRow)]
struct DraftRow {
    job_id: Uuid,
    channel_id: Uuid,
    holder: Uuid,
    status: String,
    platform_message_ids: Option<String>,
    shown_text: String,
    editing_until: Option<i64>,
}

impl From<DraftRow> for ReplyDraft {
    fn from(row: DraftRow) -> Self {
        let ids = row.platform_message_ids.unwrap_or_default();
        Self {
            job_id: row.job_id,
            channel_id: row.channel_id,
            holder: row.holder,
            status: row.status,
            platform_message_ids: ids.split(',').filter(|id| !id.is_empty()).map(str::to_owned).collect(),
            shown_text: row.shown_text,
            editing_until: opt_time(row.editing_until),
        }
    }
}

const SELECT: &str = "SELECT job_id, channel_id, holder, status, platform_message_ids, shown_text, editing_until \
                      FROM reply_draft WHERE job_id = $1";

impl Store {
    /// Creates the draft of `job_id` for `holder`, with its first call in flight until `until`. `false`
    /// when the job already has a draft (another process streams it, or streamed it before a restart).
    pub async fn begin_reply_draft(
        &self,
        job_id: Uuid,
        channel_id: Uuid,
        holder: Uuid,
        until: Timestamp,
    ) -> Result<bool> {
        let now = ms(self.now());
        let mut tx = self.begin().await?;
        let inserted = write!(tx, |conn| {
            sqlx::query(
                "INSERT INTO reply_draft (job_id, channel_id, holder, status, shown_text, editing_until, created_at, \
                 updated_at) VALUES ($1, $2, $3, 'streaming', '', $4, $5, $5) ON CONFLICT (job_id) DO NOTHING",
            )
            .bind(job_id)
            .bind(channel_id)
            .bind(holder)
            .bind(ms(until))
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        tx.commit().await?;
        Ok(inserted == 1)
    }

    /// Marks a progress call on the draft in flight until `until`. `false` when the draft is final or
    /// not `holder`'s: the call must not be made.
    pub async fn begin_draft_call(&self, job_id: Uuid, holder: Uuid, until: Timestamp) -> Result<bool> {
        let now = ms(self.now());
        let mut tx = self.begin().await?;
        let updated = write!(tx, |conn| {
            sqlx::query(
                "UPDATE reply_draft SET editing_until = $3, updated_at = $4 \
                 WHERE job_id = $1 AND holder = $2 AND status = 'streaming'",
            )
            .bind(job_id)
            .bind(holder)
            .bind(ms(until))
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        tx.commit().await?;
        Ok(updated == 1)
    }

    /// Ends a progress call: records what the draft now shows when the platform accepted it (`shown`:
    /// message ids and text), or only clears the in-flight mark when it did not.
    pub async fn end_draft_call(&self, job_id: Uuid, holder: Uuid, shown: Option<(&[String], &str)>) -> Result<()> {
        let now = ms(self.now());
        let mut tx = self.begin().await?;
        write!(tx, |conn| {
            match shown {
                Some((ids, text)) => sqlx::query(
                    "UPDATE reply_draft SET editing_until = NULL, platform_message_ids = $3, shown_text = $4, \
                         updated_at = $5 WHERE job_id = $1 AND holder = $2",
                )
                .bind(job_id)
                .bind(holder)
                .bind(ids.join(","))
                .bind(text)
                .bind(now)
                .execute(conn)
                .await?
                .rows_affected(),
                None => sqlx::query(
                    "UPDATE reply_draft SET editing_until = NULL, updated_at = $3 WHERE job_id = $1 AND holder = $2",
                )
                .bind(job_id)
                .bind(holder)
                .bind(now)
                .execute(conn)
                .await?
                .rows_affected(),
            }
        });
        tx.commit().await
    }

    /// Unfinished chat jobs created since `since` whose reply goes to `channel_id`: what a channel's
    /// progress follows after it may have missed notifications.
    pub async fn channel_jobs_in_progress(&self, channel_id: Uuid, since: Timestamp) -> Result<Vec<Uuid>> {
        let sql = if self.is_postgres() {
            "SELECT id FROM job WHERE status IN ('pending', 'scheduled', 'running', 'waiting_for_approval', 'retrying') \
             AND kind = 'chat' AND created_at >= $2 AND payload -> 'reply' ->> 'channel_id' = $1 ORDER BY id"
        } else {
            "SELECT id FROM job WHERE status IN ('pending', 'scheduled', 'running', 'waiting_for_approval', 'retrying') \
             AND kind = 'chat' AND created_at >= $2 AND json_extract(payload, '$.reply.channel_id') = $1 ORDER BY id"
        };
        Ok(read!(self, |conn| {
            sqlx::query_scalar(sql).bind(channel_id.to_string()).bind(ms(since)).fetch_all(conn).await?
        }))
    }

    /// The draft of `job_id`, if any.
    pub async fn reply_draft(&self, job_id: Uuid) -> Result<Option<ReplyDraft>> {
        let row: Option<DraftRow> =
            read!(self, |conn| sqlx::query_as(SELECT).bind(job_id).fetch_optional(conn).await?);
        Ok(row.map(ReplyDraft::from))
    }

    /// The reply's delivery takes the draft over: no progress call starts after this. Returns the
    /// draft as it stands (its `editing_until` says whether a call started before is still in flight).
    pub async fn finalize_reply_draft(&self, job_id: Uuid) -> Result<Option<ReplyDraft>> {
        let now = ms(self.now());
        let mut tx = self.begin().await?;
        let row: Option<DraftRow> = write!(tx, |conn| {
            sqlx::query("UPDATE reply_draft SET status = 'final', updated_at = $2 WHERE job_id = $1")
                .bind(job_id)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            sqlx::query_as(SELECT).bind(job_id).fetch_optional(conn).await?
        });
        tx.commit().await?;
        Ok(row.map(ReplyDraft::from))
    }
}
