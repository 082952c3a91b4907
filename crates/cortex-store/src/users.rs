//! User accounts and API keys (SPEC §3.1, §17.2). Only key hashes are stored. A key found for
//! authentication comes with its owner's role and whether the owner is disabled, so demoting or disabling a
//! user reaches the keys they hold.

use cortex_core::Timestamp;
use cortex_core::role::Role;
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use crate::engine::{TxConn, read, write};
use crate::page::{Cursor, Page};
use crate::rows::{ms, opt_ms, opt_time, parse, time};
use crate::{Result, Store, StoreError, Tx};

/// A human known to the system.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub display_name: String,
    pub email: Option<String>,
    pub role: Role,
    pub disabled_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    display_name: String,
    email: Option<String>,
    role: String,
    disabled_at: Option<i64>,
    created_at: i64,
}

impl UserRow {
    fn into_user(self) -> Result<User> {
        Ok(User {
            id: self.id,
            display_name: self.display_name,
            email: self.email,
            role: parse("user_account.role", &self.role)?,
            disabled_at: opt_time(self.disabled_at),
            created_at: time(self.created_at),
        })
    }
}

/// A change to a user account (`PATCH /users/{id}`); `None` keeps the field.
#[derive(Debug, Clone, Default)]
pub struct UserChange {
    pub display_name: Option<String>,
    pub role: Option<Role>,
    /// `true` disables the account (keeping the first disabling time), `false` enables it again.
    pub disabled: Option<bool>,
}

/// What [`Tx::merge_users`] moved, for the answer and the audit entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeCounts {
    pub channel_mappings: u64,
    pub login_identities: u64,
    pub grants: u64,
    /// Grants of the merged user dropped because the target kept a better one for the same agent.
    pub grants_dropped: u64,
    pub access_requests_denied: u64,
    pub sessions: u64,
    pub web_sessions_ended: u64,
}

/// A key looked up for authentication: the key, its stored hash and its owner, if it has one.
#[derive(Debug, Clone)]
pub struct FoundKey {
    pub key: ApiKey,
    pub hash: String,
    /// The owning user's role and whether that user is disabled.
    pub owner: Option<(Role, bool)>,
}

#[derive(sqlx::FromRow)]
struct FoundKeyRow {
    #[sqlx(flatten)]
    key: ApiKeyRow,
    owner_role: Option<String>,
    owner_disabled_at: Option<i64>,
}

const USER_COLUMNS: &str = "id, display_name, email, role, disabled_at, created_at";

/// Where an API key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Bootstrap,
    Env,
    Api,
}

impl KeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bootstrap => "bootstrap",
            Self::Env => "env",
            Self::Api => "api",
        }
    }
}

/// An API key without its secret.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub role: Role,
    pub user_id: Option<Uuid>,
    pub expires_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub source: String,
    /// The key that created this one (cascade revocation and what a non-admin may manage).
    pub created_by_key_id: Option<Uuid>,
    /// The user whose dashboard session created this key.
    pub created_by_user_id: Option<Uuid>,
    /// The rate budget this key draws from: its own id, or its creator's budget when a non-admin made it.
    pub rate_scope_id: Uuid,
    /// Requests per minute for this key, overriding the server-wide API limit.
    pub rate_limit_per_minute: Option<u32>,
    pub created_at: Timestamp,
}

impl ApiKey {
    /// Usable now: not revoked and not expired.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|expiry| expiry > now)
    }
}

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    id: Uuid,
    name: String,
    prefix: String,
    hash: String,
    role: String,
    user_id: Option<Uuid>,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
    source: String,
    created_by_key_id: Option<Uuid>,
    created_by_user_id: Option<Uuid>,
    rate_scope_id: Option<Uuid>,
    rate_limit_per_minute: Option<i64>,
    created_at: i64,
}

impl ApiKeyRow {
    fn into_key(self) -> Result<(ApiKey, String)> {
        let key = ApiKey {
            id: self.id,
            name: self.name,
            prefix: self.prefix,
            role: parse("api_key.role", &self.role)?,
            user_id: self.user_id,
            expires_at: opt_time(self.expires_at),
            last_used_at: opt_time(self.last_used_at),
            revoked_at: opt_time(self.revoked_at),
            source: self.source,
            created_by_key_id: self.created_by_key_id,
            created_by_user_id: self.created_by_user_id,
            rate_scope_id: self.rate_scope_id.unwrap_or(self.id),
            rate_limit_per_minute: self.rate_limit_per_minute.and_then(|limit| u32::try_from(limit).ok()),
            created_at: time(self.created_at),
        };
        Ok((key, self.hash))
    }
}

/// A key to store: the hash of a generated key plus its metadata.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub name: String,
    pub prefix: String,
    pub hash: String,
    pub role: Role,
    pub user_id: Option<Uuid>,
    pub expires_at: Option<Timestamp>,
    pub source: KeySource,
    pub created_by_key_id: Option<Uuid>,
    pub created_by_user_id: Option<Uuid>,
    /// The budget to draw from; `None` gives the key its own.
    pub rate_scope_id: Option<Uuid>,
    pub rate_limit_per_minute: Option<u32>,
}

impl NewApiKey {
    /// A key made by the server itself (bootstrap, environment, `cortex keys`): no creator, own budget.
    pub fn system(
        name: String,
        prefix: String,
        hash: String,
        role: Role,
        user_id: Option<Uuid>,
        source: KeySource,
    ) -> Self {
        Self {
            name,
            prefix,
            hash,
            role,
            user_id,
            expires_at: None,
            source,
            created_by_key_id: None,
            created_by_user_id: None,
            rate_scope_id: None,
            rate_limit_per_minute: None,
        }
    }
}

/// Whose keys a listing shows.
#[derive(Debug, Clone, Copy)]
pub enum KeyListing {
    /// Every key (admins).
    All,
    /// A key itself and the keys it created.
    OwnKey(Uuid),
    /// The keys a user created in dashboard sessions.
    CreatedByUser(Uuid),
}

const KEY_COLUMNS: &str = "id, name, prefix, hash, role, user_id, expires_at, last_used_at, revoked_at, source, \
     created_by_key_id, created_by_user_id, rate_scope_id, rate_limit_per_minute, created_at";

impl Store {
    pub async fn get_user(&self, id: Uuid) -> Result<User> {
        let row: Option<UserRow> = read!(self, |conn| {
            sqlx::query_as(AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM user_account WHERE id = $1")))
                .bind(id)
                .fetch_optional(conn)
                .await?
        });
        row.ok_or(StoreError::NotFound { entity: "user" })?.into_user()
    }

    /// Display names of the users a page's rows refer to (one `IN (…)` over those ids).
    pub async fn user_names(&self, ids: &[Uuid]) -> Result<std::collections::HashMap<Uuid, String>> {
        self.labels_by_id("SELECT id, display_name FROM user_account WHERE id IN (", ids).await
    }

    /// Users newest first (`GET /users`).
    pub async fn list_users(&self, cursor: Option<Cursor>, limit: usize) -> Result<Page<User>> {
        let rows: Vec<UserRow> = read!(self, |conn| {
            let mut query = sqlx::QueryBuilder::new(format!("SELECT {USER_COLUMNS} FROM user_account WHERE 1 = 1"));
            if let Some(cursor) = cursor {
                query.push(" AND id < ").push_bind(cursor.0);
            }
            query.push(" ORDER BY id DESC LIMIT ").push_bind(limit as i64 + 1);
            query.build_query_as().fetch_all(conn).await?
        });
        let users = rows.into_iter().map(UserRow::into_user).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(users, limit, |user| user.id))
    }

    /// The key with this prefix, its stored hash and its owner, if any.
    pub async fn find_api_key(&self, prefix: &str) -> Result<Option<FoundKey>> {
        let row: Option<FoundKeyRow> = read!(self, |conn| {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {KEY_COLUMNS}, \
                 (SELECT u.role FROM user_account u WHERE u.id = api_key.user_id) AS owner_role, \
                 (SELECT u.disabled_at FROM user_account u WHERE u.id = api_key.user_id) AS owner_disabled_at \
                 FROM api_key WHERE prefix = $1"
            )))
            .bind(prefix)
            .fetch_optional(conn)
            .await?
        });
        let Some(row) = row else { return Ok(None) };
        let owner = match row.owner_role {
            Some(role) => Some((parse("user_account.role", &role)?, row.owner_disabled_at.is_some())),
            None => None,
        };
        let (key, hash) = row.key.into_key()?;
        Ok(Some(FoundKey { key, hash, owner }))
    }

    pub async fn get_api_key(&self, id: Uuid) -> Result<ApiKey> {
        let row: Option<ApiKeyRow> = read!(self, |conn| {
            sqlx::query_as(AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM api_key WHERE id = $1")))
                .bind(id)
                .fetch_optional(conn)
                .await?
        });
        Ok(row.ok_or(StoreError::NotFound { entity: "api key" })?.into_key()?.0)
    }

    /// Keys newest first, restricted to what `listing` covers.
    pub async fn list_api_keys(
        &self,
        listing: KeyListing,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<Page<ApiKey>> {
        let rows: Vec<ApiKeyRow> = read!(self, |conn| {
            let mut query = sqlx::QueryBuilder::new(format!("SELECT {KEY_COLUMNS} FROM api_key WHERE 1 = 1"));
            match listing {
                KeyListing::All => {}
                KeyListing::OwnKey(key) => {
                    query.push(" AND (id = ").push_bind(key).push(" OR created_by_key_id = ").push_bind(key).push(")");
                }
                KeyListing::CreatedByUser(user) => {
                    query.push(" AND created_by_user_id = ").push_bind(user);
                }
            }
            if let Some(cursor) = cursor {
                query.push(" AND id < ").push_bind(cursor.0);
            }
            query.push(" ORDER BY id DESC LIMIT ").push_bind(limit as i64 + 1);
            query.build_query_as().fetch_all(conn).await?
        });
        let keys = rows.into_iter().map(|row| row.into_key().map(|(key, _)| key)).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(keys, limit, |key| key.id))
    }

    /// Number of admin keys that can still be used; zero means a fresh install needs a bootstrap key.
    pub async fn count_active_admin_keys(&self) -> Result<i64> {
        let now = ms(self.now());
        Ok(read!(self, |conn| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM api_key WHERE role = 'admin' AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1)",
            )
            .bind(now)
            .fetch_one(conn)
            .await?
        }))
    }

    /// Usable keys drawing on `scope`'s rate budget other than the scope's own key: what a non-admin has
    /// handed out, capped (SPEC Appendix B).
    pub async fn count_active_keys_in_scope(&self, scope: Uuid) -> Result<i64> {
        let now = ms(self.now());
        Ok(read!(self, |conn| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM api_key WHERE rate_scope_id = $1 AND id <> $1 AND revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > $2)",
            )
            .bind(scope)
            .bind(now)
            .fetch_one(conn)
            .await?
        }))
    }

    /// Whether a key last used at `last_used_at` is due for [`Store::touch_api_key`]: callers that would
    /// start work (a task) for the touch ask first.
    pub fn api_key_touch_due(&self, last_used_at: Option<Timestamp>) -> bool {
        last_used_at.is_none_or(|last| self.now() - last >= chrono::Duration::minutes(1))
    }

    /// Records use of a key at most once a minute, so authentication does not turn every read into a write.
    pub async fn touch_api_key(&self, id: Uuid, last_used_at: Option<Timestamp>) -> Result<()> {
        let now = self.now();
        if !self.api_key_touch_due(last_used_at) {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        write!(tx, |conn| {
            sqlx::query("UPDATE api_key SET last_used_at = $1, updated_at = $1 WHERE id = $2")
                .bind(ms(now))
                .bind(id)
                .execute(conn)
                .await?
                .rows_affected()
        });
        tx.commit().await
    }
}

impl Tx {
    pub async fn insert_user(&mut self, display_name: &str, email: Option<&str>, role: Role) -> Result<User> {
        let id = cortex_core::new_id();
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO user_account (id, display_name, email, role, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
            )
            .bind(id)
            .bind(display_name)
            .bind(email)
            .bind(role.as_str())
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(User {
            id,
            display_name: display_name.to_owned(),
            email: email.map(str::to_owned),
            role,
            disabled_at: None,
            created_at: time(now),
        })
    }

    /// The ids of the enabled admins. On PostgreSQL their rows stay locked until commit, so two admins
    /// demoting or disabling each other at once cannot both see the other one left (SQLite transactions are
    /// serialised anyway).
    pub async fn lock_active_admins(&mut self) -> Result<Vec<Uuid>> {
        const ACTIVE_ADMINS: &str = "SELECT id FROM user_account WHERE role = 'admin' AND disabled_at IS NULL";
        Ok(match &mut self.conn {
            TxConn::Sqlite(conn) => sqlx::query_scalar(ACTIVE_ADMINS).fetch_all(&mut **conn).await?,
            TxConn::Postgres(conn) => {
                sqlx::query_scalar(AssertSqlSafe(format!("{ACTIVE_ADMINS} ORDER BY id FOR UPDATE")))
                    .fetch_all(&mut **conn)
                    .await?
            }
        })
    }

    /// A user read inside this transaction (after [`Tx::lock_active_admins`] where admins matter).
    pub async fn get_user(&mut self, id: Uuid) -> Result<User> {
        let row: Option<UserRow> = write!(self, |conn| {
            sqlx::query_as(AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM user_account WHERE id = $1")))
                .bind(id)
                .fetch_optional(conn)
                .await?
        });
        row.ok_or(StoreError::NotFound { entity: "user" })?.into_user()
    }

    /// Applies `change` to a user; returns the user as it was and as it is now. Disabling keeps the first
    /// disabling time.
    pub async fn update_user(&mut self, id: Uuid, change: &UserChange) -> Result<(User, User)> {
        let row: Option<UserRow> = write!(self, |conn| {
            sqlx::query_as(AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM user_account WHERE id = $1")))
                .bind(id)
                .fetch_optional(conn)
                .await?
        });
        let before = row.ok_or(StoreError::NotFound { entity: "user" })?.into_user()?;
        let mut user = before.clone();
        let now = self.now();
        if let Some(name) = &change.display_name {
            user.display_name.clone_from(name);
        }
        if let Some(role) = change.role {
            user.role = role;
        }
        match change.disabled {
            Some(true) => user.disabled_at = user.disabled_at.or(Some(now)),
            Some(false) => user.disabled_at = None,
            None => {}
        }
        write!(self, |conn| {
            sqlx::query(
                "UPDATE user_account SET display_name = $1, role = $2, disabled_at = $3, updated_at = $4 WHERE id = $5",
            )
            .bind(&user.display_name)
            .bind(user.role.as_str())
            .bind(opt_ms(user.disabled_at))
            .bind(ms(now))
            .bind(id)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok((before, user))
    }

    /// Merges user `from` into user `into` (SPEC §3.1 `channel_mapping`: "operators may merge two users"):
    /// moves `from`'s platform identities, login-provider identities, grants, access requests and sessions
    /// (and the inbound messages and redeemed pairing codes that count against them) to `into`, then
    /// disables `from` and ends its dashboard sessions. Where both hold a grant for the same agent the
    /// better one stays (active over revoked, then write over read, then `into`'s own); a pending access
    /// request of `from` for an agent `into` already asks for is denied as a duplicate. The caller checks
    /// who may be merged and audits; everything happens in this transaction.
    pub async fn merge_users(&mut self, from: Uuid, into: Uuid) -> Result<MergeCounts> {
        let now = ms(self.now());
        let mut counts = MergeCounts::default();
        // `into`'s grant yields where `from`'s is better; then `from`'s other duplicates go.
        write!(self, |conn| {
            sqlx::query(
                "DELETE FROM agent_grant WHERE user_id = $1 AND agent_id IN (\
                   SELECT f.agent_id FROM agent_grant f WHERE f.user_id = $2 AND f.status = 'active' \
                   AND (agent_grant.status = 'revoked' OR (agent_grant.access = 'read' AND f.access = 'write')))",
            )
            .bind(into)
            .bind(from)
            .execute(conn)
            .await?
            .rows_affected()
        });
        counts.grants_dropped = write!(self, |conn| {
            sqlx::query(
                "DELETE FROM agent_grant WHERE user_id = $1 AND agent_id IN \
                 (SELECT agent_id FROM agent_grant WHERE user_id = $2)",
            )
            .bind(from)
            .bind(into)
            .execute(conn)
            .await?
            .rows_affected()
        });
        counts.access_requests_denied = write!(self, |conn| {
            sqlx::query(
                "UPDATE access_request SET status = 'denied', reason = 'duplicate of a request of the user it was merged into', \
                 updated_at = $3 WHERE user_id = $1 AND status = 'pending' AND agent_id IN \
                 (SELECT agent_id FROM access_request WHERE user_id = $2 AND status = 'pending')",
            )
            .bind(from)
            .bind(into)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        // Every table that names a user account, except the ones that record history (audit, approvals,
        // keys). Tables with `updated_at` get it bumped.
        const MOVES: [(&str, &str, bool); 7] = [
            ("channel_mapping", "user_id", true),
            ("user_identity", "user_id", true),
            ("agent_grant", "user_id", true),
            ("access_request", "user_id", true),
            ("session", "user_id", true),
            ("inbound_message", "user_id", true),
            ("pairing_code", "redeemed_by", false),
        ];
        for (table, column, touch) in MOVES {
            let sql = if touch {
                format!("UPDATE {table} SET {column} = $1, updated_at = $3 WHERE {column} = $2")
            } else {
                format!("UPDATE {table} SET {column} = $1 WHERE {column} = $2")
            };
            let moved: u64 = write!(self, |conn| {
                let query = sqlx::query(AssertSqlSafe(sql.clone())).bind(into).bind(from);
                let query = if touch { query.bind(now) } else { query };
                query.execute(conn).await?.rows_affected()
            });
            match table {
                "channel_mapping" => counts.channel_mappings = moved,
                "user_identity" => counts.login_identities = moved,
                "agent_grant" => counts.grants = moved,
                "session" => counts.sessions = moved,
                _ => {}
            }
        }
        self.update_user(from, &UserChange { disabled: Some(true), ..UserChange::default() }).await?;
        counts.web_sessions_ended = self.delete_user_web_sessions(from).await?;
        Ok(counts)
    }

    pub async fn insert_api_key(&mut self, key: &NewApiKey) -> Result<ApiKey> {
        let id = cortex_core::new_id();
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO api_key (id, name, prefix, hash, role, user_id, expires_at, source, created_by_key_id, \
                 created_by_user_id, rate_scope_id, rate_limit_per_minute, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
            )
            .bind(id)
            .bind(&key.name)
            .bind(&key.prefix)
            .bind(&key.hash)
            .bind(key.role.as_str())
            .bind(key.user_id)
            .bind(opt_ms(key.expires_at))
            .bind(key.source.as_str())
            .bind(key.created_by_key_id)
            .bind(key.created_by_user_id)
            .bind(key.rate_scope_id.unwrap_or(id))
            .bind(key.rate_limit_per_minute.map(i64::from))
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(ApiKey {
            id,
            name: key.name.clone(),
            prefix: key.prefix.clone(),
            role: key.role,
            user_id: key.user_id,
            expires_at: key.expires_at,
            last_used_at: None,
            revoked_at: None,
            source: key.source.as_str().to_owned(),
            created_by_key_id: key.created_by_key_id,
            created_by_user_id: key.created_by_user_id,
            rate_scope_id: key.rate_scope_id.unwrap_or(id),
            rate_limit_per_minute: key.rate_limit_per_minute,
            created_at: time(now),
        })
    }

    /// Revokes a key and every key created with it, transitively (SPEC Appendix B). Returns how many
    /// keys this revoked; 0 when all were revoked already.
    pub async fn revoke_api_key(&mut self, id: Uuid) -> Result<u64> {
        let now = ms(self.now());
        Ok(write!(self, |conn| {
            sqlx::query(
                "UPDATE api_key SET revoked_at = $1, updated_at = $1 WHERE revoked_at IS NULL AND id IN ( \
                   WITH RECURSIVE tree (id) AS ( \
                     SELECT $2 \
                     UNION SELECT child.id FROM api_key child JOIN tree ON child.created_by_key_id = tree.id) \
                   SELECT id FROM tree)",
            )
            .bind(now)
            .bind(id)
            .execute(conn)
            .await?
            .rows_affected()
        }))
    }
}
