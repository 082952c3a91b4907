//! Dashboard login state (SPEC §3.1 `web_session`, Appendix B): local passwords, web sessions (only the
//! SHA-256 of the cookie's id is stored), failed login attempts for throttling, and the one-time first-run
//! setup. Policy (lifetimes, limits) is the caller's; this module stores and counts.

use cortex_core::Timestamp;
use uuid::Uuid;

use crate::engine::{read, write};
use crate::rows::{ms, opt_time, time};
use crate::users::User;
use crate::{Result, Store, StoreError, Tx};

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct WebSession {
    pub id: Uuid,
    pub user_id: Uuid,
    pub csrf_token: String,
    pub expires_at: Timestamp,
    /// When the session was created or last extended.
    pub last_active_at: Timestamp,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: Timestamp,
}

/// A session to store.
#[derive(Debug, Clone)]
pub struct NewWebSession {
    pub token_hash: String,
    pub user_id: Uuid,
    pub csrf_token: String,
    pub expires_at: Timestamp,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// Failed attempts inside a window: how many and the oldest one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailureCount {
    pub count: i64,
    pub oldest: Option<Timestamp>,
}

#[derive(sqlx::FromRow)]
struct SessionUserRow {
    id: Uuid,
    user_id: Uuid,
    csrf_token: String,
    expires_at: i64,
    last_active_at: i64,
    ip: Option<String>,
    user_agent: Option<String>,
    created_at: i64,
    display_name: String,
    email: Option<String>,
    role: String,
    disabled_at: Option<i64>,
    user_created_at: i64,
}

#[derive(sqlx::FromRow)]
struct LoginUserRow {
    id: Uuid,
    display_name: String,
    email: Option<String>,
    role: String,
    disabled_at: Option<i64>,
    created_at: i64,
    password_hash: Option<String>,
}

impl Store {
    /// The user with this (already normalised) email and their password hash, if any.
    pub async fn find_login_user(&self, email: &str) -> Result<Option<(User, Option<String>)>> {
        let row: Option<LoginUserRow> = read!(self, |conn| {
            sqlx::query_as(
                "SELECT id, display_name, email, role, disabled_at, created_at, password_hash \
                 FROM user_account WHERE email = $1",
            )
            .bind(email)
            .fetch_optional(conn)
            .await?
        });
        row.map(|row| {
            let user = User {
                id: row.id,
                display_name: row.display_name,
                email: row.email,
                role: crate::rows::parse("user_account.role", &row.role)?,
                disabled_at: opt_time(row.disabled_at),
                created_at: time(row.created_at),
            };
            Ok((user, row.password_hash))
        })
        .transpose()
    }

    /// The unexpired session whose id hashes to `token_hash`, with its user.
    pub async fn find_web_session(&self, token_hash: &str) -> Result<Option<(WebSession, User)>> {
        let now = ms(self.now());
        let row: Option<SessionUserRow> = read!(self, |conn| {
            sqlx::query_as(
                "SELECT s.id, s.user_id, s.csrf_token, s.expires_at, s.last_active_at, s.ip, s.user_agent, s.created_at, \
                 u.display_name, u.email, u.role, u.disabled_at, u.created_at AS user_created_at \
                 FROM web_session s JOIN user_account u ON u.id = s.user_id \
                 WHERE s.token_hash = $1 AND s.expires_at > $2",
            )
            .bind(token_hash)
            .bind(now)
            .fetch_optional(conn)
            .await?
        });
        row.map(|row| {
            let user = User {
                id: row.user_id,
                display_name: row.display_name,
                email: row.email,
                role: crate::rows::parse("user_account.role", &row.role)?,
                disabled_at: opt_time(row.disabled_at),
                created_at: time(row.user_created_at),
            };
            let session = WebSession {
                id: row.id,
                user_id: row.user_id,
                csrf_token: row.csrf_token,
                expires_at: time(row.expires_at),
                last_active_at: time(row.last_active_at),
                ip: row.ip,
                user_agent: row.user_agent,
                created_at: time(row.created_at),
            };
            Ok((session, user))
        })
        .transpose()
    }

    /// Failed login attempts since `since`, per client address and per account.
    pub async fn login_failures(
        &self,
        ip: &str,
        account: &str,
        since: Timestamp,
    ) -> Result<(FailureCount, FailureCount)> {
        let since = ms(since);
        let (by_ip, by_account): ((i64, Option<i64>), (i64, Option<i64>)) = read!(self, |conn| {
            let by_ip =
                sqlx::query_as("SELECT COUNT(*), MIN(created_at) FROM login_attempt WHERE ip = $1 AND created_at > $2")
                    .bind(ip)
                    .bind(since)
                    .fetch_one(conn)
                    .await?;
            let by_account = sqlx::query_as(
                "SELECT COUNT(*), MIN(created_at) FROM login_attempt WHERE account = $1 AND created_at > $2",
            )
            .bind(account)
            .bind(since)
            .fetch_one(conn)
            .await?;
            (by_ip, by_account)
        });
        let count = |(count, oldest): (i64, Option<i64>)| FailureCount { count, oldest: opt_time(oldest) };
        Ok((count(by_ip), count(by_account)))
    }

    /// Whether the first-run setup has created the first administrator.
    pub async fn dashboard_setup_done(&self) -> Result<bool> {
        let count: i64 =
            read!(self, |conn| sqlx::query_scalar("SELECT COUNT(*) FROM dashboard_setup").fetch_one(conn).await?);
        Ok(count > 0)
    }

    /// Whether any user can sign in with a password (the login page offers the setup only when none can).
    pub async fn count_password_users(&self) -> Result<i64> {
        Ok(read!(self, |conn| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM user_account WHERE password_hash IS NOT NULL AND disabled_at IS NULL",
            )
            .fetch_one(conn)
            .await?
        }))
    }
}

impl Tx {
    pub async fn insert_web_session(&mut self, new: &NewWebSession) -> Result<WebSession> {
        let id = cortex_core::new_id();
        let now = self.now();
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO web_session (id, token_hash, user_id, csrf_token, expires_at, last_active_at, ip, user_agent, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $6, $6)",
            )
            .bind(id)
            .bind(&new.token_hash)
            .bind(new.user_id)
            .bind(&new.csrf_token)
            .bind(ms(new.expires_at))
            .bind(ms(now))
            .bind(&new.ip)
            .bind(&new.user_agent)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(WebSession {
            id,
            user_id: new.user_id,
            csrf_token: new.csrf_token.clone(),
            expires_at: new.expires_at,
            last_active_at: now,
            ip: new.ip.clone(),
            user_agent: new.user_agent.clone(),
            created_at: now,
        })
    }

    /// Slides a session's expiry (SPEC §11.1).
    pub async fn extend_web_session(&mut self, id: Uuid, expires_at: Timestamp) -> Result<()> {
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query("UPDATE web_session SET expires_at = $1, last_active_at = $2, updated_at = $2 WHERE id = $3")
                .bind(ms(expires_at))
                .bind(now)
                .bind(id)
                .execute(conn)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// Ends one session (logout). Returns whether it existed.
    pub async fn delete_web_session(&mut self, id: Uuid) -> Result<bool> {
        let deleted = write!(self, |conn| {
            sqlx::query("DELETE FROM web_session WHERE id = $1").bind(id).execute(conn).await?.rows_affected()
        });
        Ok(deleted > 0)
    }

    /// Ends every session of a user (logout everywhere, password change, disabling). Returns how many.
    pub async fn delete_user_web_sessions(&mut self, user_id: Uuid) -> Result<u64> {
        Ok(write!(self, |conn| {
            sqlx::query("DELETE FROM web_session WHERE user_id = $1").bind(user_id).execute(conn).await?.rows_affected()
        }))
    }

    /// Records a failed login for throttling and drops failures older than `keep_since` and expired sessions,
    /// so neither table grows without bound.
    pub async fn record_login_failure(&mut self, ip: &str, account: &str, keep_since: Timestamp) -> Result<()> {
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query("INSERT INTO login_attempt (id, ip, account, created_at) VALUES ($1, $2, $3, $4)")
                .bind(cortex_core::new_id())
                .bind(ip)
                .bind(account)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM login_attempt WHERE created_at <= $1")
                .bind(ms(keep_since))
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM web_session WHERE expires_at <= $1").bind(now).execute(conn).await?.rows_affected()
        });
        Ok(())
    }

    /// Sets (or replaces) a user's Argon2id password hash.
    pub async fn set_password_hash(&mut self, user_id: Uuid, hash: &str) -> Result<()> {
        let now = ms(self.now());
        let updated = write!(self, |conn| {
            sqlx::query("UPDATE user_account SET password_hash = $1, updated_at = $2 WHERE id = $3")
                .bind(hash)
                .bind(now)
                .bind(user_id)
                .execute(conn)
                .await?
                .rows_affected()
        });
        if updated == 0 {
            return Err(StoreError::NotFound { entity: "user" });
        }
        Ok(())
    }

    /// Marks the first-run setup done by `user_id` with the bootstrap key `api_key_id`. Fails with
    /// [`StoreError::StaleState`] when it was done already, so the bootstrap key creates one admin only.
    pub async fn complete_dashboard_setup(&mut self, user_id: Uuid, api_key_id: Uuid) -> Result<()> {
        let now = ms(self.now());
        let result: Result<u64> = write!(self, |conn| {
            sqlx::query("INSERT INTO dashboard_setup (id, user_id, api_key_id, created_at) VALUES (1, $1, $2, $3)")
                .bind(user_id)
                .bind(api_key_id)
                .bind(now)
                .execute(conn)
                .await
                .map(|done| done.rows_affected())
                .map_err(StoreError::from)
        });
        match result {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { .. }) => Err(StoreError::StaleState { entity: "dashboard setup" }),
            Err(other) => Err(other),
        }
    }
}
