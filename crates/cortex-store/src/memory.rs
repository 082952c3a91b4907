//! Agent memory records (SPEC §3.4, §9), in the simple form the `memory_store`/`memory_query` tools need
//! now: exact-duplicate detection by content hash and keyword candidates. Scoring, embeddings and the
//! vector backends belong to the memory subsystem that builds on this table.

use cortex_core::Timestamp;
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use uuid::Uuid;

use crate::engine::{read, write};
use crate::rows::{ms, opt_time, time};
use crate::{Result, Store, Tx};

/// A stored memory record.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryRecord {
    pub id: Uuid,
    pub agent_id: Uuid,
    /// `fact`, `preference`, `event`, `system_rule`, `lesson` or `relationship`.
    pub memory_type: String,
    pub content: String,
    pub tags: Vec<String>,
    pub importance: i64,
    pub confidence: f64,
    /// `manual`, `extraction`, `tool` or `markdown`.
    pub source: String,
    pub source_ref: Option<String>,
    pub access_count: i64,
    pub last_accessed_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct MemoryRow {
    id: Uuid,
    agent_id: Uuid,
    #[sqlx(rename = "type")]
    memory_type: String,
    content: String,
    tags: Json<Vec<String>>,
    importance: i64,
    confidence: f64,
    source: String,
    source_ref: Option<String>,
    access_count: i64,
    last_accessed_at: Option<i64>,
    created_at: i64,
}

impl From<MemoryRow> for MemoryRecord {
    fn from(row: MemoryRow) -> Self {
        Self {
            id: row.id,
            agent_id: row.agent_id,
            memory_type: row.memory_type,
            content: row.content,
            tags: row.tags.0,
            importance: row.importance,
            confidence: row.confidence,
            source: row.source,
            source_ref: row.source_ref,
            access_count: row.access_count,
            last_accessed_at: opt_time(row.last_accessed_at),
            created_at: time(row.created_at),
        }
    }
}

macro_rules! memory_columns {
    () => {
        "id, agent_id, type, content, tags, importance, confidence, source, source_ref, access_count, last_accessed_at, created_at"
    };
}

/// A record to store.
#[derive(Debug, Clone)]
pub struct NewMemory {
    pub agent_id: Uuid,
    pub memory_type: String,
    pub content: String,
    pub tags: Vec<String>,
    pub importance: i64,
    pub confidence: f64,
    pub source: String,
    pub source_ref: Option<String>,
}

/// SHA-256 hex of the content with surrounding whitespace removed: equal texts are one memory.
pub fn content_hash(content: &str) -> String {
    hex::encode(Sha256::digest(content.trim().as_bytes()))
}

impl Store {
    /// Live records of an agent containing any of `words` (case-insensitive), newest first, at most `limit`.
    /// Ranking is the caller's: this only narrows the candidates.
    pub async fn memory_candidates(&self, agent_id: Uuid, words: &[String], limit: usize) -> Result<Vec<MemoryRecord>> {
        let rows: Vec<MemoryRow> = read!(self, |conn| {
            let mut query = sqlx::QueryBuilder::new(concat!(
                "SELECT ",
                memory_columns!(),
                " FROM memory_record WHERE deleted_at IS NULL AND agent_id = "
            ));
            query.push_bind(agent_id);
            if !words.is_empty() {
                query.push(" AND (");
                let mut separated = query.separated(" OR ");
                for word in words {
                    separated.push("LOWER(content) LIKE ").push_bind_unseparated(format!("%{}%", like_escape(word)));
                    separated.push_unseparated(" ESCAPE '\\'");
                }
                query.push(")");
            }
            query.push(" ORDER BY id DESC LIMIT ").push_bind(limit as i64);
            query.build_query_as().fetch_all(conn).await?
        });
        Ok(rows.into_iter().map(MemoryRecord::from).collect())
    }
}

/// Escapes the LIKE wildcards of a search word.
fn like_escape(word: &str) -> String {
    word.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

impl Tx {
    /// Stores a record unless the agent already has a live one with the same content; returns the record and
    /// whether it was created now.
    pub async fn insert_memory(&mut self, new: &NewMemory) -> Result<(MemoryRecord, bool)> {
        let hash = content_hash(&new.content);
        let existing: Option<MemoryRow> = write!(self, |conn| {
            sqlx::query_as(concat!(
                "SELECT ",
                memory_columns!(),
                " FROM memory_record WHERE agent_id = $1 AND content_hash = $2 AND deleted_at IS NULL"
            ))
            .bind(new.agent_id)
            .bind(&hash)
            .fetch_optional(conn)
            .await?
        });
        if let Some(row) = existing {
            return Ok((row.into(), false));
        }
        let id = cortex_core::new_id();
        let now = ms(self.now());
        let row: MemoryRow = write!(self, |conn| {
            sqlx::query_as(concat!(
                "INSERT INTO memory_record (id, agent_id, type, content, tags, importance, confidence, source, source_ref, \
                 content_hash, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) RETURNING ",
                memory_columns!()
            ))
            .bind(id)
            .bind(new.agent_id)
            .bind(&new.memory_type)
            .bind(new.content.trim())
            .bind(Json(&new.tags))
            .bind(new.importance)
            .bind(new.confidence)
            .bind(&new.source)
            .bind(new.source_ref.as_deref())
            .bind(&hash)
            .bind(now)
            .fetch_one(conn)
            .await?
        });
        Ok((row.into(), true))
    }

    /// Counts a retrieval of these records (utility signal for later ranking).
    pub async fn touch_memories(&mut self, ids: &[Uuid]) -> Result<()> {
        let now = ms(self.now());
        for id in ids {
            write!(self, |conn| {
                sqlx::query(
                    "UPDATE memory_record SET access_count = access_count + 1, last_accessed_at = $2 WHERE id = $1",
                )
                .bind(id)
                .bind(now)
                .execute(conn)
                .await?
                .rows_affected()
            });
        }
        Ok(())
    }
}
