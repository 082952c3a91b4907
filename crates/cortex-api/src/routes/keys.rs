//! API key management (SPEC §17.2): admins manage every key; other roles manage their own keys and can
//! only mint keys up to their own role. The plaintext of a key is returned once, at creation.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use cortex_core::role::Role;
use cortex_store::users::{KeySource, NewApiKey};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, PageParams, Query};
use crate::guard::Routes;
use crate::routes::sessions::path_id;
use crate::state::AppState;
use crate::views::{ApiKeyView, List};

pub fn routes() -> Routes {
    Routes::new().viewer(routes!(create_key)).viewer(routes!(list_keys)).viewer(routes!(revoke_key))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    pub role: Role,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: ApiKeyView,
    /// The secret; shown only in this response.
    pub secret: String,
}

/// Create an API key. The secret is in the response and nowhere else.
#[utoipa::path(post, path = "/api-keys", tag = "api-keys", request_body = CreateKey, responses(
    (status = 201, body = CreatedKey), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_key(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CreateKey>,
) -> ApiResult<impl IntoResponse> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::validation(&[("name", "must be 1–100 characters".into())]));
    }
    if body.role == Role::None {
        return Err(ApiError::validation(&[("role", "must be viewer, operator, approver or admin".into())]));
    }
    if !principal.role.includes(body.role) {
        return Err(ApiError::forbidden(format!("a {} key cannot create {} keys", principal.role, body.role)));
    }
    if body.expires_at.is_some_and(|at| at <= state.store.clock().now()) {
        return Err(ApiError::validation(&[("expires_at", "must be in the future".into())]));
    }
    let generated = cortex_core::api_key::generate();
    let mut tx = state.store.begin().await?;
    let key = tx
        .insert_api_key(&NewApiKey {
            name: name.to_owned(),
            prefix: generated.prefix.clone(),
            hash: generated.hash.clone(),
            role: body.role,
            user_id: principal.user_id,
            expires_at: body.expires_at,
            source: KeySource::Api,
        })
        .await?;
    tx.audit(principal.audit("api_key.create", "api_key", key.id, json!({"name": key.name, "role": key.role}))).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(CreatedKey { key: key.into(), secret: generated.plaintext })))
}

/// List API keys (admins: all; others: their own).
#[utoipa::path(get, path = "/api-keys", tag = "api-keys", params(PageParams), responses((status = 200, body = List<ApiKeyView>)))]
async fn list_keys(
    State(state): State<AppState>,
    principal: Principal,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<ApiKeyView>>> {
    let (cursor, limit) = page.parse()?;
    let owner = if principal.role == Role::Admin { None } else { principal.user_id.or(principal.key_id()) };
    let keys = state.store.list_api_keys(owner, cursor, limit).await?;
    Ok(axum::Json(List::from_page(keys, ApiKeyView::from)))
}

/// Revoke an API key; it stops working at once.
#[utoipa::path(delete, path = "/api-keys/{id}", tag = "api-keys", params(("id" = uuid::Uuid, Path)), responses(
    (status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn revoke_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let key = state.store.get_api_key(path_id(&id, "api key")?).await?;
    let owns = principal.user_id.is_some() && key.user_id == principal.user_id;
    if principal.role != Role::Admin && !owns {
        return Err(ApiError::forbidden("only admins can revoke keys of other users"));
    }
    let mut tx = state.store.begin().await?;
    tx.revoke_api_key(key.id).await?;
    tx.audit(principal.audit("api_key.revoke", "api_key", key.id, json!({"name": key.name}))).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
