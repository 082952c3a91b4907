//! Provider credentials (SPEC §3.2): named, workspace-level keys and endpoints that agents reference by
//! provider name (`openai`, `anthropic`, `groq-local`, …).
//!
//! `secret_enc` is encrypted by the caller for the cell `provider_credential.secret_enc.<id>`, so ids are
//! chosen (or looked up) before a write. `prices` is a JSON object of operator prices per model-id prefix
//! (`{"llama3.1": {"input_per_mtok": 0, …}}`), where the key `"*"` is the provider's default price for
//! models nobody priced. `status` is `active`, `error` (the provider refused the key; a later success
//! clears it) or `disabled` (operator intent: never used).

use cortex_core::Timestamp;
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::engine::{read, write};
use crate::rows::{ms, opt_time, time};
use crate::{Result, Store, Tx};

/// A stored credential; the secret stays encrypted.
#[derive(Debug, Clone)]
pub struct ProviderCredential {
    pub id: Uuid,
    /// `llm`, `embedding`, `search`, `tool_secret` or `speech`.
    pub kind: String,
    pub name: String,
    /// `openai` or `anthropic` for LLM providers.
    pub api_style: Option<String>,
    pub base_url: Option<String>,
    pub secret_enc: Option<String>,
    pub models: Value,
    pub prices: Value,
    pub status: String,
    pub last_used_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub error_count: i64,
    /// `env` (materialised from the environment at start) or `api`.
    pub source: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct CredentialRow {
    id: Uuid,
    kind: String,
    name: String,
    api_style: Option<String>,
    base_url: Option<String>,
    secret_enc: Option<String>,
    models: Json<Value>,
    prices: Json<Value>,
    status: String,
    last_used_at: Option<i64>,
    last_error: Option<String>,
    error_count: i64,
    source: String,
    created_at: i64,
    updated_at: i64,
}

impl From<CredentialRow> for ProviderCredential {
    fn from(row: CredentialRow) -> Self {
        Self {
            id: row.id,
            kind: row.kind,
            name: row.name,
            api_style: row.api_style,
            base_url: row.base_url,
            secret_enc: row.secret_enc,
            models: row.models.0,
            prices: row.prices.0,
            status: row.status,
            last_used_at: opt_time(row.last_used_at),
            last_error: row.last_error,
            error_count: row.error_count,
            source: row.source,
            created_at: time(row.created_at),
            updated_at: time(row.updated_at),
        }
    }
}

macro_rules! credential_columns {
    () => {
        "id, kind, name, api_style, base_url, secret_enc, models, prices, status, last_used_at, last_error, error_count, \
         source, created_at, updated_at"
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
    pub source: String,
}

impl Store {
    /// The credential `kind`/`name`, if any.
    pub async fn credential(&self, kind: &str, name: &str) -> Result<Option<ProviderCredential>> {
        let row: Option<CredentialRow> = read!(self, |conn| {
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
        Ok(row.map(ProviderCredential::from))
    }

    /// Every credential of a kind, by name.
    pub async fn credentials_of_kind(&self, kind: &str) -> Result<Vec<ProviderCredential>> {
        let rows: Vec<CredentialRow> = read!(self, |conn| {
            sqlx::query_as(concat!(
                "SELECT ",
                credential_columns!(),
                " FROM provider_credential WHERE kind = $1 ORDER BY name"
            ))
            .bind(kind)
            .fetch_all(conn)
            .await?
        });
        Ok(rows.into_iter().map(ProviderCredential::from).collect())
    }
}

impl Tx {
    /// Creates or replaces a credential; a replaced one starts `active` again with its error history cleared.
    pub async fn upsert_credential(&mut self, new: &CredentialUpsert) -> Result<()> {
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO provider_credential (id, kind, name, api_style, base_url, secret_enc, models, prices, status, source, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', $9, $10, $10) \
                 ON CONFLICT (kind, name) DO UPDATE SET api_style = excluded.api_style, base_url = excluded.base_url, \
                 secret_enc = excluded.secret_enc, source = excluded.source, status = 'active', last_error = NULL, \
                 error_count = 0, updated_at = excluded.updated_at",
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
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(())
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
