//! Provider credentials (SPEC §3.2): named, workspace-level keys and endpoints that agents reference by
//! provider name (`openai`, `anthropic`, `groq-local`, …).
//!
//! `secret_enc` is encrypted by the caller for the cell `provider_credential.secret_enc.<id>`, so ids are
//! chosen (or looked up) before a write. `prices` is a JSON object of operator prices per model-id prefix
//! (`{"llama3.1": {"input_per_mtok": 0, …}}`), where the key `"*"` is the provider's default price for
//! models nobody priced. `status` is `active`, `error` (the provider refused the key; a later success
//! clears it) or `disabled` (operator intent: never used).
//!
//! `source: "env"` rows mirror the environment and are only written by [`Tx::upsert_credential`] at start;
//! rows created through the API (`source: "api"`) are inserted, updated and deleted by id. Spend through a
//! credential (`calls`, tokens, `cost_usd`) is added in the transaction that charges the job, to one of the
//! credential's `credential_usage` rows (the shard the job's id picks, as for the budget ledger), so the
//! calls of many workers do not queue on one row; a credential's figures are the sum of those rows.
//!
//! Every write that can change a stored value or disable a credential (create, update, delete, sign-in,
//! token refresh — not usage, spend or the `error` status) commits a [`Notification::Credentials`], so
//! every process rebuilds its secret set on its next use instead of reading these rows each time.

use cortex_core::Timestamp;
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::budgets::spend_shard;
use crate::engine::{read, write};
use crate::rows::{Millis, OptMillis, ms, time};
use crate::secrets::SecretRef;
use crate::{Notification, Result, Store, StoreError, Tx};

/// The cell a credential's secret is encrypted for.
pub fn secret_ref(id: Uuid) -> SecretRef {
    SecretRef::new("provider_credential", "secret_enc", id)
}

/// Characters of a secret shown in listings (SPEC §17.3: the last 4 at most).
const HINT_CHARS: usize = 4;
/// Secrets shorter than this get no hint: four characters of a short secret give too much away.
const HINT_MIN_LEN: usize = 16;

/// The hint stored beside a secret: its last four characters, for secrets long enough to spare them.
pub fn secret_hint(secret: &str) -> Option<String> {
    let chars: Vec<char> = secret.chars().collect();
    (chars.len() >= HINT_MIN_LEN).then(|| chars[chars.len() - HINT_CHARS..].iter().collect())
}

/// A stored credential; the secret stays encrypted.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProviderCredential {
    pub id: Uuid,
    /// `llm`, `embedding`, `search`, `tool_secret` or `speech`.
    pub kind: String,
    pub name: String,
    /// The provider preset this credential serves when that is not its name (`None`: the name is the
    /// provider).
    pub provider: Option<String>,
    /// `openai` or `anthropic` for LLM providers.
    pub api_style: Option<String>,
    pub base_url: Option<String>,
    pub secret_enc: Option<String>,
    /// The last characters of the secret, shown so operators recognise a key (never enough to use it).
    pub secret_hint: Option<String>,
    #[sqlx(json)]
    pub models: Value,
    #[sqlx(json)]
    pub prices: Value,
    pub status: String,
    #[sqlx(try_from = "OptMillis")]
    pub last_used_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub error_count: i64,
    /// `env` (materialised from the environment at start) or `api`.
    pub source: String,
    /// Spend through this credential.
    #[sqlx(flatten)]
    pub usage: CredentialUsage,
    /// The sign-in flow that produced the secret (provider sign-in), if it came from one.
    pub sign_in: Option<String>,
    /// Encrypted refresh token (for `provider_credential.refresh_enc.<id>`).
    pub refresh_enc: Option<String>,
    /// When the secret stops working (signed-in access tokens).
    #[sqlx(try_from = "OptMillis")]
    pub expires_at: Option<Timestamp>,
    #[sqlx(try_from = "Millis")]
    pub created_at: Timestamp,
    #[sqlx(try_from = "Millis")]
    pub updated_at: Timestamp,
}

impl ProviderCredential {
    /// The provider (preset) the credential serves: `provider` when set, else its name.
    pub fn provider_name(&self) -> &str {
        self.provider.as_deref().unwrap_or(&self.name)
    }
}

/// Calls, tokens and cost charged through one credential.
#[derive(Debug, Clone, Copy, Default, PartialEq, sqlx::FromRow)]
pub struct CredentialUsage {
    pub calls: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
}

macro_rules! credential_columns {
    () => {
        "id, kind, name, provider, api_style, base_url, secret_enc, secret_hint, models, prices, status, last_used_at, \
         last_error, error_count, source, sign_in, refresh_enc, expires_at, created_at, updated_at, \
         (SELECT CAST(COALESCE(SUM(calls), 0) AS BIGINT) FROM credential_usage \
          WHERE credential_id = provider_credential.id) AS calls, \
         (SELECT CAST(COALESCE(SUM(tokens_in), 0) AS BIGINT) FROM credential_usage \
          WHERE credential_id = provider_credential.id) AS tokens_in, \
         (SELECT CAST(COALESCE(SUM(tokens_out), 0) AS BIGINT) FROM credential_usage \
          WHERE credential_id = provider_credential.id) AS tokens_out, \
         (SELECT CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) FROM credential_usage \
          WHERE credential_id = provider_credential.id) AS cost_usd"
    };
}

/// A credential to create or replace (by `kind` and `name`). `id` must be the existing row's id when there
/// is one, since `secret_enc` is bound to it.
#[derive(Debug, Clone)]
pub struct CredentialUpsert {
    pub id: Uuid,
    pub kind: String,
    pub name: String,
    pub api_style: Option<String>,
    pub base_url: Option<String>,
    pub secret_enc: Option<String>,
    pub secret_hint: Option<String>,
    pub source: String,
}

/// The cell a credential's refresh token is encrypted for.
pub fn refresh_ref(id: Uuid) -> SecretRef {
    SecretRef::new("provider_credential", "refresh_enc", id)
}

/// The cell a sign-in's PKCE verifier is encrypted for.
pub fn verifier_ref(id: Uuid) -> SecretRef {
    SecretRef::new("provider_sign_in", "verifier_enc", id)
}

/// A credential obtained by provider sign-in, to create or replace (by name, kind `llm`, `source: api`).
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The existing row's id when replacing one (the secrets are bound to it).
    pub id: Uuid,
    pub name: String,
    pub provider: Option<String>,
    pub base_url: Option<String>,
    pub secret_enc: String,
    pub secret_hint: Option<String>,
    pub sign_in: String,
    pub refresh_enc: Option<String>,
    pub expires_at: Option<Timestamp>,
}

/// A sign-in in progress (SPEC-style `oauth_state`: single use, short-lived).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SignInState {
    pub id: Uuid,
    pub state: String,
    /// The flow (provider) name.
    pub provider: String,
    /// The `llm` credential the result is stored as.
    pub credential_name: String,
    pub verifier_enc: String,
    pub callback_url: String,
    /// Base URL the resulting credential calls (default: the preset's).
    pub base_url: Option<String>,
    #[sqlx(rename = "expires_at")]
    pub expires_at_ms: i64,
}

impl SignInState {
    pub fn expires_at(&self) -> Timestamp {
        time(self.expires_at_ms)
    }
}

/// A credential created through the API (`source: "api"`), or the new state of one being edited.
#[derive(Debug, Clone)]
pub struct CredentialWrite {
    /// The row id (chosen before encrypting, since `secret_enc` is bound to it).
    pub id: Uuid,
    pub kind: String,
    pub name: String,
    pub provider: Option<String>,
    pub api_style: Option<String>,
    pub base_url: Option<String>,
    pub secret_enc: Option<String>,
    pub secret_hint: Option<String>,
    pub models: Value,
    pub prices: Value,
    /// `active` or `disabled`.
    pub status: String,
    /// Forget `last_error` and `error_count` (a new secret was set, or the credential was re-enabled).
    pub clear_error: bool,
}

impl Store {
    /// The credential `kind`/`name`, if any.
    pub async fn credential(&self, kind: &str, name: &str) -> Result<Option<ProviderCredential>> {
        let row: Option<ProviderCredential> = read!(self, |conn| {
            sqlx::query_as(concat!(
                "SELECT ",
                credential_columns!(),
                " FROM provider_credential WHERE kind = $1 AND name = $2"
            ))
            .bind(kind)
            .bind(name)
            .fetch_optional(conn)
            .await?
        });
        Ok(row)
    }

    /// The credential with `id`.
    pub async fn credential_by_id(&self, id: Uuid) -> Result<ProviderCredential> {
        let row: Option<ProviderCredential> = read!(self, |conn| {
            sqlx::query_as(concat!("SELECT ", credential_columns!(), " FROM provider_credential WHERE id = $1"))
                .bind(id)
                .fetch_optional(conn)
                .await?
        });
        row.ok_or(StoreError::NotFound { entity: "credential" })
    }

    /// Every credential, by kind then name (a workspace has a handful, so there is no paging).
    pub async fn list_credentials(&self) -> Result<Vec<ProviderCredential>> {
        let rows: Vec<ProviderCredential> = read!(self, |conn| {
            sqlx::query_as(concat!("SELECT ", credential_columns!(), " FROM provider_credential ORDER BY kind, name"))
                .fetch_all(conn)
                .await?
        });
        Ok(rows)
    }

    /// Every credential of a kind, by name.
    pub async fn credentials_of_kind(&self, kind: &str) -> Result<Vec<ProviderCredential>> {
        let rows: Vec<ProviderCredential> = read!(self, |conn| {
            sqlx::query_as(concat!(
                "SELECT ",
                credential_columns!(),
                " FROM provider_credential WHERE kind = $1 ORDER BY name"
            ))
            .bind(kind)
            .fetch_all(conn)
            .await?
        });
        Ok(rows)
    }
}

impl Tx {
    /// Creates or replaces a credential; a replaced one starts `active` again with its error history cleared.
    pub async fn upsert_credential(&mut self, new: &CredentialUpsert) -> Result<()> {
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO provider_credential (id, kind, name, api_style, base_url, secret_enc, models, prices, status, source, \
                 created_at, updated_at, secret_hint) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', $9, $10, $10, $11) \
                 ON CONFLICT (kind, name) DO UPDATE SET api_style = excluded.api_style, base_url = excluded.base_url, \
                 secret_enc = excluded.secret_enc, secret_hint = excluded.secret_hint, source = excluded.source, \
                 status = 'active', last_error = NULL, error_count = 0, updated_at = excluded.updated_at",
            )
            .bind(new.id)
            .bind(&new.kind)
            .bind(&new.name)
            .bind(new.api_style.as_deref())
            .bind(new.base_url.as_deref())
            .bind(new.secret_enc.as_deref())
            .bind(Json(Value::Array(Vec::new())))
            .bind(Json(Value::Object(serde_json::Map::new())))
            .bind(&new.source)
            .bind(now)
            .bind(new.secret_hint.as_deref())
            .execute(conn)
            .await?
            .rows_affected()
        });
        self.notify(Notification::Credentials);
        Ok(())
    }

    /// Inserts a credential created through the API; a taken `kind`/`name` is a `Conflict`.
    pub async fn insert_credential(&mut self, new: &CredentialWrite) -> Result<()> {
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO provider_credential (id, kind, name, provider, api_style, base_url, secret_enc, secret_hint, \
                 models, prices, status, source, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'api', $12, $12)",
            )
            .bind(new.id)
            .bind(&new.kind)
            .bind(&new.name)
            .bind(new.provider.as_deref())
            .bind(new.api_style.as_deref())
            .bind(new.base_url.as_deref())
            .bind(new.secret_enc.as_deref())
            .bind(new.secret_hint.as_deref())
            .bind(Json(&new.models))
            .bind(Json(&new.prices))
            .bind(&new.status)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        self.notify(Notification::Credentials);
        Ok(())
    }

    /// Replaces the editable fields of an API-created credential (`kind` and `name` never change); `false`
    /// when no such row exists. Bumps `updated_at`, which is what makes running processes rebuild clients.
    pub async fn update_credential(&mut self, new: &CredentialWrite) -> Result<bool> {
        let now = ms(self.now());
        let updated = write!(self, |conn| {
            sqlx::query(
                "UPDATE provider_credential SET provider = $2, api_style = $3, base_url = $4, secret_enc = $5, \
                 secret_hint = $6, models = $7, prices = $8, status = $9, \
                 last_error = CASE WHEN $10 THEN NULL ELSE last_error END, \
                 error_count = CASE WHEN $10 THEN 0 ELSE error_count END, updated_at = $11 \
                 WHERE id = $1 AND source = 'api'",
            )
            .bind(new.id)
            .bind(new.provider.as_deref())
            .bind(new.api_style.as_deref())
            .bind(new.base_url.as_deref())
            .bind(new.secret_enc.as_deref())
            .bind(new.secret_hint.as_deref())
            .bind(Json(&new.models))
            .bind(Json(&new.prices))
            .bind(&new.status)
            .bind(new.clear_error)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        if updated == 1 {
            self.notify(Notification::Credentials);
        }
        Ok(updated == 1)
    }

    /// Deletes an API-created credential; `false` when there was none (env rows are never deleted here).
    pub async fn delete_credential_by_id(&mut self, id: Uuid) -> Result<bool> {
        let deleted = write!(self, |conn| {
            sqlx::query("DELETE FROM provider_credential WHERE id = $1 AND source = 'api'")
                .bind(id)
                .execute(conn)
                .await?
                .rows_affected()
        });
        if deleted == 1 {
            self.notify(Notification::Credentials);
        }
        Ok(deleted == 1)
    }

    /// Adds one served call's tokens and cost to the credential's spend, on the row `job_id` picks.
    pub async fn add_credential_usage(
        &mut self,
        kind: &str,
        name: &str,
        job_id: Uuid,
        usage: CredentialUsage,
    ) -> Result<()> {
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO credential_usage (credential_id, shard, calls, tokens_in, tokens_out, cost_usd) \
                 SELECT id, $3, $4, $5, $6, $7 FROM provider_credential WHERE kind = $1 AND name = $2 \
                 ON CONFLICT (credential_id, shard) DO UPDATE SET calls = credential_usage.calls + excluded.calls, \
                 tokens_in = credential_usage.tokens_in + excluded.tokens_in, \
                 tokens_out = credential_usage.tokens_out + excluded.tokens_out, \
                 cost_usd = credential_usage.cost_usd + excluded.cost_usd",
            )
            .bind(kind)
            .bind(name)
            .bind(spend_shard(job_id))
            .bind(usage.calls)
            .bind(usage.tokens_in)
            .bind(usage.tokens_out)
            .bind(usage.cost_usd)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Stores the result of a provider sign-in: a new `source: api` credential, or new secrets for the
    /// API-created one of that name (an env credential of that name is left alone: `false`).
    pub async fn store_signed_in(&mut self, new: &SignedIn) -> Result<bool> {
        let now = ms(self.now());
        let written = write!(self, |conn| {
            sqlx::query(
                "INSERT INTO provider_credential (id, kind, name, provider, secret_enc, secret_hint, models, prices, status, \
                 source, sign_in, refresh_enc, expires_at, created_at, updated_at, base_url) \
                 VALUES ($1, 'llm', $2, $3, $4, $5, $6, $7, 'active', 'api', $8, $9, $10, $11, $11, $12) \
                 ON CONFLICT (kind, name) DO UPDATE SET secret_enc = excluded.secret_enc, \
                 base_url = COALESCE(excluded.base_url, provider_credential.base_url), \
                 secret_hint = excluded.secret_hint, sign_in = excluded.sign_in, refresh_enc = excluded.refresh_enc, \
                 expires_at = excluded.expires_at, status = 'active', last_error = NULL, error_count = 0, \
                 updated_at = excluded.updated_at \
                 WHERE provider_credential.source = 'api' AND provider_credential.id = excluded.id",
            )
            .bind(new.id)
            .bind(&new.name)
            .bind(new.provider.as_deref())
            .bind(&new.secret_enc)
            .bind(new.secret_hint.as_deref())
            .bind(Json(Value::Array(Vec::new())))
            .bind(Json(Value::Object(serde_json::Map::new())))
            .bind(&new.sign_in)
            .bind(new.refresh_enc.as_deref())
            .bind(new.expires_at.map(ms))
            .bind(now)
            .bind(new.base_url.as_deref())
            .execute(conn)
            .await?
            .rows_affected()
        });
        if written == 1 {
            self.notify(Notification::Credentials);
        }
        Ok(written == 1)
    }

    /// Replaces a signed-in credential's tokens after a refresh, unless another process refreshed it
    /// first (its `secret_enc` is no longer `previous`): `false` then.
    pub async fn refresh_signed_in(
        &mut self,
        id: Uuid,
        previous: &str,
        secret_enc: &str,
        secret_hint: Option<&str>,
        refresh_enc: Option<&str>,
        expires_at: Option<Timestamp>,
    ) -> Result<bool> {
        let now = ms(self.now());
        let updated = write!(self, |conn| {
            sqlx::query(
                "UPDATE provider_credential SET secret_enc = $3, secret_hint = $4, refresh_enc = $5, expires_at = $6, \
                 updated_at = $7 WHERE id = $1 AND secret_enc = $2",
            )
            .bind(id)
            .bind(previous)
            .bind(secret_enc)
            .bind(secret_hint)
            .bind(refresh_enc)
            .bind(expires_at.map(ms))
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        if updated == 1 {
            self.notify(Notification::Credentials);
        }
        Ok(updated == 1)
    }

    /// Records a sign-in in progress.
    pub async fn insert_sign_in(&mut self, new: &SignInState) -> Result<()> {
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO provider_sign_in (id, state, provider, credential_name, verifier_enc, callback_url, \
                 base_url, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(new.id)
            .bind(&new.state)
            .bind(&new.provider)
            .bind(&new.credential_name)
            .bind(&new.verifier_enc)
            .bind(&new.callback_url)
            .bind(new.base_url.as_deref())
            .bind(new.expires_at_ms)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Removes and returns the sign-in with `state` (single use), expired or not; also drops every
    /// expired one.
    pub async fn take_sign_in(&mut self, state: &str) -> Result<Option<SignInState>> {
        let now = ms(self.now());
        let taken: Option<SignInState> = write!(self, |conn| {
            let taken = sqlx::query_as(
                "DELETE FROM provider_sign_in WHERE state = $1 RETURNING id, state, provider, credential_name, \
                 verifier_enc, callback_url, base_url, expires_at",
            )
            .bind(state)
            .fetch_optional(&mut *conn)
            .await?;
            sqlx::query("DELETE FROM provider_sign_in WHERE expires_at < $1").bind(now).execute(&mut *conn).await?;
            taken
        });
        Ok(taken)
    }

    /// Deletes a credential that came from `source`; `false` when there was none.
    pub async fn delete_credential(&mut self, kind: &str, name: &str, source: &str) -> Result<bool> {
        let deleted = write!(self, |conn| {
            sqlx::query("DELETE FROM provider_credential WHERE kind = $1 AND name = $2 AND source = $3")
                .bind(kind)
                .bind(name)
                .bind(source)
                .execute(conn)
                .await?
                .rows_affected()
        });
        if deleted == 1 {
            self.notify(Notification::Credentials);
        }
        Ok(deleted == 1)
    }

    /// The provider refused the credential (HTTP 401/403): operators see `error` and the reason.
    pub async fn mark_credential_error(&mut self, kind: &str, name: &str, error: &str) -> Result<()> {
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "UPDATE provider_credential SET status = 'error', last_error = $3, error_count = error_count + 1, updated_at = $4 \
                 WHERE kind = $1 AND name = $2 AND status <> 'disabled'",
            )
            .bind(kind)
            .bind(name)
            .bind(error)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// A call through the credential succeeded: records the use and clears an `error` status.
    pub async fn record_credential_success(&mut self, kind: &str, name: &str) -> Result<()> {
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "UPDATE provider_credential SET last_used_at = $3, \
                 status = CASE WHEN status = 'error' THEN 'active' ELSE status END, \
                 updated_at = CASE WHEN status = 'error' THEN $3 ELSE updated_at END WHERE kind = $1 AND name = $2",
            )
            .bind(kind)
            .bind(name)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hints_only_long_secrets() {
        assert_eq!(super::secret_hint("sk-0123456789abcdef").as_deref(), Some("cdef"));
        assert_eq!(super::secret_hint("short-secret"), None);
    }
}
