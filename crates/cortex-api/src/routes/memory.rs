//! An agent's memory (SPEC §2.4, §9): create, hybrid search with score breakdown, list/filter, detail,
//! edit and delete. Everything goes through the runtime's [`cortex_memory::Memory`], the same service
//! the `memory_*` tools use; every route is scoped by the agent in its path.

use crate::guard::routes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use cortex_core::memory::{MemorySource, MemoryType};
use cortex_memory::{MemoryError, MemoryPatch, Remember, ScoredMemory, SearchMode, SearchQuery};
use cortex_store::memory::{MemoryFilter, MemoryRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::extract::{Json, PageParams, Query};
use crate::guard::Routes;
use crate::routes::sessions::path_id;
use crate::state::AppState;
use crate::views::List;

pub fn routes() -> Routes {
    Routes::new()
        .operator(routes!(create_memory))
        .viewer(routes!(search_memory))
        .viewer(routes!(list_memory))
        .viewer(routes!(get_memory))
        .operator(routes!(update_memory))
        .operator(routes!(delete_memory))
        .operator(routes!(sync_memory))
        .viewer(routes!(get_memory_file))
        .operator(routes!(put_memory_file))
}

/// A memory record.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemoryView {
    pub id: Uuid,
    pub agent_id: Uuid,
    /// `fact`, `preference`, `event`, `system_rule`, `lesson` or `relationship`.
    #[serde(rename = "type")]
    pub memory_type: String,
    pub content: String,
    pub tags: Vec<String>,
    pub people: Vec<String>,
    pub projects: Vec<String>,
    /// 1–5.
    pub importance: i64,
    /// 0–1.
    pub confidence: f64,
    /// `api`, `tool`, `extraction` or `markdown`.
    pub source: String,
    /// File and heading for markdown records.
    pub source_ref: Option<String>,
    /// Provenance: the session, job and message the record came from.
    pub session_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub message_seq: Option<i64>,
    pub supersedes_id: Option<Uuid>,
    /// Set when a newer record replaced this one (kept as history, out of default search).
    pub superseded_by: Option<Uuid>,
    /// Why the record exists in this form (extraction decisions).
    pub reason: Option<String>,
    /// Model of the stored vector; `null` while the record has none (keyword search only finds it).
    pub embedding_model: Option<String>,
    /// How often the record was handed to a model.
    pub recall_count: i64,
    pub last_recalled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<MemoryRecord> for MemoryView {
    fn from(record: MemoryRecord) -> Self {
        let source = MemorySource::from_db(&record.source).map_or(record.source.clone(), |s| s.as_str().to_owned());
        Self {
            id: record.id,
            agent_id: record.agent_id,
            memory_type: record.memory_type,
            content: record.content,
            tags: record.tags,
            people: record.people,
            projects: record.projects,
            importance: record.importance,
            confidence: record.confidence,
            source,
            source_ref: record.source_ref,
            session_id: record.session_id,
            job_id: record.job_id,
            message_seq: record.message_seq,
            supersedes_id: record.supersedes_id,
            superseded_by: record.superseded_by,
            reason: record.reason,
            embedding_model: record.embedding_model,
            recall_count: record.access_count,
            last_recalled_at: record.last_accessed_at,
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }
}

/// The parts of a search score: `score = 0.5 × similarity + 0.3 × recency + 0.2 × utility`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScorePartsView {
    /// 0.7 × cosine + 0.3 × keyword score, or the keyword score alone in keyword mode.
    pub similarity: f64,
    /// 0.5^(age_days / half_life of the type); 1 for `system_rule`.
    pub recency: f64,
    /// min(log10(recall_count + 1) / 3, 1).
    pub utility: f64,
}

/// A search hit.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScoredMemoryView {
    #[serde(flatten)]
    pub record: MemoryView,
    pub score: f64,
    pub score_parts: ScorePartsView,
}

impl From<ScoredMemory> for ScoredMemoryView {
    fn from(item: ScoredMemory) -> Self {
        Self {
            record: item.record.into(),
            score: item.score,
            score_parts: ScorePartsView {
                similarity: item.parts.similarity,
                recency: item.parts.recency,
                utility: item.parts.utility,
            },
        }
    }
}

/// Search results, best first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchView {
    pub items: Vec<ScoredMemoryView>,
    /// Always `null`: a search returns one page of `limit` hits.
    pub next_cursor: Option<String>,
    /// `hybrid` (keyword and vector candidates) or `keyword` (full-text only).
    pub mode: String,
    /// True when embeddings are configured but could not be used for this search.
    pub degraded: bool,
    /// Why the search is keyword only, when it is.
    pub notice: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMemory {
    /// 10–8000 characters, one self-contained statement.
    pub content: String,
    /// Default `fact`.
    #[serde(rename = "type")]
    #[schema(value_type = Option<String>)]
    pub memory_type: Option<MemoryType>,
    /// At most 10.
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub people: Vec<String>,
    #[serde(default)]
    pub projects: Vec<String>,
    /// 1–5 (default 3).
    pub importance: Option<i64>,
    /// 0–1 (default 1).
    pub confidence: Option<f64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMemory {
    #[serde(rename = "type")]
    #[schema(value_type = Option<String>)]
    pub memory_type: Option<MemoryType>,
    pub content: Option<String>,
    pub tags: Option<Vec<String>>,
    pub importance: Option<i64>,
    pub confidence: Option<f64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// What to look for (words or a question).
    pub q: String,
    /// 1–200 (default 50).
    pub limit: Option<i64>,
    /// Only this type.
    #[serde(rename = "type")]
    #[param(value_type = Option<String>)]
    pub memory_type: Option<MemoryType>,
    /// Only records with this tag.
    pub tag: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    #[serde(rename = "type")]
    #[param(value_type = Option<String>)]
    pub memory_type: Option<MemoryType>,
    /// `api`, `tool`, `extraction` or `markdown`.
    #[param(value_type = Option<String>)]
    pub source: Option<MemorySource>,
    pub tag: Option<String>,
    /// Also list records replaced by newer ones.
    #[serde(default)]
    pub include_superseded: bool,
}

fn memory_error(err: MemoryError) -> ApiError {
    match err {
        MemoryError::Invalid { field, reason } => ApiError::validation(&[(field, reason)]),
        MemoryError::ReadOnlySource(_) => ApiError::new(Code::ReadOnlySource, err.to_string()),
        MemoryError::Injection(_) => ApiError::validation(&[("content", err.to_string())]),
        MemoryError::Store(cortex_store::StoreError::NotFound { .. }) => ApiError::not_found("memory"),
        MemoryError::Store(cortex_store::StoreError::Conflict { .. }) => {
            ApiError::new(Code::Conflict, "another memory of this agent already has this content")
        }
        MemoryError::Store(store) => store.into(),
    }
}

/// Store a memory for the agent (an identical live memory is returned instead, with 200).
#[utoipa::path(post, path = "/agents/{id}/memory", tag = "memory", params(("id" = String, Path, description = "Agent id or slug")),
    request_body = CreateMemory, responses((status = 201, body = MemoryView), (status = 200, body = MemoryView),
    (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_memory(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<CreateMemory>,
) -> ApiResult<impl IntoResponse> {
    let agent = state.store.get_agent(&id).await?;
    let new = Remember {
        memory_type: body.memory_type.unwrap_or(MemoryType::Fact),
        tags: body.tags,
        people: body.people,
        projects: body.projects,
        importance: body.importance.unwrap_or(3),
        confidence: body.confidence.unwrap_or(1.0),
        ..Remember::new(agent.id, body.content, MemorySource::Api)
    };
    let (record, created) = state.runtime.memory.remember(new).await.map_err(memory_error)?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(MemoryView::from(record))))
}

/// Hybrid search (full-text + vector similarity, fused, then scored by similarity, recency and utility).
#[utoipa::path(get, path = "/agents/{id}/memory/search", tag = "memory", params(("id" = String, Path, description = "Agent id or slug"), SearchParams),
    responses((status = 200, body = SearchView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn search_memory(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<SearchParams>,
) -> ApiResult<axum::Json<SearchView>> {
    let limit = match params.limit {
        None => 50,
        Some(limit @ 1..=200) => limit as usize,
        Some(other) => {
            return Err(ApiError::validation(&[("limit", format!("must be between 1 and 200, got {other}"))]));
        }
    };
    if params.q.trim().is_empty() || params.q.chars().count() > 2000 {
        return Err(ApiError::validation(&[("q", "must be 1–2000 characters".into())]));
    }
    let agent = state.store.get_agent(&id).await?;
    let query = SearchQuery {
        text: params.q,
        limit,
        types: params.memory_type.into_iter().collect(),
        tags: params.tag.into_iter().collect(),
    };
    let memory = &state.runtime.memory;
    let results = memory.search(agent.id, &query).await.map_err(memory_error)?;
    let notice = match (results.mode, results.degraded) {
        (SearchMode::Hybrid, _) => None,
        (SearchMode::Keyword, true) => {
            Some("the embedding service or vector index is unavailable; full-text search only".to_owned())
        }
        (SearchMode::Keyword, false) => {
            Some("no embedder is configured (CORTEX_EMBEDDINGS=none); full-text search only".to_owned())
        }
    };
    Ok(axum::Json(SearchView {
        items: results.items.into_iter().map(ScoredMemoryView::from).collect(),
        next_cursor: None,
        mode: match results.mode {
            SearchMode::Hybrid => "hybrid".into(),
            SearchMode::Keyword => "keyword".into(),
        },
        degraded: results.degraded,
        notice,
    }))
}

/// The agent's memories, newest first, filtered by type, source or tag.
#[utoipa::path(get, path = "/agents/{id}/memory", tag = "memory", params(("id" = String, Path, description = "Agent id or slug"), ListParams, PageParams),
    responses((status = 200, body = List<MemoryView>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_memory(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<ListParams>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<MemoryView>>> {
    let (cursor, limit) = page.parse()?;
    let agent = state.store.get_agent(&id).await?;
    let filter = MemoryFilter {
        memory_type: params.memory_type.map(|memory_type| memory_type.as_str().to_owned()),
        source: params.source.map(|source| source.db_name().to_owned()),
        tag: params.tag,
        include_superseded: params.include_superseded,
    };
    let page = state.store.list_memories(agent.id, &filter, cursor, limit).await?;
    Ok(axum::Json(List::from_page(page, MemoryView::from)))
}

/// One memory of the agent (superseded ones included).
#[utoipa::path(get, path = "/agents/{id}/memory/{memory_id}", tag = "memory", params(("id" = String, Path, description = "Agent id or slug"), ("memory_id" = Uuid, Path)),
    responses((status = 200, body = MemoryView), (status = 404, body = ErrorBody)))]
async fn get_memory(
    State(state): State<AppState>,
    Path((id, memory_id)): Path<(String, String)>,
) -> ApiResult<axum::Json<MemoryView>> {
    let agent = state.store.get_agent(&id).await?;
    let memory_id = path_id(&memory_id, "memory")?;
    let record = state.runtime.memory.get(agent.id, memory_id).await.map_err(memory_error)?;
    Ok(axum::Json(record.into()))
}

/// Edit a memory (markdown-sourced ones are edited in their file: 409 `read_only_source`).
#[utoipa::path(patch, path = "/agents/{id}/memory/{memory_id}", tag = "memory", params(("id" = String, Path, description = "Agent id or slug"), ("memory_id" = Uuid, Path)),
    request_body = UpdateMemory, responses((status = 200, body = MemoryView), (status = 400, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn update_memory(
    State(state): State<AppState>,
    Path((id, memory_id)): Path<(String, String)>,
    Json(body): Json<UpdateMemory>,
) -> ApiResult<axum::Json<MemoryView>> {
    let agent = state.store.get_agent(&id).await?;
    let memory_id = path_id(&memory_id, "memory")?;
    let patch = MemoryPatch {
        memory_type: body.memory_type,
        content: body.content,
        tags: body.tags,
        importance: body.importance,
        confidence: body.confidence,
    };
    let record = state.runtime.memory.update(agent.id, memory_id, patch).await.map_err(memory_error)?;
    Ok(axum::Json(record.into()))
}

/// Delete a memory (markdown-sourced ones are deleted in their file: 409 `read_only_source`).
#[utoipa::path(delete, path = "/agents/{id}/memory/{memory_id}", tag = "memory", params(("id" = String, Path, description = "Agent id or slug"), ("memory_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_memory(
    State(state): State<AppState>,
    Path((id, memory_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let agent = state.store.get_agent(&id).await?;
    let memory_id = path_id(&memory_id, "memory")?;
    state.runtime.memory.delete(agent.id, memory_id).await.map_err(memory_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a markdown sync changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncView {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub unchanged: usize,
}

impl From<cortex_memory::markdown::SyncReport> for SyncView {
    fn from(report: cortex_memory::markdown::SyncReport) -> Self {
        Self { created: report.created, updated: report.updated, deleted: report.deleted, unchanged: report.unchanged }
    }
}

/// Make the agent's markdown records equal its files `<data_dir>/agents/<slug>/memory/*.md` (SPEC §9.7).
#[utoipa::path(post, path = "/agents/{id}/memory/sync", tag = "memory", params(("id" = String, Path, description = "Agent id or slug")),
    responses((status = 200, body = SyncView), (status = 404, body = ErrorBody)))]
async fn sync_memory(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<axum::Json<SyncView>> {
    let agent = state.store.get_agent(&id).await?;
    let report = state.runtime.memory.sync_markdown(agent.id, &agent.slug).await.map_err(memory_error)?;
    Ok(axum::Json(report.into()))
}

/// Largest markdown file written through the API.
const MAX_FILE_CHARS: usize = 1_000_000;

/// A markdown memory file.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemoryFile {
    #[schema(max_length = 1_000_000)]
    pub content: String,
}

/// A file name of `memory/`: `[A-Za-z0-9._-]{1,100}` ending in `.md`, not starting with a dot.
fn file_name(name: &str) -> ApiResult<&str> {
    let valid = name.len() <= 100
        && name.ends_with(".md")
        && name.len() > 3
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(name)
    } else {
        Err(ApiError::validation(&[(
            "name",
            "must be 1–100 characters of letters, digits, `.`, `_`, `-`, ending in `.md`".into(),
        )]))
    }
}

fn memory_file_path(state: &AppState, slug: &str, name: &str) -> ApiResult<std::path::PathBuf> {
    let data_dir = state.runtime.memory.data_dir().ok_or_else(|| ApiError::not_found("memory file"))?;
    Ok(cortex_memory::markdown::memory_dir(data_dir, slug).join(file_name(name)?))
}

/// One markdown memory file of the agent.
#[utoipa::path(get, path = "/agents/{id}/memory/files/{name}", tag = "memory", params(("id" = String, Path, description = "Agent id or slug"), ("name" = String, Path)),
    responses((status = 200, body = MemoryFile), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_memory_file(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<axum::Json<MemoryFile>> {
    let agent = state.store.get_agent(&id).await?;
    let path = memory_file_path(&state, &agent.slug, &name)?;
    match tokio::fs::read_to_string(&path).await {
        Ok(content) => Ok(axum::Json(MemoryFile { content })),
        Err(_) => Err(ApiError::not_found("memory file")),
    }
}

/// Write a markdown memory file (creating the directory), then sync; answers what the sync changed.
#[utoipa::path(put, path = "/agents/{id}/memory/files/{name}", tag = "memory", params(("id" = String, Path, description = "Agent id or slug"), ("name" = String, Path)),
    request_body = MemoryFile, responses((status = 200, body = SyncView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn put_memory_file(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    Json(body): Json<MemoryFile>,
) -> ApiResult<axum::Json<SyncView>> {
    if body.content.chars().count() > MAX_FILE_CHARS {
        return Err(ApiError::validation(&[("content", format!("must be at most {MAX_FILE_CHARS} characters"))]));
    }
    let agent = state.store.get_agent(&id).await?;
    let path = memory_file_path(&state, &agent.slug, &name)?;
    let written = async {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let staging = path.with_extension("md.tmp");
        tokio::fs::write(&staging, body.content.as_bytes()).await?;
        tokio::fs::rename(&staging, &path).await
    };
    written.await.map_err(|err| {
        tracing::error!(error = %err, file = %path.display(), "writing a memory file failed");
        ApiError::internal()
    })?;
    let report = state.runtime.memory.sync_markdown(agent.id, &agent.slug).await.map_err(memory_error)?;
    Ok(axum::Json(report.into()))
}
