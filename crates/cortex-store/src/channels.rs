//! Chat-platform channels (SPEC §8): the bot records, their receive cursors and the inbound log.
//!
//! A channel's tokens live in `secrets_enc`, encrypted by the caller for the cell
//! `channel.secrets_enc.<id>` (so ids are chosen before a write); `secret_keys` lists the names of the
//! secrets that are set, which is all the API ever shows of them.
//!
//! `inbound_message` is the dedupe log of everything a platform delivered: one row per
//! `(channel_id, platform_message_id)`. A webhook retry or a gateway replay finds the row already there
//! and creates nothing; the router moves a row out of `received` exactly once (a guarded update in the
//! transaction that creates the job), so the same message never becomes two jobs.

use cortex_core::Timestamp;
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::engine::{read, write};
use crate::rows::{Millis, ms};
use crate::{Notification, Result, Store, StoreError, Tx};

/// A stored channel; the secrets stay encrypted.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Channel {
    pub id: Uuid,
    /// `telegram`, `discord`, `slack` or `whatsapp`.
    #[sqlx(rename = "type")]
    pub channel_type: String,
    pub name: String,
    /// Non-secret settings (API base, mode, …).
    #[sqlx(json)]
    pub config: Value,
    pub secrets_enc: Option<String>,
    /// Names of the secrets that are set.
    #[sqlx(json)]
    pub secret_keys: Vec<String>,
    /// `env` (materialised from the environment at start, read-only) or `api`.
    pub source: String,
    pub enabled: bool,
    /// `open` or `allowlist` (SPEC §8.8 channel gate).
    pub inbound_policy: String,
    pub default_agent_id: Option<Uuid>,
    /// What the platform said the bot is (`getMe`, `auth.test`, …).
    #[sqlx(json(nullable))]
    pub bot_identity: Option<Value>,
    #[sqlx(try_from = "Millis")]
    pub created_at: Timestamp,
    #[sqlx(try_from = "Millis")]
    pub updated_at: Timestamp,
}

macro_rules! channel_columns {
    () => {
        "id, type, name, config, secrets_enc, secret_keys, source, enabled, inbound_policy, default_agent_id, \
         bot_identity, created_at, updated_at"
    };
}

/// The writable fields of a channel (create, or replace by id).
#[derive(Debug, Clone)]
pub struct ChannelWrite {
    pub id: Uuid,
    pub channel_type: String,
    pub name: String,
    pub config: Value,
    pub secrets_enc: Option<String>,
    pub secret_keys: Vec<String>,
    pub source: String,
    pub enabled: bool,
    pub inbound_policy: String,
    pub default_agent_id: Option<Uuid>,
    pub bot_identity: Option<Value>,
}

/// An inbound event to record.
#[derive(Debug, Clone)]
pub struct NewInbound {
    pub channel_id: Uuid,
    pub platform_message_id: String,
    pub chat_id: String,
    /// The normalised event as JSON.
    pub event: Value,
}

/// A recorded inbound event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InboundRecord {
    pub id: Uuid,
    pub channel_id: Uuid,
    pub platform_message_id: String,
    pub chat_id: String,
    #[sqlx(json)]
    pub event: Value,
    /// `received` (not routed yet), `routed`, `refused`, `ignored` or `failed`.
    pub status: String,
    pub user_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub detail: Option<String>,
    #[sqlx(try_from = "Millis")]
    pub created_at: Timestamp,
}

macro_rules! inbound_columns {
    () => {
        "id, channel_id, platform_message_id, chat_id, event, status, user_id, agent_id, job_id, detail, created_at"
    };
}

/// How an inbound event was routed, written once when it leaves `received`.
#[derive(Debug, Clone, Default)]
pub struct InboundOutcome {
    /// `routed`, `refused`, `ignored` or `failed`.
    pub status: &'static str,
    pub user_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub detail: Option<String>,
}

impl Store {
    /// The channel `id`.
    pub async fn channel(&self, id: Uuid) -> Result<Channel> {
        let row: Option<Channel> = read!(self, |conn| {
            sqlx::query_as(concat!("SELECT ", channel_columns!(), " FROM channel WHERE id = $1"))
                .bind(id)
                .fetch_optional(conn)
                .await?
        });
        row.ok_or(StoreError::NotFound { entity: "channel" })
    }

    /// The channel called `name`, if any.
    pub async fn channel_by_name(&self, name: &str) -> Result<Option<Channel>> {
        let row: Option<Channel> = read!(self, |conn| {
            sqlx::query_as(concat!("SELECT ", channel_columns!(), " FROM channel WHERE name = $1"))
                .bind(name)
                .fetch_optional(conn)
                .await?
        });
        Ok(row)
    }

    /// Every channel, oldest first (there are few; the supervisor and `GET /channels` read them all).
    pub async fn channels(&self) -> Result<Vec<Channel>> {
        let rows: Vec<Channel> = read!(self, |conn| {
            sqlx::query_as(concat!("SELECT ", channel_columns!(), " FROM channel ORDER BY id")).fetch_all(conn).await?
        });
        Ok(rows)
    }

    /// Where the channel's receive loop resumes, if it saved a position.
    pub async fn channel_cursor(&self, channel_id: Uuid) -> Result<Option<String>> {
        Ok(read!(self, |conn| {
            sqlx::query_scalar("SELECT value FROM channel_cursor WHERE channel_id = $1")
                .bind(channel_id)
                .fetch_optional(conn)
                .await?
        }))
    }

    /// Saves the receive loop's position (its own transaction: called after the events before it are
    /// recorded, so a crash in between replays them into the dedupe log rather than losing them).
    pub async fn save_channel_cursor(&self, channel_id: Uuid, value: &str) -> Result<()> {
        let now = ms(self.now());
        let mut tx = self.begin().await?;
        write!(tx, |conn| {
            sqlx::query(
                "INSERT INTO channel_cursor (channel_id, value, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (channel_id) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(channel_id)
            .bind(value)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        tx.commit().await
    }

    /// Records an inbound event unless one with its platform id is already there; returns the row and
    /// whether it is new. Returns once the row is committed, so the platform may be acknowledged.
    pub async fn record_inbound(&self, new: &NewInbound) -> Result<(InboundRecord, bool)> {
        let now = ms(self.now());
        let mut tx = self.begin().await?;
        let inserted: Option<InboundRecord> = write!(tx, |conn| {
            sqlx::query_as(concat!(
                "INSERT INTO inbound_message (id, channel_id, platform_message_id, chat_id, event, status, created_at, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, 'received', $6, $6) \
                 ON CONFLICT (channel_id, platform_message_id) DO NOTHING RETURNING ",
                inbound_columns!()
            ))
            .bind(cortex_core::new_id())
            .bind(new.channel_id)
            .bind(&new.platform_message_id)
            .bind(&new.chat_id)
            .bind(Json(&new.event))
            .bind(now)
            .fetch_optional(conn)
            .await?
        });
        tx.commit().await?;
        if let Some(row) = inserted {
            return Ok((row, true));
        }
        let existing: Option<InboundRecord> = read!(self, |conn| {
            sqlx::query_as(concat!(
                "SELECT ",
                inbound_columns!(),
                " FROM inbound_message WHERE channel_id = $1 AND platform_message_id = $2"
            ))
            .bind(new.channel_id)
            .bind(&new.platform_message_id)
            .fetch_optional(conn)
            .await?
        });
        existing.map(|row| (row, false)).ok_or(StoreError::NotFound { entity: "inbound_message" })
    }

    /// The inbound row `id`.
    pub async fn inbound(&self, id: Uuid) -> Result<InboundRecord> {
        let row: Option<InboundRecord> = read!(self, |conn| {
            sqlx::query_as(concat!("SELECT ", inbound_columns!(), " FROM inbound_message WHERE id = $1"))
                .bind(id)
                .fetch_optional(conn)
                .await?
        });
        row.ok_or(StoreError::NotFound { entity: "inbound_message" })
    }

    /// How many inbound events a channel has recorded (any status).
    pub async fn inbound_count(&self, channel_id: Uuid) -> Result<i64> {
        Ok(read!(self, |conn| {
            sqlx::query_scalar("SELECT COUNT(*) FROM inbound_message WHERE channel_id = $1")
                .bind(channel_id)
                .fetch_one(conn)
                .await?
        }))
    }

    /// Inbound rows of a channel still waiting for the router, oldest first (recovery after a crash
    /// between recording and routing).
    pub async fn unrouted_inbound(&self, channel_id: Uuid, limit: i64) -> Result<Vec<InboundRecord>> {
        let rows: Vec<InboundRecord> = read!(self, |conn| {
            sqlx::query_as(concat!(
                "SELECT ",
                inbound_columns!(),
                " FROM inbound_message WHERE channel_id = $1 AND status = 'received' ORDER BY id LIMIT $2"
            ))
            .bind(channel_id)
            .bind(limit)
            .fetch_all(conn)
            .await?
        });
        Ok(rows)
    }

    /// The chat jobs started from the channel's messages since `since` that are running now, with the
    /// recorded event (as stored) each answers: where a typing indicator belongs when a process takes
    /// over the channel (afterwards [`crate::Notification::ChatJob`] says when jobs start and stop).
    pub async fn running_chat_jobs(&self, channel_id: Uuid, since: Timestamp) -> Result<Vec<(Uuid, Value)>> {
        let rows: Vec<(Uuid, Json<Value>)> = read!(self, |conn| {
            sqlx::query_as(
                "SELECT j.id, i.event FROM inbound_message i JOIN job j ON j.id = i.job_id \
                 WHERE i.channel_id = $1 AND i.created_at >= $2 AND j.status = 'running' ORDER BY i.id",
            )
            .bind(channel_id)
            .bind(ms(since))
            .fetch_all(conn)
            .await?
        });
        Ok(rows.into_iter().map(|(job_id, event)| (job_id, event.0)).collect())
    }
}

impl Tx {
    /// Creates a channel; a duplicate name is a [`StoreError::Conflict`].
    pub async fn insert_channel(&mut self, new: &ChannelWrite) -> Result<()> {
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO channel (id, type, name, config, secrets_enc, secret_keys, source, enabled, inbound_policy, \
                 default_agent_id, bot_identity, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)",
            )
            .bind(new.id)
            .bind(&new.channel_type)
            .bind(&new.name)
            .bind(Json(&new.config))
            .bind(new.secrets_enc.as_deref())
            .bind(Json(&new.secret_keys))
            .bind(&new.source)
            .bind(new.enabled)
            .bind(&new.inbound_policy)
            .bind(new.default_agent_id)
            .bind(new.bot_identity.as_ref().map(Json))
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        self.notify(Notification::ChannelChanged { channel_id: new.id });
        Ok(())
    }

    /// Replaces every writable field of the channel `new.id` (type and source stay).
    pub async fn update_channel(&mut self, new: &ChannelWrite) -> Result<()> {
        let now = ms(self.now());
        let updated = write!(self, |conn| {
            sqlx::query(
                "UPDATE channel SET name = $2, config = $3, secrets_enc = $4, secret_keys = $5, enabled = $6, \
                 inbound_policy = $7, default_agent_id = $8, bot_identity = $9, updated_at = $10 WHERE id = $1",
            )
            .bind(new.id)
            .bind(&new.name)
            .bind(Json(&new.config))
            .bind(new.secrets_enc.as_deref())
            .bind(Json(&new.secret_keys))
            .bind(new.enabled)
            .bind(&new.inbound_policy)
            .bind(new.default_agent_id)
            .bind(new.bot_identity.as_ref().map(Json))
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        if updated == 0 {
            return Err(StoreError::NotFound { entity: "channel" });
        }
        self.notify(Notification::ChannelChanged { channel_id: new.id });
        Ok(())
    }

    /// Deletes a channel with what hangs off it; `false` when there was none.
    pub async fn delete_channel(&mut self, id: Uuid) -> Result<bool> {
        let deleted = write!(self, |conn| {
            sqlx::query("DELETE FROM channel WHERE id = $1").bind(id).execute(conn).await?.rows_affected()
        });
        self.notify(Notification::ChannelChanged { channel_id: id });
        Ok(deleted == 1)
    }

    /// Moves an inbound row out of `received`; `false` when another router got there first (the
    /// caller then rolls back whatever it created for it).
    pub async fn finish_inbound(&mut self, id: Uuid, outcome: &InboundOutcome) -> Result<bool> {
        let now = ms(self.now());
        let updated = write!(self, |conn| {
            sqlx::query(
                "UPDATE inbound_message SET status = $2, user_id = $3, agent_id = $4, job_id = $5, detail = $6, \
                 updated_at = $7 WHERE id = $1 AND status = 'received'",
            )
            .bind(id)
            .bind(outcome.status)
            .bind(outcome.user_id)
            .bind(outcome.agent_id)
            .bind(outcome.job_id)
            .bind(outcome.detail.as_deref())
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }
}
