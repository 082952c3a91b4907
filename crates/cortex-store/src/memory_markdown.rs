//! Rows of markdown-sourced memory records (SPEC §9.7): the files own them, so they are written by id
//! (UUIDv5 of file and heading, computed by `cortex-memory`) with upserts, and read back as id → content
//! hash for change detection. Every statement is scoped by `agent_id`.

use sqlx::types::Json;
use uuid::Uuid;

use crate::engine::{read, write};
use crate::memory::{StoredEmbedding, content_hash};
use crate::rows::ms;
use crate::{Result, Store, StoreError, Tx};

/// One chunk of a markdown file as a record.
#[derive(Debug, Clone)]
pub struct MarkdownChunk {
    pub agent_id: Uuid,
    pub id: Uuid,
    pub memory_type: String,
    pub content: String,
    /// `"<relative path>:<heading path>"`.
    pub source_ref: String,
    pub importance: i64,
    pub embedding: Option<StoredEmbedding>,
}

impl Store {
    /// The agent's live markdown records as (id, content hash).
    pub async fn markdown_memories(&self, agent_id: Uuid) -> Result<Vec<(Uuid, String)>> {
        let rows: Vec<(Uuid, String)> = read!(self, |conn| {
            sqlx::query_as(
                "SELECT id, content_hash FROM memory_record WHERE agent_id = $1 AND source = 'markdown' \
                 AND deleted_at IS NULL ORDER BY id",
            )
            .bind(agent_id)
            .fetch_all(conn)
            .await?
        });
        Ok(rows)
    }
}

impl Tx {
    /// Inserts the chunk's record, or brings an existing one (also a deleted or superseded one) back to the
    /// file's text. An id held by another agent's record is a conflict (the file cannot claim it).
    pub async fn upsert_markdown_memory(&mut self, chunk: &MarkdownChunk) -> Result<()> {
        let seq = self.memory_seq(chunk.agent_id).await?;
        let now = ms(self.now());
        let hash = content_hash(&chunk.content);
        let (model, bytes) = match &chunk.embedding {
            Some(embedding) => (Some(embedding.model.as_str()), Some(embedding.bytes.as_slice())),
            None => (None, None),
        };
        let written = write!(self, |conn| {
            sqlx::query(
                "INSERT INTO memory_record (id, agent_id, type, content, tags, people, projects, importance, confidence, \
                 source, source_ref, content_hash, reason, embedding, embedding_model, created_at, updated_at, \
                 change_seq) \
                 VALUES ($1, $2, $3, $4, $5, $5, $5, $6, 1.0, 'markdown', $7, $8, 'markdown file', $9, $10, $11, $11, \
                 $12) \
                 ON CONFLICT (id) DO UPDATE SET type = excluded.type, content = excluded.content, \
                 content_hash = excluded.content_hash, source_ref = excluded.source_ref, importance = excluded.importance, \
                 embedding = excluded.embedding, embedding_model = excluded.embedding_model, deleted_at = NULL, \
                 superseded_by = NULL, updated_at = excluded.updated_at, change_seq = excluded.change_seq \
                 WHERE memory_record.agent_id = excluded.agent_id",
            )
            .bind(chunk.id)
            .bind(chunk.agent_id)
            .bind(&chunk.memory_type)
            .bind(chunk.content.trim())
            .bind(Json(Vec::<String>::new()))
            .bind(chunk.importance)
            .bind(&chunk.source_ref)
            .bind(&hash)
            .bind(bytes)
            .bind(model)
            .bind(now)
            .bind(seq)
            .execute(conn)
            .await?
            .rows_affected()
        });
        if written == 0 {
            return Err(StoreError::Conflict { constraint: "memory.id".into() });
        }
        Ok(())
    }
}
