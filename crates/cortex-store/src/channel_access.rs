//! Who talks to which agent through a channel (SPEC §8.6–§8.8): platform identities linked to user
//! accounts, agent ↔ chat bindings, grants, pairing codes, access requests, the channel allowlist, the
//! per-user message counts the router's rate limit reads, and the per-chat sessions of channel users.
//!
//! Redeeming a pairing code is one guarded update (unredeemed, unrevoked, unexpired, not burnt by wrong
//! guesses), so two users racing for one code never both get it; deciding an access request is guarded
//! on `pending` the same way.

use cortex_core::Timestamp;
use cortex_core::role::Role;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::engine::{read, write};
use crate::rows::{ms, time};
use crate::sessions::{Session, SessionRow};
use crate::{Result, Store, StoreError, Tx};

/// An agent ↔ chat binding.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Binding {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub channel_type: String,
    /// `None`: the chat on any channel of `channel_type`.
    pub channel_id: Option<Uuid>,
    pub chat_id: String,
    /// `all` or `mentions`; `None` means the default (all in direct chats, mentions in groups).
    pub respond_to: Option<String>,
    pub created_at: i64,
}

impl Binding {
    pub fn created(&self) -> Timestamp {
        time(self.created_at)
    }
}

macro_rules! binding_columns {
    () => {
        "id, agent_id, channel_type, channel_id, chat_id, respond_to, created_at"
    };
}

/// A binding to create or move.
#[derive(Debug, Clone)]
pub struct NewBinding {
    pub agent_id: Uuid,
    pub channel_type: String,
    pub channel_id: Option<Uuid>,
    pub chat_id: String,
    pub respond_to: Option<String>,
}

/// A per-user message limit (SPEC §8.6 step 7): at most `max_messages` in any `window_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRateLimit {
    pub max_messages: u32,
    pub window_seconds: u32,
}

/// An agent grant (SPEC §8.8), with the display name of the user it is for.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Grant {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub user_id: Uuid,
    pub display_name: String,
    /// `read` or `write`.
    pub access: String,
    /// `open`, `bound_chat`, `invite`, `pairing` or `approval`.
    pub origin: String,
    /// `active` or `revoked`.
    pub status: String,
    pub expires_at: Option<i64>,
    /// Overrides the default per-user limit when set.
    pub rate_limit: Option<Json<UserRateLimit>>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Grant {
    /// Active and not expired at `now`.
    pub fn is_usable(&self, now: Timestamp) -> bool {
        self.status == "active" && !self.is_expired(now)
    }

    /// Whether the grant ran out (an expiry in the past).
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= ms(now))
    }

    /// When the grant runs out, if ever.
    pub fn expires(&self) -> Option<Timestamp> {
        self.expires_at.map(time)
    }
}

macro_rules! grant_columns {
    () => {
        "g.id, g.agent_id, g.user_id, u.display_name, g.access, g.origin, g.status, g.expires_at, g.rate_limit, \
         g.created_at, g.updated_at FROM agent_grant g JOIN user_account u ON u.id = g.user_id"
    };
}

/// A grant to give or renew.
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub agent_id: Uuid,
    pub user_id: Uuid,
    /// `read` or `write`.
    pub access: String,
    /// `open`, `bound_chat`, `invite`, `pairing` or `approval`.
    pub origin: String,
    pub expires_at: Option<Timestamp>,
    pub rate_limit: Option<UserRateLimit>,
}

/// Changes to a grant (`None` leaves a field alone; `Some(None)` clears an optional one).
#[derive(Debug, Clone, Default)]
pub struct GrantChange {
    pub access: Option<String>,
    pub expires_at: Option<Option<Timestamp>>,
    pub rate_limit: Option<Option<UserRateLimit>>,
}

/// An operator-made pairing code (SPEC §8.8).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PairingCode {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub code: String,
    /// The access the redeemed grant gives.
    pub access: String,
    pub created_by: Option<String>,
    pub expires_at: i64,
    pub redeemed_at: Option<i64>,
    pub redeemed_by: Option<Uuid>,
    pub revoked_at: Option<i64>,
    /// Wrong guesses made against the agent's codes while this one was live.
    pub failed_attempts: i64,
    pub created_at: i64,
}

macro_rules! pairing_columns {
    () => {
        "id, agent_id, code, access, created_by, expires_at, redeemed_at, redeemed_by, revoked_at, failed_attempts, \
         created_at"
    };
}

impl PairingCode {
    /// `active`, `redeemed`, `revoked`, `burnt` (too many wrong guesses) or `expired` at `now`.
    pub fn state(&self, now: Timestamp) -> &'static str {
        if self.redeemed_at.is_some() {
            "redeemed"
        } else if self.revoked_at.is_some() {
            "revoked"
        } else if self.failed_attempts >= PAIRING_CODE_MAX_FAILURES {
            "burnt"
        } else if self.expires_at <= ms(now) {
            "expired"
        } else {
            "active"
        }
    }
}

/// Wrong guesses against an agent's live codes after which those codes stop working (the per-code
/// brute-force limit; a code has 31⁶ ≈ 887 million values).
pub const PAIRING_CODE_MAX_FAILURES: i64 = 20;

/// An access request filed by a user an agent did not admit (SPEC §8.8 `approval_queue`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccessRequest {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub user_id: Uuid,
    pub display_name: String,
    pub channel_id: Option<Uuid>,
    pub chat_id: Option<String>,
    /// Where the decision is told (an outbox `target` of the chat the request came from).
    pub reply_target: Option<Json<Value>>,
    pub message_preview: Option<String>,
    /// `pending`, `approved` or `denied`.
    pub status: String,
    pub reason: Option<String>,
    pub decided_by: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

macro_rules! request_columns {
    () => {
        "r.id, r.agent_id, r.user_id, u.display_name, r.channel_id, r.chat_id, r.reply_target, r.message_preview, \
         r.status, r.reason, r.decided_by, r.created_at, r.updated_at FROM access_request r \
         JOIN user_account u ON u.id = r.user_id"
    };
}

/// Where an access request came from.
#[derive(Debug, Clone)]
pub struct NewAccessRequest {
    pub agent_id: Uuid,
    pub user_id: Uuid,
    pub channel_id: Uuid,
    pub chat_id: String,
    pub reply_target: Value,
    pub message_preview: String,
}

/// One platform user admitted by a channel's allowlist.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AllowlistEntry {
    pub platform_user_id: String,
    pub created_at: i64,
}

/// A sender's recent messages to one agent, as the rate limit counts them.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecentMessages {
    /// Messages that went through (became a job or a command).
    pub routed: i64,
    /// Messages refused by the rate limit (the "slow down" notice goes out with the first).
    pub limited: i64,
}

/// The `detail` the router records on a message the rate limit refused.
pub const RATE_LIMITED_DETAIL: &str = "rate limited";

impl Store {
    /// The binding that decides a chat: pinned to this channel first, then any channel of the type.
    pub async fn resolve_binding(
        &self,
        channel_id: Uuid,
        channel_type: &str,
        chat_id: &str,
    ) -> Result<Option<Binding>> {
        Ok(read!(self, |conn| {
            sqlx::query_as(concat!(
                "SELECT ",
                binding_columns!(),
                " FROM channel_binding WHERE chat_id = $1 AND \
                 (channel_id = $2 OR (channel_id IS NULL AND channel_type = $3)) \
                 ORDER BY CASE WHEN channel_id IS NULL THEN 1 ELSE 0 END LIMIT 1"
            ))
            .bind(chat_id)
            .bind(channel_id)
            .bind(channel_type)
            .fetch_optional(conn)
            .await?
        }))
    }

    /// An agent's bindings, oldest first.
    pub async fn agent_bindings(&self, agent_id: Uuid) -> Result<Vec<Binding>> {
        Ok(read!(self, |conn| {
            sqlx::query_as(concat!(
                "SELECT ",
                binding_columns!(),
                " FROM channel_binding WHERE agent_id = $1 ORDER BY id"
            ))
            .bind(agent_id)
            .fetch_all(conn)
            .await?
        }))
    }

    /// Bindings pinned to a channel (deleting the channel would remove them).
    pub async fn channel_bindings(&self, channel_id: Uuid) -> Result<Vec<Binding>> {
        Ok(read!(self, |conn| {
            sqlx::query_as(concat!(
                "SELECT ",
                binding_columns!(),
                " FROM channel_binding WHERE channel_id = $1 ORDER BY id"
            ))
            .bind(channel_id)
            .fetch_all(conn)
            .await?
        }))
    }

    /// The user's grant on an agent, if any (also revoked or expired ones).
    pub async fn grant(&self, agent_id: Uuid, user_id: Uuid) -> Result<Option<Grant>> {
        Ok(read!(self, |conn| {
            sqlx::query_as(concat!("SELECT ", grant_columns!(), " WHERE g.agent_id = $1 AND g.user_id = $2"))
                .bind(agent_id)
                .bind(user_id)
                .fetch_optional(conn)
                .await?
        }))
    }

    /// An agent's grants (also revoked ones), newest first.
    pub async fn grants(&self, agent_id: Uuid) -> Result<Vec<Grant>> {
        Ok(read!(self, |conn| {
            sqlx::query_as(concat!("SELECT ", grant_columns!(), " WHERE g.agent_id = $1 ORDER BY g.id DESC"))
                .bind(agent_id)
                .fetch_all(conn)
                .await?
        }))
    }

    /// An agent's pairing codes, newest first.
    pub async fn pairing_codes(&self, agent_id: Uuid) -> Result<Vec<PairingCode>> {
        Ok(read!(self, |conn| {
            sqlx::query_as(concat!(
                "SELECT ",
                pairing_columns!(),
                " FROM pairing_code WHERE agent_id = $1 ORDER BY created_at DESC, id DESC"
            ))
            .bind(agent_id)
            .fetch_all(conn)
            .await?
        }))
    }

    /// An agent's access requests (optionally of one status), newest first, at most `limit`.
    pub async fn access_requests(
        &self,
        agent_id: Uuid,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AccessRequest>> {
        Ok(read!(self, |conn| {
            sqlx::query_as(concat!(
                "SELECT ",
                request_columns!(),
                " WHERE r.agent_id = $1 AND ($2 IS NULL OR r.status = $2) ORDER BY r.id DESC LIMIT $3"
            ))
            .bind(agent_id)
            .bind(status)
            .bind(limit)
            .fetch_all(conn)
            .await?
        }))
    }

    /// One access request of an agent.
    pub async fn access_request(&self, agent_id: Uuid, id: Uuid) -> Result<AccessRequest> {
        let found: Option<AccessRequest> = read!(self, |conn| {
            sqlx::query_as(concat!("SELECT ", request_columns!(), " WHERE r.agent_id = $1 AND r.id = $2"))
                .bind(agent_id)
                .bind(id)
                .fetch_optional(conn)
                .await?
        });
        found.ok_or(StoreError::NotFound { entity: "access request" })
    }

    /// The platform users a channel's allowlist admits, oldest first.
    pub async fn allowlist(&self, channel_id: Uuid) -> Result<Vec<AllowlistEntry>> {
        Ok(read!(self, |conn| {
            sqlx::query_as(
                "SELECT platform_user_id, created_at FROM channel_allowlist WHERE channel_id = $1 \
                 ORDER BY created_at, platform_user_id",
            )
            .bind(channel_id)
            .fetch_all(conn)
            .await?
        }))
    }

    /// Whether the channel's allowlist admits a platform user.
    pub async fn is_allowlisted(&self, channel_id: Uuid, platform_user_id: &str) -> Result<bool> {
        let found: i64 = read!(self, |conn| {
            sqlx::query_scalar("SELECT COUNT(*) FROM channel_allowlist WHERE channel_id = $1 AND platform_user_id = $2")
                .bind(channel_id)
                .bind(platform_user_id)
                .fetch_one(conn)
                .await?
        });
        Ok(found > 0)
    }

    /// Jobs of a session that have not ended (what `/stop` cancels).
    pub async fn unfinished_session_jobs(&self, session_id: Uuid) -> Result<Vec<Uuid>> {
        Ok(read!(self, |conn| {
            sqlx::query_scalar(
                "SELECT id FROM job WHERE session_id = $1 AND status IN \
                 ('pending', 'scheduled', 'running', 'waiting_for_approval', 'retrying') ORDER BY id",
            )
            .bind(session_id)
            .fetch_all(conn)
            .await?
        }))
    }

    /// The most recent open session of `user` with `agent` started from `origin` (one chat).
    pub async fn open_session_from(&self, agent_id: Uuid, user_id: Uuid, origin: &str) -> Result<Option<Session>> {
        let row: Option<SessionRow> = read!(self, |conn| {
            sqlx::query_as(
                "SELECT id, agent_id, user_id, origin, status, tokens_in, tokens_out, cost_usd, message_count, \
                 last_activity_at, closed_at, created_at FROM session WHERE agent_id = $1 AND user_id = $2 AND origin = $3 \
                 AND status <> 'closed' ORDER BY last_activity_at DESC, id DESC LIMIT 1",
            )
            .bind(agent_id)
            .bind(user_id)
            .bind(origin)
            .fetch_optional(conn)
            .await?
        });
        Ok(row.map(Session::from))
    }
}

impl Tx {
    /// The user account a platform user speaks for and its role, created (role `none`) on first contact.
    pub async fn channel_user(
        &mut self,
        channel_id: Uuid,
        platform_user_id: &str,
        display_name: &str,
    ) -> Result<(Uuid, Role)> {
        let existing: Option<(Uuid, String)> = write!(self, |conn| {
            sqlx::query_as(
                "SELECT m.user_id, u.role FROM channel_mapping m JOIN user_account u ON u.id = m.user_id \
                 WHERE m.channel_id = $1 AND m.platform_user_id = $2",
            )
            .bind(channel_id)
            .bind(platform_user_id)
            .fetch_optional(conn)
            .await?
        });
        if let Some((user_id, role)) = existing {
            return Ok((user_id, crate::rows::parse("user_account.role", &role)?));
        }
        let user = self.insert_user(display_name, None, Role::None).await?;
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO channel_mapping (id, channel_id, platform_user_id, user_id, display_name, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(cortex_core::new_id())
            .bind(channel_id)
            .bind(platform_user_id)
            .bind(user.id)
            .bind(display_name)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok((user.id, Role::None))
    }

    /// Makes a platform user of `channel_id` speak for the existing account `user_id` (an operator
    /// linking their own chat identity, so e.g. their approval button presses carry their role); moves
    /// the identity when it was mapped to another account. Returns whether anything changed.
    pub async fn link_channel_user(
        &mut self,
        channel_id: Uuid,
        platform_user_id: &str,
        user_id: Uuid,
        display_name: &str,
    ) -> Result<bool> {
        let now = ms(self.now());
        let changed = write!(self, |conn| {
            sqlx::query(
                "INSERT INTO channel_mapping (id, channel_id, platform_user_id, user_id, display_name, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (channel_id, platform_user_id) \
                 DO UPDATE SET user_id = excluded.user_id, updated_at = excluded.updated_at \
                 WHERE channel_mapping.user_id <> excluded.user_id",
            )
            .bind(cortex_core::new_id())
            .bind(channel_id)
            .bind(platform_user_id)
            .bind(user_id)
            .bind(display_name)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(changed == 1)
    }

    /// Binds a chat to an agent, moving it from another agent if it was bound elsewhere. Returns the
    /// binding and whether it changed anything.
    pub async fn upsert_binding(&mut self, new: &NewBinding) -> Result<(Binding, bool)> {
        let now = ms(self.now());
        let existing: Option<Binding> = write!(self, |conn| {
            sqlx::query_as(concat!(
                "SELECT ",
                binding_columns!(),
                " FROM channel_binding WHERE chat_id = $1 AND \
                 ((channel_id = $2) OR (channel_id IS NULL AND $2 IS NULL AND channel_type = $3))"
            ))
            .bind(&new.chat_id)
            .bind(new.channel_id)
            .bind(&new.channel_type)
            .fetch_optional(conn)
            .await?
        });
        if let Some(existing) = existing {
            if existing.agent_id == new.agent_id && existing.respond_to == new.respond_to {
                return Ok((existing, false));
            }
            write!(self, |conn| {
                sqlx::query("UPDATE channel_binding SET agent_id = $2, respond_to = $3, updated_at = $4 WHERE id = $1")
                    .bind(existing.id)
                    .bind(new.agent_id)
                    .bind(new.respond_to.as_deref())
                    .bind(now)
                    .execute(conn)
                    .await?
                    .rows_affected()
            });
            let moved = Binding { agent_id: new.agent_id, respond_to: new.respond_to.clone(), ..existing };
            return Ok((moved, true));
        }
        let id = cortex_core::new_id();
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO channel_binding (id, agent_id, channel_type, channel_id, chat_id, respond_to, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            )
            .bind(id)
            .bind(new.agent_id)
            .bind(&new.channel_type)
            .bind(new.channel_id)
            .bind(&new.chat_id)
            .bind(new.respond_to.as_deref())
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        let binding = Binding {
            id,
            agent_id: new.agent_id,
            channel_type: new.channel_type.clone(),
            channel_id: new.channel_id,
            chat_id: new.chat_id.clone(),
            respond_to: new.respond_to.clone(),
            created_at: now,
        };
        Ok((binding, true))
    }

    /// Removes one of an agent's bindings.
    pub async fn delete_binding(&mut self, agent_id: Uuid, binding_id: Uuid) -> Result<()> {
        let deleted = write!(self, |conn| {
            sqlx::query("DELETE FROM channel_binding WHERE id = $1 AND agent_id = $2")
                .bind(binding_id)
                .bind(agent_id)
                .execute(conn)
                .await?
                .rows_affected()
        });
        if deleted == 0 {
            return Err(StoreError::NotFound { entity: "binding" });
        }
        Ok(())
    }

    /// Gives (or renews) a user's grant on an agent; works over a revoked or expired one.
    pub async fn upsert_grant(&mut self, grant: &NewGrant) -> Result<()> {
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO agent_grant (id, agent_id, user_id, access, origin, status, expires_at, rate_limit, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $8, $8) \
                 ON CONFLICT (agent_id, user_id) DO UPDATE SET access = excluded.access, origin = excluded.origin, \
                 status = 'active', expires_at = excluded.expires_at, rate_limit = excluded.rate_limit, \
                 updated_at = excluded.updated_at",
            )
            .bind(cortex_core::new_id())
            .bind(grant.agent_id)
            .bind(grant.user_id)
            .bind(&grant.access)
            .bind(&grant.origin)
            .bind(grant.expires_at.map(ms))
            .bind(grant.rate_limit.map(Json))
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Changes an existing grant's access, expiry or rate limit.
    pub async fn change_grant(&mut self, agent_id: Uuid, user_id: Uuid, change: &GrantChange) -> Result<()> {
        let now = ms(self.now());
        let updated = write!(self, |conn| {
            sqlx::query(
                "UPDATE agent_grant SET access = COALESCE($3, access), \
                 expires_at = CASE WHEN $4 THEN $5 ELSE expires_at END, \
                 rate_limit = CASE WHEN $6 THEN $7 ELSE rate_limit END, updated_at = $8 \
                 WHERE agent_id = $1 AND user_id = $2",
            )
            .bind(agent_id)
            .bind(user_id)
            .bind(change.access.as_deref())
            .bind(change.expires_at.is_some())
            .bind(change.expires_at.flatten().map(ms))
            .bind(change.rate_limit.is_some())
            .bind(change.rate_limit.flatten().map(Json))
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        if updated == 0 {
            return Err(StoreError::NotFound { entity: "grant" });
        }
        Ok(())
    }

    /// Revokes a grant (kept, so the user is told why they are refused); `false` when there is none.
    pub async fn revoke_grant(&mut self, agent_id: Uuid, user_id: Uuid) -> Result<bool> {
        let now = ms(self.now());
        let updated = write!(self, |conn| {
            sqlx::query(
                "UPDATE agent_grant SET status = 'revoked', updated_at = $3 WHERE agent_id = $1 AND user_id = $2",
            )
            .bind(agent_id)
            .bind(user_id)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    /// Stores a new pairing code; `None` when the code is taken (the caller draws another).
    pub async fn insert_pairing_code(
        &mut self,
        agent_id: Uuid,
        code: &str,
        access: &str,
        created_by: &str,
        expires_at: Timestamp,
    ) -> Result<Option<PairingCode>> {
        let now = ms(self.now());
        Ok(write!(self, |conn| {
            sqlx::query_as(concat!(
                "INSERT INTO pairing_code (id, agent_id, code, access, created_by, expires_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (code) DO NOTHING RETURNING ",
                pairing_columns!()
            ))
            .bind(cortex_core::new_id())
            .bind(agent_id)
            .bind(code)
            .bind(access)
            .bind(created_by)
            .bind(ms(expires_at))
            .bind(now)
            .fetch_optional(conn)
            .await?
        }))
    }

    /// Revokes an unredeemed pairing code; `NotFound` when the agent has no such code, `StaleState`
    /// when it was already redeemed or revoked.
    pub async fn revoke_pairing_code(&mut self, agent_id: Uuid, id: Uuid) -> Result<()> {
        let now = ms(self.now());
        let updated = write!(self, |conn| {
            sqlx::query(
                "UPDATE pairing_code SET revoked_at = $3 WHERE agent_id = $1 AND id = $2 \
                 AND redeemed_at IS NULL AND revoked_at IS NULL",
            )
            .bind(agent_id)
            .bind(id)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        if updated == 1 {
            return Ok(());
        }
        let exists: i64 = write!(self, |conn| {
            sqlx::query_scalar("SELECT COUNT(*) FROM pairing_code WHERE agent_id = $1 AND id = $2")
                .bind(agent_id)
                .bind(id)
                .fetch_one(conn)
                .await?
        });
        Err(if exists > 0 {
            StoreError::StaleState { entity: "pairing code" }
        } else {
            StoreError::NotFound { entity: "pairing code" }
        })
    }

    /// Redeems a live code of `agent_id` for `user_id` in one guarded update; returns the access it
    /// gives, or `None` when no live code matches (the caller counts a wrong guess).
    pub async fn redeem_pairing_code(&mut self, agent_id: Uuid, code: &str, user_id: Uuid) -> Result<Option<String>> {
        let now = ms(self.now());
        Ok(write!(self, |conn| {
            sqlx::query_scalar(
                "UPDATE pairing_code SET redeemed_at = $4, redeemed_by = $3 WHERE agent_id = $1 AND code = $2 \
                 AND redeemed_at IS NULL AND revoked_at IS NULL AND expires_at > $4 AND failed_attempts < $5 \
                 RETURNING access",
            )
            .bind(agent_id)
            .bind(code)
            .bind(user_id)
            .bind(now)
            .bind(PAIRING_CODE_MAX_FAILURES)
            .fetch_optional(conn)
            .await?
        }))
    }

    /// Counts a wrong pairing guess: against the sender (per hour window) and against every live code of
    /// the agent. Returns the sender's wrong guesses in the current window.
    pub async fn pairing_failed(&mut self, channel_id: Uuid, platform_user_id: &str, agent_id: Uuid) -> Result<i64> {
        let now = ms(self.now());
        let window_start = now - PAIRING_WINDOW_MS;
        write!(self, |conn| {
            sqlx::query(
                "UPDATE pairing_code SET failed_attempts = failed_attempts + 1 WHERE agent_id = $1 \
                 AND redeemed_at IS NULL AND revoked_at IS NULL AND expires_at > $2",
            )
            .bind(agent_id)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        let failures: Option<i64> = write!(self, |conn| {
            sqlx::query_scalar(
                "UPDATE channel_mapping SET \
                 pairing_failures = CASE WHEN pairing_window_at IS NULL OR pairing_window_at <= $3 THEN 1 \
                 ELSE pairing_failures + 1 END, \
                 pairing_window_at = CASE WHEN pairing_window_at IS NULL OR pairing_window_at <= $3 THEN $4 \
                 ELSE pairing_window_at END, updated_at = $4 \
                 WHERE channel_id = $1 AND platform_user_id = $2 RETURNING pairing_failures",
            )
            .bind(channel_id)
            .bind(platform_user_id)
            .bind(window_start)
            .bind(now)
            .fetch_optional(conn)
            .await?
        });
        Ok(failures.unwrap_or(0))
    }

    /// The sender's wrong pairing guesses in the current hour window.
    pub async fn pairing_failures(&mut self, channel_id: Uuid, platform_user_id: &str) -> Result<i64> {
        let window_start = ms(self.now()) - PAIRING_WINDOW_MS;
        let failures: Option<i64> = write!(self, |conn| {
            sqlx::query_scalar(
                "SELECT pairing_failures FROM channel_mapping WHERE channel_id = $1 AND platform_user_id = $2 \
                 AND pairing_window_at > $3",
            )
            .bind(channel_id)
            .bind(platform_user_id)
            .bind(window_start)
            .fetch_optional(conn)
            .await?
        });
        Ok(failures.unwrap_or(0))
    }

    /// How many of the sender's messages to `agent_id` since `since` went through, and how many the rate
    /// limit refused.
    pub async fn recent_messages(&mut self, user_id: Uuid, agent_id: Uuid, since: Timestamp) -> Result<RecentMessages> {
        let (routed, limited): (i64, i64) = write!(self, |conn| {
            sqlx::query_as(
                "SELECT COALESCE(SUM(CASE WHEN status = 'routed' THEN 1 ELSE 0 END), 0), \
                 COALESCE(SUM(CASE WHEN status = 'refused' AND detail = $4 THEN 1 ELSE 0 END), 0) \
                 FROM inbound_message WHERE user_id = $1 AND agent_id = $2 AND created_at > $3",
            )
            .bind(user_id)
            .bind(agent_id)
            .bind(ms(since))
            .bind(RATE_LIMITED_DETAIL)
            .fetch_one(conn)
            .await?
        });
        Ok(RecentMessages { routed, limited })
    }

    /// Tokens (in + out) used so far by the chat jobs `user_id` started with `agent_id` since `since`, and
    /// when the oldest of them was created (the earliest moment the sum can drop): the per-user token
    /// budget's usage (SPEC §8.6 step 7), counted from the jobs' own usage.
    pub async fn user_tokens_since(
        &mut self,
        user_id: Uuid,
        agent_id: Uuid,
        since: Timestamp,
    ) -> Result<(i64, Option<Timestamp>)> {
        let (tokens, oldest): (i64, Option<i64>) = write!(self, |conn| {
            sqlx::query_as(
                "SELECT CAST(COALESCE(SUM(tokens_in + tokens_out), 0) AS BIGINT), MIN(created_at) FROM job \
                 WHERE agent_id = $1 AND created_by = $2 AND created_at > $3",
            )
            .bind(agent_id)
            .bind(format!("channel_user:{user_id}"))
            .bind(ms(since))
            .fetch_one(conn)
            .await?
        });
        Ok((tokens, oldest.map(time)))
    }

    /// Decides a pending access request; an approval gives the user a `write` grant (origin `approval`)
    /// in the same transaction. `StaleState` when it was already decided.
    pub async fn decide_access_request(
        &mut self,
        agent_id: Uuid,
        id: Uuid,
        approve: bool,
        reason: Option<&str>,
        decided_by: &str,
    ) -> Result<()> {
        let now = ms(self.now());
        let user_id: Option<Uuid> = write!(self, |conn| {
            sqlx::query_scalar(
                "UPDATE access_request SET status = $3, reason = $4, decided_by = $5, updated_at = $6 \
                 WHERE agent_id = $1 AND id = $2 AND status = 'pending' RETURNING user_id",
            )
            .bind(agent_id)
            .bind(id)
            .bind(if approve { "approved" } else { "denied" })
            .bind(reason)
            .bind(decided_by)
            .bind(now)
            .fetch_optional(conn)
            .await?
        });
        let Some(user_id) = user_id else {
            return Err(StoreError::StaleState { entity: "access request" });
        };
        if approve {
            self.upsert_grant(&NewGrant {
                agent_id,
                user_id,
                access: "write".into(),
                origin: "approval".into(),
                expires_at: None,
                rate_limit: None,
            })
            .await?;
        }
        Ok(())
    }

    /// Admits a platform user through the channel's allowlist; `false` when already there.
    pub async fn allow_platform_user(&mut self, channel_id: Uuid, platform_user_id: &str) -> Result<bool> {
        let now = ms(self.now());
        let inserted = write!(self, |conn| {
            sqlx::query(
                "INSERT INTO channel_allowlist (channel_id, platform_user_id, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (channel_id, platform_user_id) DO NOTHING",
            )
            .bind(channel_id)
            .bind(platform_user_id)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }

    /// Removes a platform user from the channel's allowlist; `false` when not there.
    pub async fn disallow_platform_user(&mut self, channel_id: Uuid, platform_user_id: &str) -> Result<bool> {
        let deleted = write!(self, |conn| {
            sqlx::query("DELETE FROM channel_allowlist WHERE channel_id = $1 AND platform_user_id = $2")
                .bind(channel_id)
                .bind(platform_user_id)
                .execute(conn)
                .await?
                .rows_affected()
        });
        Ok(deleted == 1)
    }

    /// Files (or finds) the user's pending access request for an agent; `true` when it is new.
    pub async fn request_access(&mut self, new: &NewAccessRequest) -> Result<bool> {
        let now = ms(self.now());
        let inserted = write!(self, |conn| {
            sqlx::query(
                "INSERT INTO access_request (id, agent_id, user_id, channel_id, chat_id, reply_target, message_preview, \
                 status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $8) \
                 ON CONFLICT (agent_id, user_id) WHERE status = 'pending' DO NOTHING",
            )
            .bind(cortex_core::new_id())
            .bind(new.agent_id)
            .bind(new.user_id)
            .bind(new.channel_id)
            .bind(&new.chat_id)
            .bind(Json(&new.reply_target))
            .bind(&new.message_preview)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }
}

/// The window the per-sender count of wrong pairing guesses covers.
const PAIRING_WINDOW_MS: i64 = 3_600_000;
