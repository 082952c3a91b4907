//! The append-only audit log (SPEC §17.7).

use cortex_core::Timestamp;
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::engine::{read, write};
use crate::page::{Cursor, Page};
use crate::rows::{ms, time};
use crate::{Result, Store, Tx};

/// One audit entry to append.
#[derive(Debug, Clone)]
pub struct NewAudit {
    /// `user`, `api_key`, `agent`, `system` or `channel_user`.
    pub actor_type: &'static str,
    pub actor_id: Option<String>,
    pub action: String,
    pub target_type: &'static str,
    pub target_id: Option<String>,
    pub details: Value,
    pub ip: Option<String>,
    pub request_id: Option<String>,
}

/// A stored audit entry.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: Uuid,
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    #[sqlx(json)]
    pub details: Value,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    #[sqlx(rename = "created_at")]
    pub created_at_ms: i64,
}

impl AuditEntry {
    pub fn created_at(&self) -> Timestamp {
        time(self.created_at_ms)
    }
}

/// Filters for [`Store::list_audit`].
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
}

impl Store {
    pub async fn list_audit(
        &self,
        filter: &AuditFilter,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<Page<AuditEntry>> {
        let rows: Vec<AuditEntry> = read!(self, |conn| {
            let mut query = sqlx::QueryBuilder::new(
                "SELECT id, actor_type, actor_id, action, target_type, target_id, details, ip, request_id, created_at FROM audit_log WHERE 1 = 1",
            );
            if let Some(action) = &filter.action {
                query.push(" AND action = ").push_bind(action.clone());
            }
            if let Some(target_type) = &filter.target_type {
                query.push(" AND target_type = ").push_bind(target_type.clone());
            }
            if let Some(target_id) = &filter.target_id {
                query.push(" AND target_id = ").push_bind(target_id.clone());
            }
            if let Some(cursor) = cursor {
                query.push(" AND id < ").push_bind(cursor.0);
            }
            query.push(" ORDER BY id DESC LIMIT ").push_bind(limit as i64 + 1);
            query.build_query_as().fetch_all(conn).await?
        });
        Ok(Page::from_overfetch(rows, limit, |entry| entry.id))
    }
}

impl Tx {
    /// Appends an audit entry in the same transaction as the change it records.
    pub async fn audit(&mut self, entry: NewAudit) -> Result<()> {
        let id = cortex_core::new_id();
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO audit_log (id, actor_type, actor_id, action, target_type, target_id, details, ip, request_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(id)
            .bind(entry.actor_type)
            .bind(entry.actor_id.as_deref())
            .bind(&entry.action)
            .bind(entry.target_type)
            .bind(entry.target_id.as_deref())
            .bind(Json(&entry.details))
            .bind(entry.ip.as_deref())
            .bind(entry.request_id.as_deref())
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(())
    }
}
