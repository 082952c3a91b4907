//! Sessions and their messages (SPEC §2.4).

use crate::guard::routes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use cortex_core::role::Role;
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{PageParams, Query};
use crate::guard::Routes;
use crate::state::AppState;
use crate::views::{List, MessageView, SessionView};

pub fn routes() -> Routes {
    Routes::new()
        .viewer(routes!(list_sessions))
        .viewer(routes!(get_session))
        .operator(routes!(close_session))
        .viewer(routes!(list_messages))
}

/// Parses a path id, answering 404 (not 400) for ids that cannot exist.
pub fn path_id(text: &str, what: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(text).map_err(|_| ApiError::not_found(what))
}

/// Sessions of an agent, newest first.
#[utoipa::path(get, path = "/agents/{id}/sessions", tag = "sessions", params(("id" = String, Path, description = "Agent id or slug"), PageParams),
    responses((status = 200, body = List<SessionView>), (status = 404, body = ErrorBody)))]
async fn list_sessions(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<SessionView>>> {
    let (cursor, limit) = page.parse()?;
    let agent = state.store.get_agent(&id).await?;
    let sessions = state.store.list_sessions(agent.id, cursor, limit).await?;
    Ok(axum::Json(List::from_page(sessions, SessionView::from)))
}

/// One session.
#[utoipa::path(get, path = "/sessions/{id}", tag = "sessions", params(("id" = Uuid, Path)),
    responses((status = 200, body = SessionView), (status = 404, body = ErrorBody)))]
async fn get_session(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<axum::Json<SessionView>> {
    let session = state.store.get_session(path_id(&id, "session")?).await?;
    Ok(axum::Json(session.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagePageParams {
    /// Page size, 1–200 (default 50).
    pub limit: Option<i64>,
    /// Return messages after this sequence number (the previous page's last `seq`).
    pub after_seq: Option<i64>,
}

/// Messages of a session, oldest first.
#[utoipa::path(get, path = "/sessions/{id}/messages", tag = "sessions", params(("id" = Uuid, Path), MessagePageParams),
    responses((status = 200, body = List<MessageView>), (status = 404, body = ErrorBody)))]
async fn list_messages(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(page): Query<MessagePageParams>,
) -> ApiResult<axum::Json<List<MessageView>>> {
    let limit = match page.limit {
        None => 50,
        Some(limit @ 1..=200) => limit as usize,
        Some(other) => {
            return Err(ApiError::validation(&[("limit", format!("must be between 1 and 200, got {other}"))]));
        }
    };
    let session = state.store.get_session(path_id(&id, "session")?).await?;
    let mut messages = state.store.list_messages(session.id, page.after_seq.unwrap_or(0), limit + 1).await?;
    let next_cursor = if messages.len() > limit {
        messages.truncate(limit);
        messages.last().map(|last| last.seq.to_string())
    } else {
        None
    };
    Ok(axum::Json(List::page(messages.into_iter().map(MessageView::from).collect(), next_cursor)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CloseParams {
    /// Also erase the messages [admin].
    #[serde(default)]
    pub purge: bool,
}

/// Close a session (no further messages); `?purge=true` also erases its messages [admin].
#[utoipa::path(delete, path = "/sessions/{id}", tag = "sessions", params(("id" = Uuid, Path), CloseParams),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn close_session(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(params): Query<CloseParams>,
) -> ApiResult<StatusCode> {
    if params.purge {
        principal.require(Role::Admin)?;
    }
    let session_id = path_id(&id, "session")?;
    let mut tx = state.store.begin().await?;
    tx.close_session(session_id, params.purge).await?;
    let action = if params.purge { "session.purge" } else { "session.close" };
    tx.audit(principal.audit(action, "session", session_id, json!({}))).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
