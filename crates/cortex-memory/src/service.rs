//! [`Memory`]: validated writes (embedded on the way in), hybrid search and recall statistics.
//!
//! Search (SPEC §9.6): the top `3 × limit` records by keyword rank and the top `3 × limit` by vector
//! similarity are fused by reciprocal rank fusion; the best `3 × limit` of the fusion are scored
//! `0.5 × similarity + 0.3 × recency + 0.2 × utility` and the top `limit` returned. A record outside the
//! vector list counts cosine 0; keyword ranks are normalised by the best rank of the query. Without an
//! embedder, or when it or the index fails, the search is keyword only and says so.

use std::collections::HashMap;
use std::sync::Arc;

use cortex_core::memory::{MemorySource, MemoryType};
use cortex_store::Store;
use cortex_store::memory::{MemoryRecord, MemoryUpdate, NewMemory, StoredEmbedding};
use serde::Serialize;
use uuid::Uuid;

use crate::embed::{Embedder, to_bytes};
use crate::error::MemoryError;
use crate::index::{Indexes, KeywordIndex, VectorIndex};
use crate::scoring;

const MAX_CONTENT: usize = 8000;
const MIN_CONTENT: usize = 10;
const MAX_LIST: usize = 10;
/// Time between two backfill passes.
pub const BACKFILL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// Records embedded per backfill request.
const BACKFILL_BATCH: usize = 64;
/// Query words sent to the keyword index.
const MAX_QUERY_WORDS: usize = 16;

/// A record to remember.
#[derive(Debug, Clone)]
pub struct Remember {
    pub agent_id: Uuid,
    pub memory_type: MemoryType,
    pub content: String,
    pub tags: Vec<String>,
    pub people: Vec<String>,
    pub projects: Vec<String>,
    /// 1–5.
    pub importance: i64,
    /// 0–1.
    pub confidence: f64,
    pub source: MemorySource,
    pub source_ref: Option<String>,
    pub session_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub message_seq: Option<i64>,
    pub supersedes_id: Option<Uuid>,
    pub reason: Option<String>,
}

impl Remember {
    /// A record with the defaults of SPEC §2.4 (fact, importance 3, confidence 1).
    pub fn new(agent_id: Uuid, content: impl Into<String>, source: MemorySource) -> Self {
        Self {
            agent_id,
            memory_type: MemoryType::Fact,
            content: content.into(),
            tags: Vec::new(),
            people: Vec::new(),
            projects: Vec::new(),
            importance: 3,
            confidence: 1.0,
            source,
            source_ref: None,
            session_id: None,
            job_id: None,
            message_seq: None,
            supersedes_id: None,
            reason: None,
        }
    }
}

/// Changes to a record (`None` keeps the value).
#[derive(Debug, Clone, Default)]
pub struct MemoryPatch {
    pub memory_type: Option<MemoryType>,
    pub content: Option<String>,
    pub tags: Option<Vec<String>>,
    pub importance: Option<i64>,
    pub confidence: Option<f64>,
}

/// A search request.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub text: String,
    pub limit: usize,
    /// Only these types (empty: all).
    pub types: Vec<MemoryType>,
    /// Only records carrying one of these tags (empty: all).
    pub tags: Vec<String>,
}

/// How a search was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Keyword and vector candidates.
    Hybrid,
    /// Keyword candidates only (no embedder configured, or it or the index failed: see `degraded`).
    Keyword,
}

/// The parts of a score (SPEC §9.6).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScoreParts {
    pub similarity: f64,
    pub recency: f64,
    pub utility: f64,
}

/// A record with its score.
#[derive(Debug, Clone)]
pub struct ScoredMemory {
    pub record: MemoryRecord,
    pub score: f64,
    pub parts: ScoreParts,
}

/// Search results, best first.
#[derive(Debug, Clone)]
pub struct SearchResults {
    pub items: Vec<ScoredMemory>,
    pub mode: SearchMode,
    /// True when vectors were configured but could not be used for this search.
    pub degraded: bool,
}

/// The memory subsystem of one process.
pub struct Memory {
    store: Store,
    embedder: Option<Arc<dyn Embedder>>,
    index: Arc<dyn VectorIndex>,
    /// The embedded backend's in-process keyword index; `None`: the store's full-text index.
    keywords: Option<Arc<KeywordIndex>>,
    /// Where `agents/<slug>/memory/*.md` live; `None`: no markdown sync.
    data_dir: Option<std::path::PathBuf>,
    /// Serialises this process's markdown syncs.
    sync_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("embedder", &self.embedder.as_ref().map(|embedder| embedder.model().to_owned()))
            .field("index", &self.index.name())
            .finish()
    }
}

fn check_list(field: &'static str, values: &[String]) -> Result<Vec<String>, MemoryError> {
    if values.len() > MAX_LIST {
        return Err(MemoryError::invalid(field, format!("at most {MAX_LIST} entries")));
    }
    let cleaned: Vec<String> = values.iter().map(|value| value.trim().to_owned()).collect();
    if cleaned.iter().any(|value| value.is_empty() || value.chars().count() > 100) {
        return Err(MemoryError::invalid(field, "entries must be 1–100 characters"));
    }
    Ok(cleaned)
}

fn check_content(content: &str) -> Result<String, MemoryError> {
    let content = content.trim();
    let chars = content.chars().count();
    if !(MIN_CONTENT..=MAX_CONTENT).contains(&chars) {
        return Err(MemoryError::invalid(
            "content",
            format!("must be {MIN_CONTENT}–{MAX_CONTENT} characters, got {chars}"),
        ));
    }
    Ok(content.to_owned())
}

fn check_importance(importance: i64) -> Result<i64, MemoryError> {
    if !(1..=5).contains(&importance) {
        return Err(MemoryError::invalid("importance", "must be 1–5"));
    }
    Ok(importance)
}

fn check_confidence(confidence: f64) -> Result<f64, MemoryError> {
    if !(0.0..=1.0).contains(&confidence) {
        return Err(MemoryError::invalid("confidence", "must be between 0 and 1"));
    }
    Ok(confidence)
}

/// The words of a query the keyword index is asked for (letters and digits, lowercase, deduplicated).
fn query_words(text: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|word| !word.is_empty()) {
        let word = word.to_lowercase();
        if !words.contains(&word) {
            words.push(word);
        }
        if words.len() == MAX_QUERY_WORDS {
            break;
        }
    }
    words
}

impl Memory {
    /// `embedder: None` means keyword-only search (`CORTEX_EMBEDDINGS=none`).
    pub fn new(store: Store, embedder: Option<Arc<dyn Embedder>>, indexes: Indexes) -> Self {
        Self {
            store,
            embedder,
            index: indexes.vectors,
            keywords: indexes.keywords,
            data_dir: None,
            sync_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Enables markdown sync over `<data_dir>/agents/<slug>/memory/*.md` (SPEC §9.7).
    pub fn with_data_dir(mut self, data_dir: std::path::PathBuf) -> Self {
        self.data_dir = Some(data_dir);
        self
    }

    /// The data dir markdown files live under, when markdown sync is on.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.data_dir.as_deref()
    }

    pub(crate) fn sync_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.sync_lock
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Vectors for `texts` in one batch; all `None` without an embedder or when it fails (the backfill
    /// embeds them later).
    pub(crate) async fn embeddings_for(&self, texts: &[String]) -> Vec<Option<StoredEmbedding>> {
        let Some(embedder) = self.embedder.as_ref().filter(|_| !texts.is_empty()) else {
            return vec![None; texts.len()];
        };
        match embedder.embed(texts).await {
            Ok(vectors) if vectors.len() == texts.len() => vectors
                .iter()
                .map(|vector| Some(StoredEmbedding { model: embedder.model().to_owned(), bytes: to_bytes(vector) }))
                .collect(),
            Ok(_) => vec![None; texts.len()],
            Err(err) => {
                tracing::warn!(error = %err, "markdown records stored without vectors; the backfill will embed them");
                vec![None; texts.len()]
            }
        }
    }

    /// The embedding model in use, if any.
    pub fn embedding_model(&self) -> Option<&str> {
        self.embedder.as_ref().map(|embedder| embedder.model())
    }

    /// Embeds one text for storage; a failing embedder leaves the record without a vector (the backfill
    /// adds it later) rather than failing the write.
    async fn embedding_for(&self, content: &str) -> Option<StoredEmbedding> {
        let embedder = self.embedder.as_ref()?;
        match embedder.embed(&[content.to_owned()]).await {
            Ok(mut vectors) => vectors
                .pop()
                .map(|vector| StoredEmbedding { model: embedder.model().to_owned(), bytes: to_bytes(&vector) }),
            Err(err) => {
                tracing::warn!(error = %err, "memory stored without a vector; the backfill will embed it");
                None
            }
        }
    }

    pub(crate) async fn index_changed(&self, agent_id: Uuid) {
        if let Err(err) = self.index.changed(agent_id).await {
            tracing::warn!(error = %err, index = self.index.name(), "vector index not updated");
        }
    }

    /// Stores a record unless the agent has a live one with the same content. Returns the record and
    /// whether it is new.
    pub async fn remember(&self, new: Remember) -> Result<(MemoryRecord, bool), MemoryError> {
        let content = check_content(&new.content)?;
        if matches!(new.source, MemorySource::Tool | MemorySource::Extraction)
            && let Some(pattern) = crate::injection::injection_pattern(&content)
        {
            return Err(MemoryError::Injection(pattern));
        }
        let row = NewMemory {
            agent_id: new.agent_id,
            memory_type: new.memory_type.as_str().to_owned(),
            tags: check_list("tags", &new.tags)?,
            people: check_list("people", &new.people)?,
            projects: check_list("projects", &new.projects)?,
            importance: check_importance(new.importance)?,
            confidence: check_confidence(new.confidence)?,
            source: new.source.db_name().to_owned(),
            source_ref: new.source_ref,
            session_id: new.session_id,
            job_id: new.job_id,
            message_seq: new.message_seq,
            supersedes_id: new.supersedes_id,
            reason: new.reason,
            embedding: self.embedding_for(&content).await,
            content,
        };
        let mut tx = self.store.begin().await?;
        let (record, created) = tx.insert_memory(&row).await?;
        tx.commit().await?;
        if created {
            self.index_changed(new.agent_id).await;
        }
        Ok((record, created))
    }

    /// One record of the agent.
    pub async fn get(&self, agent_id: Uuid, id: Uuid) -> Result<MemoryRecord, MemoryError> {
        Ok(self.store.get_memory(agent_id, id).await?)
    }

    /// Edits a record (not one from a markdown file: those are edited in the file).
    pub async fn update(&self, agent_id: Uuid, id: Uuid, patch: MemoryPatch) -> Result<MemoryRecord, MemoryError> {
        let current = self.store.get_memory(agent_id, id).await?;
        if current.source == MemorySource::Markdown.db_name() {
            return Err(MemoryError::ReadOnlySource(id));
        }
        let content = patch.content.as_deref().map(check_content).transpose()?;
        let embedding = match &content {
            Some(content) if *content != current.content => Some(self.embedding_for(content).await),
            _ => None,
        };
        let update = MemoryUpdate {
            memory_type: patch.memory_type.map(|memory_type| memory_type.as_str().to_owned()),
            content,
            tags: patch.tags.as_deref().map(|tags| check_list("tags", tags)).transpose()?,
            importance: patch.importance.map(check_importance).transpose()?,
            confidence: patch.confidence.map(check_confidence).transpose()?,
            embedding,
        };
        let mut tx = self.store.begin().await?;
        let record = tx.update_memory(agent_id, id, &update).await?;
        tx.commit().await?;
        self.index_changed(agent_id).await;
        Ok(record)
    }

    /// Deletes a record (not one from a markdown file).
    pub async fn delete(&self, agent_id: Uuid, id: Uuid) -> Result<(), MemoryError> {
        let current = self.store.get_memory(agent_id, id).await?;
        if current.source == MemorySource::Markdown.db_name() {
            return Err(MemoryError::ReadOnlySource(id));
        }
        let mut tx = self.store.begin().await?;
        tx.delete_memory(agent_id, id).await?;
        tx.commit().await?;
        self.index_changed(agent_id).await;
        Ok(())
    }

    /// Hybrid search over the agent's live records.
    pub async fn search(&self, agent_id: Uuid, query: &SearchQuery) -> Result<SearchResults, MemoryError> {
        let limit = query.limit.max(1);
        let pool = 3 * limit;
        let words = query_words(&query.text);
        // The two candidate lists are independent: fetched concurrently. The vector side first: its exact
        // re-rank reads stored vectors (a statement on the store's reader thread) while the in-process
        // keyword index computes on this one.
        let ((vector, degraded), keyword) =
            tokio::join!(self.vector_hits(agent_id, &query.text, pool), self.keyword_hits(agent_id, &words, pool));
        let keyword = keyword?;
        let mode = if vector.is_some() { SearchMode::Hybrid } else { SearchMode::Keyword };
        let vector = vector.unwrap_or_default();

        let keyword_ids: Vec<Uuid> = keyword.iter().map(|(id, _)| *id).collect();
        let vector_ids: Vec<Uuid> = vector.iter().map(|(id, _)| *id).collect();
        let fused = scoring::reciprocal_rank_fusion(&[&keyword_ids, &vector_ids]);
        let candidates: Vec<Uuid> = fused.into_iter().take(pool).map(|(id, _)| id).collect();

        let best_rank = keyword.iter().map(|(_, rank)| *rank).fold(0.0_f64, f64::max);
        let keyword_score: HashMap<Uuid, f64> =
            keyword.iter().map(|(id, rank)| (*id, if best_rank > 0.0 { rank / best_rank } else { 0.0 })).collect();
        let cosine: HashMap<Uuid, f64> = vector.iter().map(|(id, cosine)| (*id, f64::from(*cosine))).collect();

        let now = self.store.clock().now();
        let records = self.store.live_memories(agent_id, &candidates).await?;
        let mut items: Vec<ScoredMemory> = records
            .into_iter()
            .filter(|record| {
                query.types.is_empty()
                    || query.types.iter().any(|memory_type| memory_type.as_str() == record.memory_type)
            })
            .filter(|record| query.tags.is_empty() || record.tags.iter().any(|tag| query.tags.contains(tag)))
            .map(|record| {
                let memory_type = record.memory_type.parse().unwrap_or(MemoryType::Fact);
                let age_days = (now - record.created_at).num_milliseconds() as f64 / 86_400_000.0;
                let keyword = keyword_score.get(&record.id).copied().unwrap_or(0.0);
                let cosine = match mode {
                    SearchMode::Hybrid => Some(cosine.get(&record.id).copied().unwrap_or(0.0)),
                    SearchMode::Keyword => None,
                };
                let parts = ScoreParts {
                    similarity: scoring::similarity(cosine, keyword),
                    recency: scoring::recency(memory_type, age_days),
                    utility: scoring::utility(record.access_count),
                };
                let score = scoring::score(parts.similarity, parts.recency, parts.utility);
                ScoredMemory { record, score, parts }
            })
            .collect();
        items.sort_by(|a, b| b.score.total_cmp(&a.score).then(b.record.id.cmp(&a.record.id)));
        items.truncate(limit);
        Ok(SearchResults { items, mode, degraded })
    }

    /// The agent's live record nearest to `text` and its cosine similarity, when vectors are available.
    pub(crate) async fn nearest(&self, agent_id: Uuid, text: &str) -> Option<(Uuid, f32)> {
        match self.vector_hits(agent_id, text, 1).await {
            (Some(hits), _) => hits.into_iter().next(),
            (None, _) => None,
        }
    }

    /// Keyword candidates, best first: from the in-process index when the backend keeps one, else from
    /// the store's full-text index.
    async fn keyword_hits(&self, agent_id: Uuid, words: &[String], k: usize) -> Result<Vec<(Uuid, f64)>, MemoryError> {
        Ok(match &self.keywords {
            Some(index) => index.search(agent_id, words, k).await?,
            None => self.store.memory_keyword_hits(agent_id, words, k).await?,
        })
    }

    /// Vector candidates, or `None` when there is no embedder or it or the index failed (then `true`).
    async fn vector_hits(&self, agent_id: Uuid, text: &str, k: usize) -> (Option<Vec<(Uuid, f32)>>, bool) {
        let Some(embedder) = &self.embedder else { return (None, false) };
        if text.trim().is_empty() {
            return (Some(Vec::new()), false);
        }
        let query = match embedder.embed(&[text.to_owned()]).await {
            Ok(mut vectors) => vectors.pop().unwrap_or_default(),
            Err(err) => {
                tracing::warn!(error = %err, "memory search degraded to keywords");
                return (None, true);
            }
        };
        match self.index.search(agent_id, embedder.model(), &query, k).await {
            Ok(hits) => (Some(hits), false),
            Err(err) => {
                tracing::warn!(error = %err, index = self.index.name(), "memory search degraded to keywords");
                (None, true)
            }
        }
    }

    /// Counts that these records were handed to a model (context or tool); done off the caller's path.
    pub fn recalled(&self, agent_id: Uuid, ids: Vec<Uuid>) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        tokio::spawn(async move {
            let result = async {
                let mut tx = store.begin().await?;
                tx.touch_memories(agent_id, &ids).await?;
                tx.commit().await
            }
            .await;
            if let Err(err) = result {
                tracing::warn!(error = %err, "recall statistics not updated");
            }
        })
    }

    /// Embeds what the backfill finds at once and then every [`BACKFILL_INTERVAL`] until `shutdown`
    /// (records written while the embedder was down, or before one was configured).
    pub async fn run_backfill(&self, shutdown: tokio_util::sync::CancellationToken) {
        if self.embedder.is_none() {
            return;
        }
        let clock = self.store.clock().clone();
        loop {
            loop {
                match self.backfill(BACKFILL_BATCH).await {
                    Ok(0) => break,
                    Ok(done) => tracing::info!(embedded = done, "memory backfill"),
                    Err(err) => {
                        tracing::warn!(error = %err, "memory backfill failed");
                        break;
                    }
                }
                if shutdown.is_cancelled() {
                    return;
                }
            }
            tokio::select! {
                _ = clock.sleep(BACKFILL_INTERVAL) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Embeds up to `batch` records that have no vector of the current model (written while the embedder
    /// was down, or by another model). Returns how many were embedded; 0 without an embedder.
    pub async fn backfill(&self, batch: usize) -> Result<usize, MemoryError> {
        let Some(embedder) = &self.embedder else { return Ok(0) };
        let records = self.store.memories_to_embed(embedder.model(), batch).await?;
        if records.is_empty() {
            return Ok(0);
        }
        let texts: Vec<String> = records.iter().map(|record| record.content.clone()).collect();
        let vectors = match embedder.embed(&texts).await {
            Ok(vectors) => vectors,
            Err(err) => {
                tracing::warn!(error = %err, "memory backfill postponed");
                return Ok(0);
            }
        };
        let mut done = 0;
        let mut tx = self.store.begin().await?;
        for (record, vector) in records.iter().zip(vectors) {
            let embedding = StoredEmbedding { model: embedder.model().to_owned(), bytes: to_bytes(&vector) };
            if tx.set_memory_embedding(record.agent_id, record.id, &record.content_hash, &embedding).await? {
                done += 1;
            }
        }
        tx.commit().await?;
        let mut agents: Vec<Uuid> = records.iter().map(|record| record.agent_id).collect();
        agents.dedup();
        for agent_id in agents {
            self.index_changed(agent_id).await;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_words_are_lowercase_unique_and_bounded() {
        assert_eq!(query_words("Where does Ana live? ana, LIVE!"), vec!["where", "does", "ana", "live"]);
        let many: String = (0..40).map(|i| format!("w{i} ")).collect();
        assert_eq!(query_words(&many).len(), MAX_QUERY_WORDS);
        assert!(query_words("  ?! ").is_empty());
    }
}
