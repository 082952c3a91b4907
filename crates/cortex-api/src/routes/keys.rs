//! API key management (SPEC §17.2, Appendix B "API keys").
//!
//! Admins manage every key. Any other caller sees and revokes only itself and the keys it created, never
//! one of a higher role, and creates keys only up to its own role, at most [`MAX_HANDED_OUT`] at a time,
//! drawing on its own rate budget. Revoking a key revokes the keys created with it, transitively. The
//! plaintext of a key is returned once, at creation.

use crate::guard::routes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use cortex_core::role::Role;
use cortex_store::users::{ApiKey, KeyListing, KeySource, NewApiKey};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::auth::{Credential, Principal};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, PageParams, Query};
use crate::guard::Routes;
use crate::routes::sessions::path_id;
use crate::state::AppState;
use crate::views::{ApiKeyView, List};

/// Usable keys a non-admin may have handed out at once (all keys drawing on its rate budget).
pub const MAX_HANDED_OUT: i64 = 10;
/// Highest `rate_limit_per_minute` a key may carry.
const MAX_RATE_PER_MINUTE: u32 = 1_000_000;

pub fn routes() -> Routes {
    Routes::new().viewer(routes!(create_key)).viewer(routes!(list_keys)).viewer(routes!(revoke_key))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// 1–100 characters.
    #[schema(max_length = 100)]
    #[schema(max_length = 100)]
    pub name: String,
    /// At most the creator's own role (admins: any).
    pub role: Role,
    #[serde(serialize_with = "crate::views::millis::option")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Requests per minute for this key, 1–1 000 000, replacing the server-wide API limit; a non-admin may
    /// not exceed its own. Default: the server-wide limit (or the creator's own limit for non-admins).
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub rate_limit_per_minute: Option<u32>,
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
    (status = 201, body = CreatedKey), (status = 400, body = ErrorBody),
    (status = 403, body = ErrorBody, description = "Role above the caller's, or the caller handed out too many keys")))]
async fn create_key(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CreateKey>,
) -> ApiResult<impl IntoResponse> {
    let name = body.name.trim();
    let mut checked = crate::limits::Fields::default();
    if name.is_empty() {
        checked.0.push(("name", format!("must be 1–{} characters", crate::limits::NAME)));
    }
    checked.text("name", name, crate::limits::NAME, crate::limits::Text::Name);
    let mut fields = checked.0;
    if body.role == Role::None {
        fields.push(("role", "must be viewer, operator, approver or admin".into()));
    }
    if body.expires_at.is_some_and(|at| at <= state.store.clock().now()) {
        fields.push(("expires_at", "must be in the future".into()));
    }
    let is_admin = principal.role == Role::Admin;
    // What the creator may spend per minute (`None`: unlimited); its keys never get more.
    let server_limit = state.config.api_rate.per_minute;
    let own_limit = principal.budget.per_minute.or((server_limit > 0).then_some(server_limit));
    match (body.rate_limit_per_minute, own_limit) {
        (Some(limit), _) if !(1..=MAX_RATE_PER_MINUTE).contains(&limit) => {
            fields.push(("rate_limit_per_minute", format!("must be 1–{MAX_RATE_PER_MINUTE}")));
        }
        (Some(limit), Some(own)) if !is_admin && limit > own => {
            fields.push(("rate_limit_per_minute", format!("must be at most your own limit, {own}")));
        }
        _ => {}
    }
    if !fields.is_empty() {
        return Err(ApiError::validation(&fields));
    }
    if !principal.role.includes(body.role) {
        return Err(ApiError::forbidden(format!("a {} cannot create {} keys", principal.role, body.role)));
    }
    if !is_admin && state.store.count_active_keys_in_scope(principal.budget.scope).await? >= MAX_HANDED_OUT {
        return Err(ApiError::forbidden(format!(
            "a non-admin may have at most {MAX_HANDED_OUT} usable keys it created; revoke one first"
        )));
    }
    let generated = cortex_core::api_key::generate();
    let new = NewApiKey {
        name: name.to_owned(),
        prefix: generated.prefix.clone(),
        hash: generated.hash.clone(),
        role: body.role,
        user_id: principal.user_id,
        expires_at: body.expires_at,
        source: KeySource::Api,
        created_by_key_id: principal.key_id(),
        created_by_user_id: match principal.credential {
            Credential::Session(_) => principal.user_id,
            Credential::ApiKey(_) => None,
        },
        // Admins hand out independent keys; everyone else shares their own budget.
        rate_scope_id: (!is_admin).then_some(principal.budget.scope),
        rate_limit_per_minute: if is_admin {
            body.rate_limit_per_minute
        } else {
            body.rate_limit_per_minute.or(own_limit)
        },
    };
    let mut tx = state.store.begin().await?;
    let key = tx.insert_api_key(&new).await?;
    tx.audit(principal.audit(
        "api_key.create",
        "api_key",
        key.id,
        json!({"name": key.name, "role": key.role, "rate_limit_per_minute": key.rate_limit_per_minute}),
    ))
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(CreatedKey { key: key.into(), secret: generated.plaintext })))
}

/// The keys `principal` may see and manage beyond itself.
pub(crate) fn listing_of(principal: &Principal) -> KeyListing {
    if principal.role == Role::Admin {
        return KeyListing::All;
    }
    match principal.credential {
        Credential::ApiKey(id) => KeyListing::OwnKey(id),
        Credential::Session(id) => KeyListing::CreatedByUser(principal.user_id.unwrap_or(id)),
    }
}

/// Whether a non-admin `principal` may manage `key`: its own key or one it created, never of a higher role.
pub(crate) fn manages(principal: &Principal, key: &ApiKey) -> bool {
    if principal.role == Role::Admin {
        return true;
    }
    let own_or_created = match principal.credential {
        Credential::ApiKey(id) => key.id == id || key.created_by_key_id == Some(id),
        Credential::Session(_) => key.created_by_user_id.is_some() && key.created_by_user_id == principal.user_id,
    };
    own_or_created && principal.role.includes(key.role)
}

/// List API keys: admins see all; others see their own key and the keys it created.
#[utoipa::path(get, path = "/api-keys", tag = "api-keys", params(PageParams), responses(
    (status = 200, body = List<ApiKeyView>), (status = 400, body = ErrorBody)))]
async fn list_keys(
    State(state): State<AppState>,
    principal: Principal,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<ApiKeyView>>> {
    let (cursor, limit) = page.parse()?;
    let keys = state.store.list_api_keys(listing_of(&principal), cursor, limit).await?;
    Ok(axum::Json(List::from_page(keys, ApiKeyView::from)))
}

/// Revoke an API key and every key created with it; they stop working at once.
#[utoipa::path(delete, path = "/api-keys/{id}", tag = "api-keys", params(("id" = uuid::Uuid, Path)), responses(
    (status = 204), (status = 403, body = ErrorBody, description = "Neither the caller's own key nor one it created"),
    (status = 404, body = ErrorBody)))]
async fn revoke_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let key = state.store.get_api_key(path_id(&id, "api key")?).await?;
    if !manages(&principal, &key) {
        return Err(ApiError::forbidden("you may revoke only your own key and keys you created"));
    }
    let mut tx = state.store.begin().await?;
    let revoked = tx.revoke_api_key(key.id).await?;
    tx.audit(principal.audit("api_key.revoke", "api_key", key.id, json!({"name": key.name, "revoked": revoked})))
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
