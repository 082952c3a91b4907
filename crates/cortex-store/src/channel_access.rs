//! Who talks to which agent through a channel (SPEC §8.6–§8.8): platform identities linked to user
//! accounts, agent ↔ chat bindings, grants, access requests, the channel allowlist, and the per-chat
//! sessions of channel users.

use cortex_core::Timestamp;
use cortex_core::role::Role;
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

/// An agent grant (SPEC §8.8).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Grant {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub user_id: Uuid,
    /// `read` or `write`.
    pub access: String,
    /// `open`, `bound_chat`, `invite`, `pairing` or `approval`.
    pub origin: String,
    /// `active` or `revoked`.
    pub status: String,
    pub expires_at: Option<i64>,
}

impl Grant {
    /// Active and not expired at `now`.
    pub fn is_usable(&self, now: Timestamp) -> bool {
        self.status == "active" && self.expires_at.is_none_or(|at| at > ms(now))
    }
}

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
            sqlx::query_as(
                "SELECT id, agent_id, user_id, access, origin, status, expires_at FROM agent_grant \
                 WHERE agent_id = $1 AND user_id = $2",
            )
            .bind(agent_id)
            .bind(user_id)
            .fetch_optional(conn)
            .await?
        }))
    }

    /// Whether the channel's allowlist admits a platform user.
    pub async fn is_allowlisted(&self, channel_id: Uuid, platform_user_id: &str) -> Result<bool> {
        let found: Option<i64> = read!(self, |conn| {
            sqlx::query_scalar("SELECT 1 FROM channel_allowlist WHERE channel_id = $1 AND platform_user_id = $2")
                .bind(channel_id)
                .bind(platform_user_id)
                .fetch_optional(conn)
                .await?
        });
        Ok(found.is_some())
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
    pub async fn upsert_grant(&mut self, agent_id: Uuid, user_id: Uuid, access: &str, origin: &str) -> Result<()> {
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO agent_grant (id, agent_id, user_id, access, origin, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, 'active', $6, $6) ON CONFLICT (agent_id, user_id) DO UPDATE SET \
                 access = excluded.access, origin = excluded.origin, status = 'active', expires_at = NULL, \
                 updated_at = excluded.updated_at",
            )
            .bind(cortex_core::new_id())
            .bind(agent_id)
            .bind(user_id)
            .bind(access)
            .bind(origin)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Files (or finds) the user's pending access request for an agent; `true` when it is new.
    pub async fn request_access(
        &mut self,
        agent_id: Uuid,
        user_id: Uuid,
        channel_id: Uuid,
        chat_id: &str,
    ) -> Result<bool> {
        let now = ms(self.now());
        let inserted = write!(self, |conn| {
            sqlx::query(
                "INSERT INTO access_request (id, agent_id, user_id, channel_id, chat_id, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6) ON CONFLICT (agent_id, user_id) WHERE status = 'pending' \
                 DO NOTHING",
            )
            .bind(cortex_core::new_id())
            .bind(agent_id)
            .bind(user_id)
            .bind(channel_id)
            .bind(chat_id)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }
}
