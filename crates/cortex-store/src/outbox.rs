//! The durable outbox: every outbound side effect (chat replies, approval notices, later webhooks and
//! publishing) is a row written in the same transaction as the state that produced it.
//!
//! Lifecycle: `queued` → (claimed with a lease) `sending` → `delivered` with the platform's id for the
//! message, or back to `queued` with a later `next_attempt_at`, or `failed` for good. A row whose
//! sender died stays `sending` until its lease expires and is then claimable again, so delivery is
//! at least once: a crash between the platform accepting a message and the `delivered` write sends it
//! once more (and only once per such crash). `idempotency_key` is unique, so whoever produces a row
//! twice (a re-run job step) still queues one message.

use cortex_core::Timestamp;
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::engine::{Engine, read, write};
use crate::jobs::Job;
use crate::page::{Cursor, Page};
use crate::rows::{ms, opt_time, time};
use crate::{Result, Store, Tx};

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewOutbox {
    pub channel_id: Option<Uuid>,
    /// Where it goes (for a chat: the chat and thread), as the sender understands it.
    pub target: Value,
    /// What to send.
    pub payload: Value,
    pub idempotency_key: String,
    /// The job whose work produced it, if any.
    pub job_id: Option<Uuid>,
}

/// A queued, sending, delivered or failed message.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: Uuid,
    pub channel_id: Option<Uuid>,
    pub target: Value,
    pub payload: Value,
    pub idempotency_key: String,
    /// `queued`, `sending`, `delivered` or `failed`.
    pub status: String,
    /// Sends started so far (a claim counts as one).
    pub attempts: i64,
    pub next_attempt_at: Timestamp,
    pub lease_expires_at: Option<Timestamp>,
    pub platform_message_id: Option<String>,
    pub last_error: Option<String>,
    pub job_id: Option<Uuid>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: Uuid,
    channel_id: Option<Uuid>,
    target: Json<Value>,
    payload: Json<Value>,
    idempotency_key: String,
    status: String,
    attempts: i64,
    next_attempt_at: i64,
    lease_expires_at: Option<i64>,
    platform_message_id: Option<String>,
    last_error: Option<String>,
    job_id: Option<Uuid>,
    created_at: i64,
    updated_at: i64,
}

impl From<OutboxRow> for OutboxItem {
    fn from(row: OutboxRow) -> Self {
        Self {
            id: row.id,
            channel_id: row.channel_id,
            target: row.target.0,
            payload: row.payload.0,
            idempotency_key: row.idempotency_key,
            status: row.status,
            attempts: row.attempts,
            next_attempt_at: time(row.next_attempt_at),
            lease_expires_at: opt_time(row.lease_expires_at),
            platform_message_id: row.platform_message_id,
            last_error: row.last_error,
            job_id: row.job_id,
            created_at: time(row.created_at),
            updated_at: time(row.updated_at),
        }
    }
}

macro_rules! outbox_columns {
    () => {
        "id, channel_id, target, payload, idempotency_key, status, attempts, next_attempt_at, lease_expires_at, \
         platform_message_id, last_error, job_id, created_at, updated_at"
    };
}

/// Claimable: queued and due, or sending under an expired lease (its sender died).
macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE outbox SET status = 'sending', attempts = attempts + 1, lease_expires_at = $3, claimed_by = $4, \
             updated_at = $2 WHERE id IN (SELECT id FROM outbox WHERE channel_id = $1 AND \
             ((status = 'queued' AND next_attempt_at <= $2) OR (status = 'sending' AND lease_expires_at < $2)) \
             ORDER BY next_attempt_at, id LIMIT $5",
            $lock,
            ") RETURNING ",
            outbox_columns!()
        )
    };
}

impl Store {
    /// Claims up to `limit` due messages of a channel for `holder` until `lease` from now. Each claim
    /// counts as an attempt.
    pub async fn claim_outbox(
        &self,
        channel_id: Uuid,
        holder: Uuid,
        lease: chrono::Duration,
        limit: i64,
    ) -> Result<Vec<OutboxItem>> {
        let now = self.now();
        let sql = match self.inner.engine {
            Engine::Sqlite { .. } => claim_sql!(""),
            Engine::Postgres { .. } => claim_sql!(" FOR UPDATE SKIP LOCKED"),
        };
        let mut tx = self.begin().await?;
        let rows: Vec<OutboxRow> = write!(tx, |conn| {
            sqlx::query_as(sql)
                .bind(channel_id)
                .bind(ms(now))
                .bind(ms(now + lease))
                .bind(holder)
                .bind(limit)
                .fetch_all(conn)
                .await?
        });
        tx.commit().await?;
        let mut items: Vec<OutboxItem> = rows.into_iter().map(OutboxItem::from).collect();
        items.sort_by_key(|item| (item.next_attempt_at, item.id));
        Ok(items)
    }

    /// When the next queued message of a channel is due, if any (delivery loops sleep until then).
    pub async fn next_outbox_due(&self, channel_id: Uuid) -> Result<Option<Timestamp>> {
        let due: Option<i64> = read!(self, |conn| {
            sqlx::query_scalar(
                "SELECT MIN(CASE WHEN status = 'queued' THEN next_attempt_at ELSE lease_expires_at END) FROM outbox \
                 WHERE channel_id = $1 AND status IN ('queued', 'sending')",
            )
            .bind(channel_id)
            .fetch_one(conn)
            .await?
        });
        Ok(opt_time(due))
    }

    /// Some parts of a multi-part message were accepted: records their ids (comma-separated) so a later
    /// attempt continues with the next part. `false` when `holder` no longer holds the row.
    pub async fn outbox_progress(&self, id: Uuid, holder: Uuid, platform_message_ids: &str) -> Result<bool> {
        let now = ms(self.now());
        let mut tx = self.begin().await?;
        let updated = write!(tx, |conn| {
            sqlx::query(
                "UPDATE outbox SET platform_message_id = $3, updated_at = $4 \
                 WHERE id = $1 AND claimed_by = $2 AND status = 'sending'",
            )
            .bind(id)
            .bind(holder)
            .bind(platform_message_ids)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        tx.commit().await?;
        Ok(updated == 1)
    }

    /// Makes every `sending` row claimable now. Only for a process that knows no other sender can be
    /// alive (SQLite mode, where the data directory's lock makes it the only process): rows it finds
    /// `sending` at start belonged to a process that died mid-send.
    pub async fn reclaim_outbox_after_restart(&self) -> Result<u64> {
        let now = ms(self.now());
        let mut tx = self.begin().await?;
        let updated = write!(tx, |conn| {
            sqlx::query("UPDATE outbox SET lease_expires_at = $1 - 1, updated_at = $1 WHERE status = 'sending'")
                .bind(now)
                .execute(conn)
                .await?
                .rows_affected()
        });
        tx.commit().await?;
        Ok(updated)
    }

    /// The platform accepted the message: `delivered`, with its id. `false` when `holder` no longer
    /// holds the row (its lease expired and someone else claimed it).
    pub async fn outbox_delivered(&self, id: Uuid, holder: Uuid, platform_message_id: &str) -> Result<bool> {
        let now = ms(self.now());
        let mut tx = self.begin().await?;
        let updated = write!(tx, |conn| {
            sqlx::query(
                "UPDATE outbox SET status = 'delivered', platform_message_id = $3, lease_expires_at = NULL, \
                 last_error = NULL, updated_at = $4 WHERE id = $1 AND claimed_by = $2 AND status = 'sending'",
            )
            .bind(id)
            .bind(holder)
            .bind(platform_message_id)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        tx.commit().await?;
        Ok(updated == 1)
    }

    /// The send failed: back to `queued` until `next_attempt_at`, or `failed` for good when
    /// `next_attempt_at` is `None`. `false` when `holder` no longer holds the row.
    pub async fn outbox_attempt_failed(
        &self,
        id: Uuid,
        holder: Uuid,
        error: &str,
        next_attempt_at: Option<Timestamp>,
    ) -> Result<bool> {
        let now = self.now();
        let (status, next) = match next_attempt_at {
            Some(at) => ("queued", ms(at)),
            None => ("failed", ms(now)),
        };
        let mut tx = self.begin().await?;
        let updated = write!(tx, |conn| {
            sqlx::query(
                "UPDATE outbox SET status = $3, next_attempt_at = $4, last_error = $5, lease_expires_at = NULL, \
                 updated_at = $6 WHERE id = $1 AND claimed_by = $2 AND status = 'sending'",
            )
            .bind(id)
            .bind(holder)
            .bind(status)
            .bind(next)
            .bind(error)
            .bind(ms(now))
            .execute(conn)
            .await?
            .rows_affected()
        });
        tx.commit().await?;
        Ok(updated == 1)
    }

    /// Operator retry of a `failed` message: queued again now with a fresh attempt count. `false` when
    /// it is not failed.
    pub async fn retry_outbox(&self, id: Uuid) -> Result<bool> {
        let now = ms(self.now());
        let mut tx = self.begin().await?;
        let updated = write!(tx, |conn| {
            sqlx::query(
                "UPDATE outbox SET status = 'queued', attempts = 0, next_attempt_at = $2, updated_at = $2 \
                 WHERE id = $1 AND status = 'failed'",
            )
            .bind(id)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        tx.commit().await?;
        Ok(updated == 1)
    }

    /// The message `id`, if any.
    pub async fn outbox_item(&self, id: Uuid) -> Result<Option<OutboxItem>> {
        let row: Option<OutboxRow> = read!(self, |conn| {
            sqlx::query_as(concat!("SELECT ", outbox_columns!(), " FROM outbox WHERE id = $1"))
                .bind(id)
                .fetch_optional(conn)
                .await?
        });
        Ok(row.map(OutboxItem::from))
    }

    /// A channel's messages, newest first, optionally of one status.
    pub async fn list_outbox(
        &self,
        channel_id: Uuid,
        status: Option<&str>,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<Page<OutboxItem>> {
        let rows: Vec<OutboxRow> = read!(self, |conn| {
            let mut query =
                sqlx::QueryBuilder::new(concat!("SELECT ", outbox_columns!(), " FROM outbox WHERE channel_id = "));
            query.push_bind(channel_id);
            if let Some(status) = status {
                query.push(" AND status = ").push_bind(status);
            }
            if let Some(cursor) = cursor {
                query.push(" AND id < ").push_bind(cursor.0);
            }
            query.push(" ORDER BY id DESC LIMIT ").push_bind(limit as i64 + 1);
            query.build_query_as().fetch_all(conn).await?
        });
        let items = rows.into_iter().map(OutboxItem::from).collect();
        Ok(Page::from_overfetch(items, limit, |item: &OutboxItem| item.id))
    }
}

/// Where a notice to an `approval_notify` chat goes: a group chat, not a reply to anything.
fn notify_target(chat_id: &str) -> Value {
    serde_json::json!({"chat": {"chat_id": chat_id, "kind": "group"}, "reply_to": null})
}

impl Tx {
    /// Queues the answer of a job a channel message started (its payload names `reply.channel_id` and
    /// `reply.target`), in the transaction that completes the job. Other jobs queue nothing.
    pub async fn queue_channel_reply(&mut self, job: &Job) -> Result<()> {
        let text = job.result.as_ref().and_then(|result| result.get("response")).cloned().unwrap_or(Value::Null);
        self.queue_for_job(job, "reply", serde_json::json!({"kind": "reply", "text": text})).await
    }

    /// Queues the user-facing failure notice of a job a channel message started, in the transaction that
    /// makes its failure final; the sender turns `error_code` into a fixed sentence.
    pub async fn queue_channel_failure(&mut self, job: &Job, error_code: &str) -> Result<()> {
        self.queue_for_job(job, "failure", serde_json::json!({"kind": "failure", "error_code": error_code})).await
    }

    /// Queues the chat notice of a new approval request (SPEC §7.7) when the waiting job was started
    /// from a chat, and one for each of the agent's `approval_notify` chats (except the originating one
    /// and chats of channels that no longer exist), in the transaction that creates the request. The
    /// sender renders each from the request (so a notice sent after a decision already shows the
    /// outcome); a press in any of them decides alike.
    pub(crate) async fn queue_approval_notice(&mut self, job_id: Uuid, approval_id: Uuid) -> Result<()> {
        let job = self.lock_job(job_id).await?;
        let payload = serde_json::json!({"kind": "approval", "approval_id": approval_id});
        self.queue_for_job(&job, &format!("approval:{approval_id}"), payload.clone()).await?;
        let reply = job.payload.get("reply");
        let origin_channel = reply.and_then(|reply| reply.get("channel_id")).and_then(Value::as_str);
        let origin_chat = reply.and_then(|reply| reply.pointer("/target/chat/chat_id")).and_then(Value::as_str);
        for target in self.approval_targets(job.agent_id).await? {
            let channel = target.channel_id.to_string();
            if origin_channel == Some(channel.as_str()) && origin_chat == Some(target.chat_id.as_str()) {
                continue;
            }
            let new = NewOutbox {
                channel_id: Some(target.channel_id),
                target: notify_target(&target.chat_id),
                payload: payload.clone(),
                idempotency_key: format!("approval:{approval_id}:{}:{}", target.channel_id, target.chat_id),
                job_id: Some(job.id),
            };
            self.enqueue_outbox(&new).await?;
        }
        Ok(())
    }

    /// Queues `text` as a notice to each of the agent's `approval_notify` chats (whose channel still exists),
    /// in the caller's transaction; `key` makes it once per event (e.g. an automatic quarantine, SPEC §5.7).
    pub async fn queue_operator_notice(&mut self, agent_id: Uuid, key: &str, text: &str) -> Result<()> {
        let payload = serde_json::json!({"kind": "notice", "text": text});
        for target in self.approval_targets(agent_id).await? {
            let new = NewOutbox {
                channel_id: Some(target.channel_id),
                target: notify_target(&target.chat_id),
                payload: payload.clone(),
                idempotency_key: format!("{key}:{}:{}", target.channel_id, target.chat_id),
                job_id: None,
            };
            self.enqueue_outbox(&new).await?;
        }
        Ok(())
    }

    /// The agent's `approval_notify` chats whose channel still exists.
    async fn approval_targets(&mut self, agent_id: Uuid) -> Result<Vec<cortex_core::agent::ApprovalTarget>> {
        let targets: Option<Json<Value>> = write!(self, |conn| {
            sqlx::query_scalar("SELECT approval_notify FROM agent WHERE id = $1")
                .bind(agent_id)
                .fetch_optional(conn)
                .await?
        });
        let targets: Vec<cortex_core::agent::ApprovalTarget> = match targets {
            Some(Json(value)) => crate::rows::from_json("agent.approval_notify", value)?,
            None => return Ok(Vec::new()),
        };
        let mut existing = Vec::with_capacity(targets.len());
        for target in targets {
            let found: i64 = write!(self, |conn| {
                sqlx::query_scalar("SELECT COUNT(*) FROM channel WHERE id = $1")
                    .bind(target.channel_id)
                    .fetch_one(conn)
                    .await?
            });
            if found > 0 {
                existing.push(target);
            }
        }
        Ok(existing)
    }

    async fn queue_for_job(&mut self, job: &Job, what: &str, payload: Value) -> Result<()> {
        let Some(reply) = job.payload.get("reply") else { return Ok(()) };
        let channel_id = reply.get("channel_id").and_then(Value::as_str).and_then(|id| Uuid::parse_str(id).ok());
        let (Some(channel_id), Some(target)) = (channel_id, reply.get("target")) else { return Ok(()) };
        let new = NewOutbox {
            channel_id: Some(channel_id),
            target: target.clone(),
            payload,
            idempotency_key: format!("job:{}:{what}", job.id),
            job_id: Some(job.id),
        };
        self.enqueue_outbox(&new).await.map(drop)
    }

    /// Queues a message in this transaction, due now. Returns its id and whether it is new: a second
    /// row with the same idempotency key is not created (the first one's id is returned).
    pub async fn enqueue_outbox(&mut self, new: &NewOutbox) -> Result<(Uuid, bool)> {
        let now = ms(self.now());
        let inserted: Option<Uuid> = write!(self, |conn| {
            sqlx::query_scalar(
                "INSERT INTO outbox (id, channel_id, target, payload, idempotency_key, status, next_attempt_at, job_id, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $6, $6) \
                 ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            )
            .bind(cortex_core::new_id())
            .bind(new.channel_id)
            .bind(Json(&new.target))
            .bind(Json(&new.payload))
            .bind(&new.idempotency_key)
            .bind(now)
            .bind(new.job_id)
            .fetch_optional(conn)
            .await?
        });
        if let Some(id) = inserted {
            if let Some(channel_id) = new.channel_id {
                self.notify(crate::Notification::Outbox { channel_id });
            }
            return Ok((id, true));
        }
        let existing: Uuid = write!(self, |conn| {
            sqlx::query_scalar("SELECT id FROM outbox WHERE idempotency_key = $1")
                .bind(&new.idempotency_key)
                .fetch_one(conn)
                .await?
        });
        Ok((existing, false))
    }
}
