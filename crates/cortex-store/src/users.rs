//! User accounts and API keys (SPEC §3.1, §17.2). Only key hashes are stored.

use cortex_core::Timestamp;
use cortex_core::role::Role;
use uuid::Uuid;

use crate::engine::{read, write};
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
}

const KEY_COLUMNS: &str =
    "id, name, prefix, hash, role, user_id, expires_at, last_used_at, revoked_at, source, created_at";

impl Store {
    pub async fn get_user(&self, id: Uuid) -> Result<User> {
        let row: Option<UserRow> = read!(self, |conn| {
            sqlx::query_as(
                "SELECT id, display_name, email, role, disabled_at, created_at FROM user_account WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(conn)
            .await?
        });
        row.ok_or(StoreError::NotFound { entity: "user" })?.into_user()
    }

    /// The key with this prefix and its stored hash, if any.
    pub async fn find_api_key(&self, prefix: &str) -> Result<Option<(ApiKey, String)>> {
        let row: Option<ApiKeyRow> = read!(self, |conn| {
            sqlx::query_as(
                "SELECT id, name, prefix, hash, role, user_id, expires_at, last_used_at, revoked_at, source, created_at \
                 FROM api_key WHERE prefix = $1",
            )
            .bind(prefix)
            .fetch_optional(conn)
            .await?
        });
        row.map(ApiKeyRow::into_key).transpose()
    }

    pub async fn get_api_key(&self, id: Uuid) -> Result<ApiKey> {
        let row: Option<ApiKeyRow> = read!(self, |conn| {
            sqlx::query_as(
                "SELECT id, name, prefix, hash, role, user_id, expires_at, last_used_at, revoked_at, source, created_at \
                 FROM api_key WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(conn)
            .await?
        });
        Ok(row.ok_or(StoreError::NotFound { entity: "api key" })?.into_key()?.0)
    }

    /// Keys newest first; `owner` restricts to one user's keys.
    pub async fn list_api_keys(
        &self,
        owner: Option<Uuid>,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<Page<ApiKey>> {
        let rows: Vec<ApiKeyRow> = read!(self, |conn| {
            let mut query = sqlx::QueryBuilder::new(format!("SELECT {KEY_COLUMNS} FROM api_key WHERE 1 = 1"));
            if let Some(owner) = owner {
                query.push(" AND user_id = ").push_bind(owner);
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

    /// Records use of a key at most once a minute, so authentication does not turn every read into a write.
    pub async fn touch_api_key(&self, id: Uuid, last_used_at: Option<Timestamp>) -> Result<()> {
        let now = self.now();
        if last_used_at.is_some_and(|last| now - last < chrono::Duration::minutes(1)) {
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

    pub async fn insert_api_key(&mut self, key: &NewApiKey) -> Result<ApiKey> {
        let id = cortex_core::new_id();
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO api_key (id, name, prefix, hash, role, user_id, expires_at, source, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
            )
            .bind(id)
            .bind(&key.name)
            .bind(&key.prefix)
            .bind(&key.hash)
            .bind(key.role.as_str())
            .bind(key.user_id)
            .bind(opt_ms(key.expires_at))
            .bind(key.source.as_str())
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
            created_at: time(now),
        })
    }

    /// Revokes a key; `false` when it was already revoked.
    pub async fn revoke_api_key(&mut self, id: Uuid) -> Result<bool> {
        let now = ms(self.now());
        let done = write!(self, |conn| {
            sqlx::query("UPDATE api_key SET revoked_at = $1, updated_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(conn)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }
}
