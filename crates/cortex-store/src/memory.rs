//! Agent memory records (SPEC §3.4, §9): rows, provenance, supersession, the keyword index (SQLite FTS5 /
//! PostgreSQL `to_tsvector`) and stored embeddings. Every read and write is scoped by `agent_id`: no
//! method here can return another agent's record. Ranking, embedding and the vector index are
//! `cortex-memory`'s; this module only narrows candidates and persists.
//!
//! Change sequence (migration 0036): every transaction that writes an agent's records first takes the
//! agent's next `memory_change.seq` ([`Tx`]'s `memory_seq`, one upsert whose row lock is held until commit,
//! so on PostgreSQL sequences follow commit order), stamps it on every record it writes
//! (`memory_record.change_seq`) and commits a [`Notification::Memory`] with it. A vector index that covers
//! sequence `s` catches up exactly with the rows of `change_seq > s` ([`Store::memory_vector_changes`]),
//! and knows from the notifications — without reading anything — when nothing changed.

use cortex_core::Timestamp;
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use uuid::Uuid;

use crate::engine::{read, write};
use crate::notify::Notification;
use crate::page::{Cursor, Page};
use crate::rows::{Millis, OptMillis, ms};
use crate::{Result, Store, StoreError, Tx};

/// A stored memory record (without its vector, which only the index reads).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct MemoryRecord {
    pub id: Uuid,
    pub agent_id: Uuid,
    /// `fact`, `preference`, `event`, `system_rule`, `lesson` or `relationship`.
    #[sqlx(rename = "type")]
    pub memory_type: String,
    pub content: String,
    #[sqlx(json)]
    pub tags: Vec<String>,
    #[sqlx(json)]
    pub people: Vec<String>,
    #[sqlx(json)]
    pub projects: Vec<String>,
    pub importance: i64,
    pub confidence: f64,
    /// `manual` (API), `extraction`, `tool` or `markdown`.
    pub source: String,
    /// File and heading for markdown records; free-form provenance otherwise.
    pub source_ref: Option<String>,
    pub session_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub message_seq: Option<i64>,
    pub content_hash: String,
    pub supersedes_id: Option<Uuid>,
    pub superseded_by: Option<Uuid>,
    pub reason: Option<String>,
    /// The model of the stored vector, `None` while the record has none.
    pub embedding_model: Option<String>,
    pub access_count: i64,
    #[sqlx(try_from = "OptMillis")]
    pub last_accessed_at: Option<Timestamp>,
    #[sqlx(try_from = "Millis")]
    pub created_at: Timestamp,
    #[sqlx(try_from = "Millis")]
    pub updated_at: Timestamp,
}

macro_rules! memory_columns {
    () => {
        "id, agent_id, type, content, tags, people, projects, importance, confidence, source, source_ref, session_id, \
         job_id, message_seq, content_hash, supersedes_id, superseded_by, reason, embedding_model, access_count, \
         last_accessed_at, created_at, updated_at"
    };
}

/// Keyword matches ranked per search at most: a query of common words can match most of an agent's records,
/// and ranking them all (bm25 / `ts_rank`) cost ~1 s at 100 000 records; the best of this many is enough for
/// the `3 × limit` candidates the fusion takes.
pub const KEYWORD_RANKED_MAX: usize = 2000;

/// Query words a keyword search uses at most (each is one arm of the SQLite statements).
pub const KEYWORD_WORDS_MAX: usize = 32;

/// Live records: not deleted and not replaced by a newer one.
const LIVE: &str = "deleted_at IS NULL AND superseded_by IS NULL";

/// A vector as stored: the model that made it and its bytes (format chosen by `cortex-memory`).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEmbedding {
    pub model: String,
    pub bytes: Vec<u8>,
}

/// A record changed after some change sequence, as the vector index sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorChange {
    pub id: Uuid,
    /// The change sequence of its latest write.
    pub seq: i64,
    /// Its stored vector when live and of the asked model; `None`: drop it from that model's index.
    pub vector: Option<Vec<u8>>,
}

/// A record changed after some change sequence, as the keyword index sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TextChange {
    pub id: Uuid,
    /// The change sequence of its latest write.
    pub seq: i64,
    /// Its content when live; `None`: drop it from the index.
    pub content: Option<String>,
}

/// A persisted vector index of one agent (bytes in `cortex-memory`'s format).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexSnapshot {
    pub model: String,
    /// The agent's change sequence it covers: every write up to it is included.
    pub through_seq: i64,
    pub data: Vec<u8>,
}

/// A record to store.
#[derive(Debug, Clone, Default)]
pub struct NewMemory {
    pub agent_id: Uuid,
    pub memory_type: String,
    pub content: String,
    pub tags: Vec<String>,
    pub people: Vec<String>,
    pub projects: Vec<String>,
    pub importance: i64,
    pub confidence: f64,
    /// Database name of the source (`manual`, `extraction`, `tool`, `markdown`).
    pub source: String,
    pub source_ref: Option<String>,
    pub session_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub message_seq: Option<i64>,
    /// The live record this one replaces; it is marked `superseded_by` in the same transaction.
    pub supersedes_id: Option<Uuid>,
    pub reason: Option<String>,
    pub embedding: Option<StoredEmbedding>,
}

/// Changes to a record; `None` fields stay as they are. A content change must come with the new
/// content's embedding (or `Some(None)` to drop the stale one).
#[derive(Debug, Clone, Default)]
pub struct MemoryUpdate {
    pub memory_type: Option<String>,
    pub content: Option<String>,
    pub tags: Option<Vec<String>>,
    pub importance: Option<i64>,
    pub confidence: Option<f64>,
    pub embedding: Option<Option<StoredEmbedding>>,
}

/// Filters of the record list.
#[derive(Debug, Clone, Default)]
pub struct MemoryFilter {
    pub memory_type: Option<String>,
    /// Database name of the source.
    pub source: Option<String>,
    pub tag: Option<String>,
    /// Also list records replaced by newer ones (history).
    pub include_superseded: bool,
}

/// SHA-256 hex of the content with surrounding whitespace removed: equal texts are one memory.
pub fn content_hash(content: &str) -> String {
    hex::encode(Sha256::digest(content.trim().as_bytes()))
}

fn not_found() -> StoreError {
    StoreError::NotFound { entity: "memory" }
}

impl Store {
    /// The agent condition of a lookup by a list of ids. SQLite without statistics would pick an agent
    /// index over the primary key and scan all the agent's rows (tens of ms at 10 000 records); the unary
    /// `+` keeps the condition but not the index.
    fn agent_among_ids(&self) -> &'static str {
        if self.is_postgres() { " AND agent_id = " } else { " AND +agent_id = " }
    }

    /// One record of the agent (superseded ones included, deleted ones not).
    pub async fn get_memory(&self, agent_id: Uuid, id: Uuid) -> Result<MemoryRecord> {
        let row: Option<MemoryRecord> = read!(self, |conn| {
            sqlx::query_as(concat!(
                "SELECT ",
                memory_columns!(),
                " FROM memory_record WHERE agent_id = $1 AND id = $2 AND deleted_at IS NULL"
            ))
            .bind(agent_id)
            .bind(id)
            .fetch_optional(conn)
            .await?
        });
        row.ok_or_else(not_found)
    }

    /// The agent's records, newest first.
    pub async fn list_memories(
        &self,
        agent_id: Uuid,
        filter: &MemoryFilter,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<Page<MemoryRecord>> {
        let tag_clause = if self.is_postgres() {
            " AND tags ? "
        } else {
            " AND EXISTS (SELECT 1 FROM json_each(memory_record.tags) WHERE json_each.value = "
        };
        let tag_close = if self.is_postgres() { "" } else { ")" };
        let rows: Vec<MemoryRecord> = read!(self, |conn| {
            let mut query = sqlx::QueryBuilder::new(concat!(
                "SELECT ",
                memory_columns!(),
                " FROM memory_record WHERE deleted_at IS NULL AND agent_id = "
            ));
            query.push_bind(agent_id);
            if !filter.include_superseded {
                query.push(" AND superseded_by IS NULL");
            }
            if let Some(memory_type) = &filter.memory_type {
                query.push(" AND type = ").push_bind(memory_type.clone());
            }
            if let Some(source) = &filter.source {
                query.push(" AND source = ").push_bind(source.clone());
            }
            if let Some(tag) = &filter.tag {
                query.push(tag_clause).push_bind(tag.clone()).push(tag_close);
            }
            if let Some(Cursor(after)) = cursor {
                query.push(" AND id < ").push_bind(after);
            }
            query.push(" ORDER BY id DESC LIMIT ").push_bind(limit as i64 + 1);
            query.build_query_as().fetch_all(conn).await?
        });
        Ok(Page::from_overfetch(rows, limit, |row| row.id))
    }

    /// Live records of the agent among `ids` (in no particular order).
    pub async fn live_memories(&self, agent_id: Uuid, ids: &[Uuid]) -> Result<Vec<MemoryRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<MemoryRecord> = read!(self, |conn| {
            let mut query =
                sqlx::QueryBuilder::new(concat!("SELECT ", memory_columns!(), " FROM memory_record WHERE "));
            query.push(LIVE).push(self.agent_among_ids()).push_bind(agent_id).push(" AND id IN (");
            let mut separated = query.separated(", ");
            for id in ids {
                separated.push_bind(*id);
            }
            query.push(")");
            query.build_query_as().fetch_all(conn).await?
        });
        Ok(rows)
    }

    /// Up to `limit` live records of the agent matching any of `words`, best keyword rank first, with that
    /// rank (> 0, larger is better; only comparable within one call): the database's full-text index, used
    /// with the external vector backends (the embedded one keeps its own keyword index in process). Words
    /// are matched after stemming; only the first [`KEYWORD_WORDS_MAX`] are used. Only
    /// [`KEYWORD_RANKED_MAX`] matches are ranked: when more match, the newest of them (SQLite; on
    /// PostgreSQL the first the index yields), so a broad query costs a bounded time. The rank: SQLite
    /// FTS5's `bm25`, PostgreSQL `ts_rank`.
    pub async fn memory_keyword_hits(
        &self,
        agent_id: Uuid,
        words: &[String],
        limit: usize,
    ) -> Result<Vec<(Uuid, f64)>> {
        let words: Vec<String> = words
            .iter()
            .map(|word| word.chars().filter(|c| c.is_alphanumeric()).collect::<String>().to_lowercase())
            .filter(|word| !word.is_empty())
            .take(KEYWORD_WORDS_MAX)
            .collect();
        if words.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        // SQLite: the index holds live records only, with the agent as a column (migration 0030); FTS5 walks
        // the matches newest first and computes bm25 only for the rows it returns (the inner `LIMIT`), the
        // best `limit` of those are kept, and only they are joined (the join re-checks the agent).
        // PostgreSQL: the GIN index's first matches, ranked by `ts_rank`.
        let (sql, query) = if self.is_postgres() {
            (
                "SELECT m.id, ts_rank(to_tsvector('english', m.content), q)::float8 AS rank \
                 FROM (SELECT id, content FROM memory_record \
                 WHERE to_tsvector('english', content) @@ to_tsquery('english', $1) AND agent_id = $2 \
                 AND deleted_at IS NULL AND superseded_by IS NULL LIMIT $4) m, to_tsquery('english', $1) q \
                 ORDER BY rank DESC, m.id DESC LIMIT $3",
                words.join(" | "),
            )
        } else {
            let words = words.iter().map(|word| format!("\"{word}\"")).collect::<Vec<_>>().join(" OR ");
            (
                "SELECT m.id, -f.rank AS rank FROM (SELECT rowid, rank FROM (SELECT rowid, rank \
                 FROM memory_record_fts WHERE memory_record_fts MATCH $1 ORDER BY rowid DESC LIMIT $4) \
                 ORDER BY rank LIMIT $3) f \
                 CROSS JOIN memory_record m ON m.rowid = f.rowid \
                 WHERE m.agent_id = $2 AND m.deleted_at IS NULL AND m.superseded_by IS NULL \
                 ORDER BY f.rank, m.id DESC",
                format!("agent : \"{}0\" AND content : ({words})", agent_id.simple()),
            )
        };
        let hits: Vec<(Uuid, f64)> = read!(self, |conn| {
            sqlx::query_as(sql)
                .bind(&query)
                .bind(agent_id)
                .bind(limit as i64)
                .bind(KEYWORD_RANKED_MAX.max(limit) as i64)
                .fetch_all(conn)
                .await?
        });
        // A rank of 0 (PostgreSQL for very short documents) still means "matched": keep it positive.
        Ok(hits.into_iter().map(|(id, rank)| (id, rank.max(f64::MIN_POSITIVE))).collect())
    }

    /// The agent's records whose latest write has a change sequence above `after_seq`, each with its
    /// vector when it is live and has one of `model` (else `None`: not, or no longer, in a `model` index).
    /// After `-1` this is every record: a full build.
    pub async fn memory_vector_changes(
        &self,
        agent_id: Uuid,
        model: &str,
        after_seq: i64,
    ) -> Result<Vec<VectorChange>> {
        let rows: Vec<(Uuid, i64, Option<Vec<u8>>)> = read!(self, |conn| {
            sqlx::query_as(
                "SELECT id, change_seq, CASE WHEN deleted_at IS NULL AND superseded_by IS NULL \
                 AND embedding_model = $3 THEN embedding END FROM memory_record \
                 WHERE agent_id = $1 AND change_seq > $2",
            )
            .bind(agent_id)
            .bind(after_seq)
            .bind(model)
            .fetch_all(conn)
            .await?
        });
        Ok(rows.into_iter().map(|(id, seq, vector)| VectorChange { id, seq, vector }).collect())
    }

    /// The agent's records whose latest write has a change sequence above `after_seq`, in sequence order,
    /// each with its content when it is live (else `None`: not, or no longer, searchable): what an
    /// in-process keyword index catches up with. After `-1` this is every record: a full build.
    pub async fn memory_text_changes(&self, agent_id: Uuid, after_seq: i64) -> Result<Vec<TextChange>> {
        let rows: Vec<(Uuid, i64, Option<String>)> = read!(self, |conn| {
            sqlx::query_as(
                "SELECT id, change_seq, CASE WHEN deleted_at IS NULL AND superseded_by IS NULL THEN content END \
                 FROM memory_record WHERE agent_id = $1 AND change_seq > $2 ORDER BY change_seq",
            )
            .bind(agent_id)
            .bind(after_seq)
            .fetch_all(conn)
            .await?
        });
        Ok(rows.into_iter().map(|(id, seq, content)| TextChange { id, seq, content }).collect())
    }

    /// The stored vectors of `model` of the agent's live records among `ids` (exact re-ranking).
    pub async fn memory_vectors_of(&self, agent_id: Uuid, model: &str, ids: &[Uuid]) -> Result<Vec<(Uuid, Vec<u8>)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(Uuid, Vec<u8>)> = read!(self, |conn| {
            let mut query = sqlx::QueryBuilder::new("SELECT id, embedding FROM memory_record WHERE ");
            query.push(LIVE).push(" AND embedding IS NOT NULL").push(self.agent_among_ids()).push_bind(agent_id);
            query.push(" AND embedding_model = ").push_bind(model.to_owned()).push(" AND id IN (");
            let mut separated = query.separated(", ");
            for id in ids {
                separated.push_bind(*id);
            }
            query.push(")");
            query.build_query_as().fetch_all(conn).await?
        });
        Ok(rows)
    }

    /// The agent's persisted vector index, if one was saved.
    pub async fn memory_index_snapshot(&self, agent_id: Uuid) -> Result<Option<IndexSnapshot>> {
        let row: Option<(String, i64, Vec<u8>)> = read!(self, |conn| {
            sqlx::query_as("SELECT model, through_seq, data FROM memory_vector_index WHERE agent_id = $1")
                .bind(agent_id)
                .fetch_optional(conn)
                .await?
        });
        Ok(row.map(|(model, through_seq, data)| IndexSnapshot { model, through_seq, data }))
    }

    /// The agent's latest committed memory change sequence (0 before its first write): a cached index
    /// whose covered sequence equals it is current — also with writes of other processes. One primary-key
    /// row.
    pub async fn memory_change_seq(&self, agent_id: Uuid) -> Result<i64> {
        let seq: Option<i64> = read!(self, |conn| {
            sqlx::query_scalar("SELECT seq FROM memory_change WHERE agent_id = $1")
                .bind(agent_id)
                .fetch_optional(conn)
                .await?
        });
        Ok(seq.unwrap_or(0))
    }

    /// Live records of any agent whose vector is missing or made by another model than `model`, oldest
    /// first: the backfill's work list.
    pub async fn memories_to_embed(&self, model: &str, limit: usize) -> Result<Vec<MemoryRecord>> {
        let rows: Vec<MemoryRecord> = read!(self, |conn| {
            sqlx::query_as(concat!(
                "SELECT ",
                memory_columns!(),
                " FROM memory_record WHERE deleted_at IS NULL AND superseded_by IS NULL \
                 AND (embedding_model IS NULL OR embedding_model <> $1) ORDER BY id LIMIT $2"
            ))
            .bind(model)
            .bind(limit as i64)
            .fetch_all(conn)
            .await?
        });
        Ok(rows)
    }
}

impl Tx {
    /// The agent's change sequence of this transaction: the next one, taken at its first memory write
    /// (which locks the agent's `memory_change` row until commit), the same for every later write; the
    /// commit notifies it.
    pub(crate) async fn memory_seq(&mut self, agent_id: Uuid) -> Result<i64> {
        if let Some((_, seq)) = self.memory_seqs.iter().find(|(agent, _)| *agent == agent_id) {
            return Ok(*seq);
        }
        let seq: i64 = write!(self, |conn| {
            sqlx::query_scalar(
                "INSERT INTO memory_change (agent_id, seq) VALUES ($1, 1) \
                 ON CONFLICT (agent_id) DO UPDATE SET seq = memory_change.seq + 1 RETURNING seq",
            )
            .bind(agent_id)
            .fetch_one(conn)
            .await?
        });
        self.memory_seqs.push((agent_id, seq));
        self.notify(Notification::Memory { agent_id, seq });
        Ok(seq)
    }

    async fn live_memory_by_hash(&mut self, agent_id: Uuid, hash: &str) -> Result<Option<MemoryRecord>> {
        Ok(write!(self, |conn| {
            sqlx::query_as(concat!(
                "SELECT ",
                memory_columns!(),
                " FROM memory_record WHERE agent_id = $1 AND content_hash = $2 AND deleted_at IS NULL \
                 AND superseded_by IS NULL"
            ))
            .bind(agent_id)
            .bind(hash)
            .fetch_optional(conn)
            .await?
        }))
    }

    async fn memory_for_update(&mut self, agent_id: Uuid, id: Uuid) -> Result<MemoryRecord> {
        let row: Option<MemoryRecord> = write!(self, |conn| {
            sqlx::query_as(concat!(
                "SELECT ",
                memory_columns!(),
                " FROM memory_record WHERE agent_id = $1 AND id = $2 AND deleted_at IS NULL"
            ))
            .bind(agent_id)
            .bind(id)
            .fetch_optional(conn)
            .await?
        });
        row.ok_or_else(not_found)
    }

    /// Stores a record unless the agent already has a live one with the same content; returns the record and
    /// whether it was created now. With `supersedes_id`, that record (which must be the agent's and live)
    /// is marked replaced in the same transaction; a markdown record cannot be replaced (its file wins):
    /// naming one is `NotFound`.
    pub async fn insert_memory(&mut self, new: &NewMemory) -> Result<(MemoryRecord, bool)> {
        let hash = content_hash(&new.content);
        if let Some(row) = self.live_memory_by_hash(new.agent_id, &hash).await? {
            return Ok((row, false));
        }
        let seq = self.memory_seq(new.agent_id).await?;
        let id = cortex_core::new_id();
        let now = ms(self.now());
        if let Some(old) = new.supersedes_id {
            let replaced = write!(self, |conn| {
                sqlx::query(
                    "UPDATE memory_record SET superseded_by = $3, updated_at = $4, change_seq = $5 WHERE agent_id = $1 \
                     AND id = $2 AND deleted_at IS NULL AND superseded_by IS NULL AND source <> 'markdown'",
                )
                .bind(new.agent_id)
                .bind(old)
                .bind(id)
                .bind(now)
                .bind(seq)
                .execute(conn)
                .await?
                .rows_affected()
            });
            if replaced == 0 {
                return Err(not_found());
            }
        }
        let (model, bytes) = match &new.embedding {
            Some(embedding) => (Some(embedding.model.as_str()), Some(embedding.bytes.as_slice())),
            None => (None, None),
        };
        let row: MemoryRecord = write!(self, |conn| {
            sqlx::query_as(concat!(
                "INSERT INTO memory_record (id, agent_id, type, content, tags, people, projects, importance, confidence, \
                 source, source_ref, session_id, job_id, message_seq, content_hash, supersedes_id, reason, embedding, \
                 embedding_model, created_at, updated_at, change_seq) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $20, \
                 $21) \
                 RETURNING ",
                memory_columns!()
            ))
            .bind(id)
            .bind(new.agent_id)
            .bind(&new.memory_type)
            .bind(new.content.trim())
            .bind(Json(&new.tags))
            .bind(Json(&new.people))
            .bind(Json(&new.projects))
            .bind(new.importance)
            .bind(new.confidence)
            .bind(&new.source)
            .bind(new.source_ref.as_deref())
            .bind(new.session_id)
            .bind(new.job_id)
            .bind(new.message_seq)
            .bind(&hash)
            .bind(new.supersedes_id)
            .bind(new.reason.as_deref())
            .bind(bytes)
            .bind(model)
            .bind(now)
            .bind(seq)
            .fetch_one(conn)
            .await?
        });
        Ok((row, true))
    }

    /// Stores many new records in multi-row statements (imports, and `cortex bench memory`'s bulk load,
    /// where one transaction per record is the slow part): no duplicate check and no supersession — the
    /// caller vouches that the contents are new and distinct. Returns how many were stored.
    pub async fn insert_memories(&mut self, news: &[NewMemory]) -> Result<usize> {
        /// Rows per statement (21 parameters each: under SQLite's 32 766 and PostgreSQL's 65 535).
        const ROWS: usize = 1000;
        let now = ms(self.now());
        let mut seqs = Vec::with_capacity(news.len());
        for new in news {
            seqs.push(self.memory_seq(new.agent_id).await?);
        }
        for (chunk, seqs) in news.chunks(ROWS).zip(seqs.chunks(ROWS)) {
            write!(self, |conn| {
                let mut query = sqlx::QueryBuilder::new(
                    "INSERT INTO memory_record (id, agent_id, type, content, tags, people, projects, importance, \
                     confidence, source, source_ref, session_id, job_id, message_seq, content_hash, reason, embedding, \
                     embedding_model, created_at, updated_at, change_seq) ",
                );
                query.push_values(chunk.iter().zip(seqs), |mut row, (new, seq)| {
                    let (model, bytes) = match &new.embedding {
                        Some(embedding) => (Some(embedding.model.clone()), Some(embedding.bytes.clone())),
                        None => (None, None),
                    };
                    row.push_bind(cortex_core::new_id())
                        .push_bind(new.agent_id)
                        .push_bind(new.memory_type.clone())
                        .push_bind(new.content.trim().to_owned())
                        .push_bind(Json(new.tags.clone()))
                        .push_bind(Json(new.people.clone()))
                        .push_bind(Json(new.projects.clone()))
                        .push_bind(new.importance)
                        .push_bind(new.confidence)
                        .push_bind(new.source.clone())
                        .push_bind(new.source_ref.clone())
                        .push_bind(new.session_id)
                        .push_bind(new.job_id)
                        .push_bind(new.message_seq)
                        .push_bind(content_hash(&new.content))
                        .push_bind(new.reason.clone())
                        .push_bind(bytes)
                        .push_bind(model)
                        .push_bind(now)
                        .push_bind(now)
                        .push_bind(*seq);
                });
                query.build().execute(conn).await?.rows_affected()
            });
        }
        Ok(news.len())
    }

    /// Applies `update` to a record of the agent and returns it. A new content that equals another live
    /// record of the agent is a conflict (`memory.content`).
    pub async fn update_memory(&mut self, agent_id: Uuid, id: Uuid, update: &MemoryUpdate) -> Result<MemoryRecord> {
        let current = self.memory_for_update(agent_id, id).await?;
        let content = update.content.as_deref().map(str::trim).unwrap_or(&current.content).to_owned();
        let hash = content_hash(&content);
        if hash != current.content_hash
            && let Some(other) = self.live_memory_by_hash(agent_id, &hash).await?
            && other.id != id
        {
            return Err(StoreError::Conflict { constraint: "memory.content".into() });
        }
        let memory_type = update.memory_type.clone().unwrap_or(current.memory_type);
        let tags = update.tags.clone().unwrap_or(current.tags);
        let importance = update.importance.unwrap_or(current.importance);
        let confidence = update.confidence.unwrap_or(current.confidence);
        let seq = self.memory_seq(agent_id).await?;
        let now = ms(self.now());
        let row: MemoryRecord = match &update.embedding {
            None => write!(self, |conn| {
                sqlx::query_as(concat!(
                    "UPDATE memory_record SET type = $3, content = $4, content_hash = $5, tags = $6, importance = $7, \
                     confidence = $8, updated_at = $9, change_seq = $10 WHERE agent_id = $1 AND id = $2 RETURNING ",
                    memory_columns!()
                ))
                .bind(agent_id)
                .bind(id)
                .bind(&memory_type)
                .bind(&content)
                .bind(&hash)
                .bind(Json(&tags))
                .bind(importance)
                .bind(confidence)
                .bind(now)
                .bind(seq)
                .fetch_one(conn)
                .await?
            }),
            Some(embedding) => {
                let (model, bytes) = match embedding {
                    Some(embedding) => (Some(embedding.model.as_str()), Some(embedding.bytes.as_slice())),
                    None => (None, None),
                };
                write!(self, |conn| {
                    sqlx::query_as(concat!(
                        "UPDATE memory_record SET type = $3, content = $4, content_hash = $5, tags = $6, importance = $7, \
                         confidence = $8, updated_at = $9, embedding = $10, embedding_model = $11, change_seq = $12 \
                         WHERE agent_id = $1 AND id = $2 RETURNING ",
                        memory_columns!()
                    ))
                    .bind(agent_id)
                    .bind(id)
                    .bind(&memory_type)
                    .bind(&content)
                    .bind(&hash)
                    .bind(Json(&tags))
                    .bind(importance)
                    .bind(confidence)
                    .bind(now)
                    .bind(bytes)
                    .bind(model)
                    .bind(seq)
                    .fetch_one(conn)
                    .await?
                })
            }
        };
        Ok(row)
    }

    /// Stores the vector of a record whose content is still `content_hash` (a backfill racing an edit
    /// loses); returns whether it was stored.
    pub async fn set_memory_embedding(
        &mut self,
        agent_id: Uuid,
        id: Uuid,
        content_hash: &str,
        embedding: &StoredEmbedding,
    ) -> Result<bool> {
        let seq = self.memory_seq(agent_id).await?;
        let now = ms(self.now());
        let updated = write!(self, |conn| {
            sqlx::query(
                "UPDATE memory_record SET embedding = $4, embedding_model = $5, updated_at = $6, change_seq = $7 \
                 WHERE agent_id = $1 AND id = $2 AND content_hash = $3 AND deleted_at IS NULL",
            )
            .bind(agent_id)
            .bind(id)
            .bind(content_hash)
            .bind(embedding.bytes.as_slice())
            .bind(&embedding.model)
            .bind(now)
            .bind(seq)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(updated > 0)
    }

    /// Deletes a record of the agent (soft: the row stays for provenance, out of every search and list).
    pub async fn delete_memory(&mut self, agent_id: Uuid, id: Uuid) -> Result<()> {
        let seq = self.memory_seq(agent_id).await?;
        let now = ms(self.now());
        let deleted = write!(self, |conn| {
            sqlx::query(
                "UPDATE memory_record SET deleted_at = $3, updated_at = $3, change_seq = $4 WHERE agent_id = $1 \
                 AND id = $2 AND deleted_at IS NULL",
            )
            .bind(agent_id)
            .bind(id)
            .bind(now)
            .bind(seq)
            .execute(conn)
            .await?
            .rows_affected()
        });
        if deleted == 0 {
            return Err(not_found());
        }
        Ok(())
    }

    /// Replaces the agent's persisted vector index (not a record change: the change sequence stays).
    pub async fn save_memory_index(&mut self, agent_id: Uuid, snapshot: &IndexSnapshot) -> Result<()> {
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO memory_vector_index (agent_id, model, through_seq, data, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (agent_id) DO UPDATE SET model = excluded.model, \
                 through_seq = excluded.through_seq, data = excluded.data, updated_at = excluded.updated_at",
            )
            .bind(agent_id)
            .bind(&snapshot.model)
            .bind(snapshot.through_seq)
            .bind(snapshot.data.as_slice())
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Counts a retrieval of these records of the agent (the utility signal of ranking).
    pub async fn touch_memories(&mut self, agent_id: Uuid, ids: &[Uuid]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = ms(self.now());
        write!(self, |conn| {
            let mut query = sqlx::QueryBuilder::new(
                "UPDATE memory_record SET access_count = access_count + 1, last_accessed_at = ",
            );
            query.push_bind(now).push(" WHERE agent_id = ").push_bind(agent_id).push(" AND id IN (");
            let mut separated = query.separated(", ");
            for id in ids {
                separated.push_bind(*id);
            }
            query.push(")");
            query.build().execute(conn).await?.rows_affected()
        });
        Ok(())
    }
}
