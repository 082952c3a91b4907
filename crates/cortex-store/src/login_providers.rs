//! Sign-in through other identity providers (SPEC §3.1 `login_provider`, `user_identity`, `oauth_state`;
//! §11.1; Appendix B "Login providers").
//!
//! - `login_provider`: one row per provider type (`github`, `google`, `oidc`; UQ(`provider`)). The client
//!   secret is encrypted by the caller for the cell `login_provider.client_secret_enc.<id>`, so a row's id
//!   is chosen (or looked up) before a write. Providers configured by environment variables are not rows;
//!   the API layers them over these.
//! - `oauth_state`: a sign-in in progress. Only the SHA-256 of its `state` is stored (the value travels in
//!   URLs); it is single use ([`Tx::take_oauth_state`] deletes it) and expires after 10 minutes. The PKCE
//!   verifier is encrypted for `oauth_state.pkce_verifier.<id>`; the OIDC `nonce` sits beside it.
//! - `user_identity`: which provider subject belongs to which user, so a later sign-in finds the user by
//!   subject even after the email at the provider changed.

use cortex_core::Timestamp;
use cortex_core::role::Role;
use uuid::Uuid;

use crate::engine::{read, write};
use crate::rows::{Millis, ms, parse, time};
use crate::secrets::SecretRef;
use crate::users::User;
use crate::{Result, Store, StoreError, Tx};

/// The cell a provider's client secret is encrypted for.
pub fn client_secret_ref(id: Uuid) -> SecretRef {
    SecretRef::new("login_provider", "client_secret_enc", id)
}

/// The cell a sign-in's PKCE verifier is encrypted for.
pub fn pkce_verifier_ref(id: Uuid) -> SecretRef {
    SecretRef::new("oauth_state", "pkce_verifier", id)
}

/// A login provider as stored (the secret stays encrypted).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LoginProviderRow {
    pub id: Uuid,
    /// `github`, `google` or `oidc`.
    pub provider: String,
    /// Label of the login button.
    pub display_name: Option<String>,
    pub client_id: String,
    pub client_secret_enc: Option<String>,
    pub issuer_url: Option<String>,
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    pub userinfo_url: Option<String>,
    pub api_url: Option<String>,
    /// Whether an unknown (verified) email creates a user, with [`Self::signup_role`].
    pub auto_signup: bool,
    #[sqlx(try_from = "RoleColumn")]
    pub signup_role: Role,
    pub enabled: bool,
    #[sqlx(try_from = "Millis")]
    pub created_at: Timestamp,
    #[sqlx(try_from = "Millis")]
    pub updated_at: Timestamp,
}

/// `login_provider.signup_role` as stored, parsed into a [`Role`] as the row is read.
#[derive(sqlx::Type)]
#[sqlx(transparent)]
struct RoleColumn(String);

impl TryFrom<RoleColumn> for Role {
    type Error = StoreError;

    fn try_from(value: RoleColumn) -> Result<Self> {
        parse("login_provider.signup_role", &value.0)
    }
}

const PROVIDER_COLUMNS: &str = "id, provider, display_name, client_id, client_secret_enc, issuer_url, authorize_url, \
     token_url, userinfo_url, api_url, auto_signup, signup_role, enabled, created_at, updated_at";

/// A sign-in in progress.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OAuthState {
    pub id: Uuid,
    /// SHA-256 (hex) of the `state` value sent to the provider.
    pub state_hash: String,
    pub provider: String,
    /// Encrypted for [`pkce_verifier_ref`].
    pub pkce_verifier: Option<String>,
    /// The OIDC nonce the ID token must carry.
    pub nonce: Option<String>,
    /// Dashboard path to show after signing in.
    pub redirect_to: String,
    #[sqlx(rename = "expires_at")]
    pub expires_at_ms: i64,
}

impl OAuthState {
    pub fn expires_at(&self) -> Timestamp {
        time(self.expires_at_ms)
    }
}

impl Store {
    /// Every stored login provider, by provider type.
    pub async fn list_login_providers(&self) -> Result<Vec<LoginProviderRow>> {
        let rows: Vec<LoginProviderRow> = read!(self, |conn| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {PROVIDER_COLUMNS} FROM login_provider ORDER BY provider"
            )))
            .fetch_all(conn)
            .await?
        });
        Ok(rows)
    }

    /// The stored provider of this type, if any.
    pub async fn login_provider(&self, provider: &str) -> Result<Option<LoginProviderRow>> {
        let row: Option<LoginProviderRow> = read!(self, |conn| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {PROVIDER_COLUMNS} FROM login_provider WHERE provider = $1"
            )))
            .bind(provider)
            .fetch_optional(conn)
            .await?
        });
        Ok(row)
    }

    /// The user linked to `(provider, subject)`, if any.
    pub async fn identity_user(&self, provider: &str, subject: &str) -> Result<Option<User>> {
        let user_id: Option<Uuid> = read!(self, |conn| {
            sqlx::query_scalar("SELECT user_id FROM user_identity WHERE provider = $1 AND subject = $2")
                .bind(provider)
                .bind(subject)
                .fetch_optional(conn)
                .await?
        });
        match user_id {
            Some(id) => Ok(Some(self.get_user(id).await?)),
            None => Ok(None),
        }
    }
}

impl Tx {
    /// Creates or replaces the provider of `row.provider`; `true` when it was created. `created_at` and
    /// `updated_at` of `row` are ignored.
    pub async fn put_login_provider(&mut self, row: &LoginProviderRow) -> Result<bool> {
        let now = ms(self.now());
        let updated = write!(self, |conn| {
            sqlx::query(
                "UPDATE login_provider SET display_name = $1, client_id = $2, client_secret_enc = $3, issuer_url = $4, \
                 authorize_url = $5, token_url = $6, userinfo_url = $7, api_url = $8, auto_signup = $9, \
                 signup_role = $10, enabled = $11, updated_at = $12 WHERE id = $13 AND provider = $14",
            )
            .bind(&row.display_name)
            .bind(&row.client_id)
            .bind(&row.client_secret_enc)
            .bind(&row.issuer_url)
            .bind(&row.authorize_url)
            .bind(&row.token_url)
            .bind(&row.userinfo_url)
            .bind(&row.api_url)
            .bind(row.auto_signup)
            .bind(row.signup_role.as_str())
            .bind(row.enabled)
            .bind(now)
            .bind(row.id)
            .bind(&row.provider)
            .execute(conn)
            .await?
            .rows_affected()
        });
        if updated == 1 {
            return Ok(false);
        }
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO login_provider (id, provider, display_name, client_id, client_secret_enc, issuer_url, \
                 authorize_url, token_url, userinfo_url, api_url, auto_signup, signup_role, enabled, created_at, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)",
            )
            .bind(row.id)
            .bind(&row.provider)
            .bind(&row.display_name)
            .bind(&row.client_id)
            .bind(&row.client_secret_enc)
            .bind(&row.issuer_url)
            .bind(&row.authorize_url)
            .bind(&row.token_url)
            .bind(&row.userinfo_url)
            .bind(&row.api_url)
            .bind(row.auto_signup)
            .bind(row.signup_role.as_str())
            .bind(row.enabled)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(true)
    }

    /// Deletes the provider of this type; `false` when there was none.
    pub async fn delete_login_provider(&mut self, provider: &str) -> Result<bool> {
        let deleted = write!(self, |conn| {
            sqlx::query("DELETE FROM login_provider WHERE provider = $1")
                .bind(provider)
                .execute(conn)
                .await?
                .rows_affected()
        });
        Ok(deleted == 1)
    }

    /// Records a sign-in in progress, and drops expired ones: starting a sign-in needs no credentials,
    /// so the table holds at most ten minutes' worth of started sign-ins.
    pub async fn insert_oauth_state(&mut self, state: &OAuthState) -> Result<()> {
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query("DELETE FROM oauth_state WHERE expires_at < $1").bind(now).execute(&mut *conn).await?;
            sqlx::query(
                "INSERT INTO oauth_state (id, state_hash, provider, pkce_verifier, nonce, redirect_to, expires_at, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(state.id)
            .bind(&state.state_hash)
            .bind(&state.provider)
            .bind(&state.pkce_verifier)
            .bind(&state.nonce)
            .bind(&state.redirect_to)
            .bind(state.expires_at_ms)
            .bind(now)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Removes and returns the sign-in whose state hashes to `state_hash` (single use), expired or not;
    /// also drops every expired one so the table stays small.
    pub async fn take_oauth_state(&mut self, state_hash: &str) -> Result<Option<OAuthState>> {
        let now = ms(self.now());
        Ok(write!(self, |conn| {
            let taken = sqlx::query_as(
                "DELETE FROM oauth_state WHERE state_hash = $1 RETURNING id, state_hash, provider, pkce_verifier, \
                 nonce, redirect_to, expires_at",
            )
            .bind(state_hash)
            .fetch_optional(&mut *conn)
            .await?;
            sqlx::query("DELETE FROM oauth_state WHERE expires_at < $1").bind(now).execute(&mut *conn).await?;
            taken
        }))
    }

    /// Links `(provider, subject)` to a user. A subject already linked is a
    /// [`StoreError::Conflict`].
    pub async fn link_identity(
        &mut self,
        user_id: Uuid,
        provider: &str,
        subject: &str,
        email: Option<&str>,
        email_verified: bool,
    ) -> Result<()> {
        let now = ms(self.now());
        let inserted = write!(self, |conn| {
            sqlx::query(
                "INSERT INTO user_identity (id, user_id, provider, subject, email, email_verified, created_at, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            )
            .bind(cortex_core::new_id())
            .bind(user_id)
            .bind(provider)
            .bind(subject)
            .bind(email)
            .bind(email_verified)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        if inserted == 1 { Ok(()) } else { Err(StoreError::NotFound { entity: "user" }) }
    }
}
