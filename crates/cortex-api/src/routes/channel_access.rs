//! Who may talk to an agent through chat (SPEC §2.4 "Access control extensions", §8.8): a channel's
//! allowlist, an agent's grants ("users"), pairing codes and access requests.
//!
//! Pairing codes are created here and only ever redeemed by the user in chat (no route redeems on
//! behalf of anyone). Deciding an access request is one guarded update; approving gives the user a grant
//! in the same transaction, and the decision is told in the chat the request came from through the
//! outbox.

use crate::guard::routes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use cortex_channels::access::{create_pairing_code, decision_notice};
use cortex_core::Timestamp;
use cortex_core::role::Role;
use cortex_store::channel_access::{AccessRequest, Grant, GrantChange, NewGrant, PairingCode, UserRateLimit};
use cortex_store::outbox::NewOutbox;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::extract::{Json, PageParams, Query};
use crate::guard::Routes;
use crate::routes::channels::channel_uuid;
use crate::state::AppState;
use crate::views::List;

/// The access-control routes, registered in [`crate::router`].
pub fn routes() -> Routes {
    Routes::new()
        .viewer(routes!(list_allowlist))
        .admin(routes!(allow_user))
        .admin(routes!(disallow_user))
        .viewer(routes!(list_grants))
        .operator(routes!(create_grant))
        .operator(routes!(update_grant))
        .operator(routes!(revoke_grant))
        .viewer(routes!(list_pairing_codes))
        .operator(routes!(new_pairing_code))
        .operator(routes!(revoke_pairing_code))
        .viewer(routes!(list_access_requests))
        .operator(routes!(decide_access_request))
}

fn ms_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// `read` or `write` (case-insensitive), default `write`.
fn access_level(value: Option<&str>) -> ApiResult<String> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("write") => Ok("write".into()),
        Some("read") => Ok("read".into()),
        Some(other) => Err(ApiError::validation(&[("access", format!("must be `read` or `write`, got `{other}`"))])),
    }
}

/// A per-user limit from a request body: 1–10 000 messages in 1 s – 1 day.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitBody {
    pub max_messages: u32,
    pub window_seconds: u32,
}

impl RateLimitBody {
    fn check(self) -> ApiResult<UserRateLimit> {
        if !(1..=10_000).contains(&self.max_messages) || !(1..=86_400).contains(&self.window_seconds) {
            return Err(ApiError::validation(&[(
                "rate_limit",
                "max_messages must be 1–10000 and window_seconds 1–86400".into(),
            )]));
        }
        Ok(UserRateLimit { max_messages: self.max_messages, window_seconds: self.window_seconds })
    }
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

// ---- Allowlist ----

/// A platform user the channel's allowlist admits.
#[derive(Debug, Serialize, ToSchema)]
pub struct AllowlistView {
    pub platform_user_id: String,
    pub created_at: DateTime<Utc>,
}

/// Body of `POST /channels/{id}/allowlist`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowUser {
    /// The platform's user id (Telegram user id, Discord user id, Slack user id, WhatsApp `wa_id`).
    pub platform_user_id: String,
}

/// The platform users admitted when the channel's `inbound_policy` is `allowlist` [viewer].
#[utoipa::path(get, path = "/channels/{id}/allowlist", tag = "channels", params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = List<AllowlistView>), (status = 404, body = ErrorBody)))]
async fn list_allowlist(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<AllowlistView>>> {
    let channel = state.store.channel(channel_uuid(&id)?).await?;
    let items = state.store.allowlist(channel.id).await?;
    let items = items
        .into_iter()
        .map(|entry| AllowlistView { platform_user_id: entry.platform_user_id, created_at: ms_time(entry.created_at) })
        .collect();
    Ok(axum::Json(List::from_all(items, &page, |entry| entry.platform_user_id.clone())?))
}

/// Admit a platform user on this channel [admin]: 201 when added, 200 when already listed.
#[utoipa::path(post, path = "/channels/{id}/allowlist", tag = "channels", params(("id" = Uuid, Path)), request_body = AllowUser,
    responses((status = 201, body = AllowlistView), (status = 200, body = AllowlistView), (status = 400, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
async fn allow_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<AllowUser>,
) -> ApiResult<impl IntoResponse> {
    let channel = state.store.channel(channel_uuid(&id)?).await?;
    let user = body.platform_user_id.trim().to_owned();
    if user.is_empty() || user.len() > 200 {
        return Err(ApiError::validation(&[("platform_user_id", "must be 1–200 characters".into())]));
    }
    let mut tx = state.store.begin().await?;
    let added = tx.allow_platform_user(channel.id, &user).await?;
    tx.audit(principal.audit("channel.allowlist.add", "channel", channel.id, json!({"platform_user_id": user})))
        .await?;
    tx.commit().await?;
    let entry = state.store.allowlist(channel.id).await?.into_iter().find(|entry| entry.platform_user_id == user);
    let created_at = entry.map_or_else(Utc::now, |entry| ms_time(entry.created_at));
    let status = if added { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(AllowlistView { platform_user_id: user, created_at })))
}

/// Remove a platform user from this channel's allowlist [admin].
#[utoipa::path(delete, path = "/channels/{id}/allowlist/{platform_user_id}", tag = "channels",
    params(("id" = Uuid, Path), ("platform_user_id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn disallow_user(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let channel = state.store.channel(channel_uuid(&id)?).await?;
    let mut tx = state.store.begin().await?;
    if !tx.disallow_platform_user(channel.id, &user).await? {
        return Err(ApiError::not_found("allowlist entry"));
    }
    tx.audit(principal.audit("channel.allowlist.remove", "channel", channel.id, json!({"platform_user_id": user})))
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- Grants ----

/// A user's grant on an agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantView {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub user_id: Uuid,
    pub display_name: String,
    /// `read` or `write`.
    pub access: String,
    /// `open`, `bound_chat`, `invite`, `pairing` or `approval`.
    pub origin: String,
    /// `active`, `revoked` or `expired`.
    pub status: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// The user's own message limit; `null` = the default (20 per 60 s).
    pub rate_limit: Option<RateLimitBody>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl GrantView {
    fn new(grant: Grant, now: Timestamp) -> Self {
        let status =
            if grant.status == "active" && grant.is_expired(now) { "expired".into() } else { grant.status.clone() };
        Self {
            id: grant.id,
            agent_id: grant.agent_id,
            user_id: grant.user_id,
            expires_at: grant.expires(),
            display_name: grant.display_name,
            access: grant.access,
            origin: grant.origin,
            status,
            rate_limit: grant.rate_limit.map(|limit| RateLimitBody {
                max_messages: limit.0.max_messages,
                window_seconds: limit.0.window_seconds,
            }),
            created_at: ms_time(grant.created_at),
            updated_at: ms_time(grant.updated_at),
        }
    }
}

async fn grant_view(state: &AppState, agent_id: Uuid, user_id: Uuid) -> ApiResult<GrantView> {
    let grant = state.store.grant(agent_id, user_id).await?.ok_or_else(|| ApiError::not_found("grant"))?;
    Ok(GrantView::new(grant, state.store.clock().now()))
}

/// Body of `POST /agents/{id}/users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGrant {
    /// The user account (a channel user appears in access requests and grants once they wrote).
    pub user_id: Uuid,
    /// `read` or `write` (default).
    pub access: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub rate_limit: Option<RateLimitBody>,
}

/// Body of `PATCH /agents/{id}/users/{user_id}`; `null` clears `expires_at` or `rate_limit`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGrant {
    pub access: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    #[serde(default, deserialize_with = "nullable")]
    pub rate_limit: Option<Option<RateLimitBody>>,
}

/// The agent's grants, also revoked and expired ones [viewer].
#[utoipa::path(get, path = "/agents/{id}/users", tag = "channels",
    params(("id" = String, Path, description = "Agent id or slug"), PageParams),
    responses((status = 200, body = List<GrantView>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_grants(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<GrantView>>> {
    let agent = state.store.get_agent(&id).await?;
    let now = state.store.clock().now();
    let items = state.store.grants(agent.id).await?.into_iter().map(|grant| GrantView::new(grant, now)).collect();
    Ok(axum::Json(List::from_all(items, &page, |grant| grant.id.to_string())?))
}

/// Grant a user access to the agent (origin `invite`) [operator]; renews a revoked or expired grant.
#[utoipa::path(post, path = "/agents/{id}/users", tag = "channels", params(("id" = String, Path, description = "Agent id or slug")),
    request_body = CreateGrant, responses((status = 201, body = GrantView), (status = 400, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_grant(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<CreateGrant>,
) -> ApiResult<impl IntoResponse> {
    let agent = state.store.get_agent(&id).await?;
    let access = access_level(body.access.as_deref())?;
    let rate_limit = body.rate_limit.map(RateLimitBody::check).transpose()?;
    if let Err(cortex_store::StoreError::NotFound { .. }) = state.store.get_user(body.user_id).await {
        return Err(ApiError::new(Code::Unprocessable, "no such user"));
    }
    let mut tx = state.store.begin().await?;
    let grant = NewGrant {
        agent_id: agent.id,
        user_id: body.user_id,
        access,
        origin: "invite".into(),
        expires_at: body.expires_at,
        rate_limit,
    };
    tx.upsert_grant(&grant).await?;
    tx.audit(principal.audit(
        "agent.grant",
        "agent",
        agent.id,
        json!({"user_id": body.user_id, "access": grant.access}),
    ))
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(grant_view(&state, agent.id, body.user_id).await?)))
}

/// Change a grant's access, expiry or rate limit [operator].
#[utoipa::path(patch, path = "/agents/{id}/users/{user_id}", tag = "channels",
    params(("id" = String, Path, description = "Agent id or slug"), ("user_id" = Uuid, Path)), request_body = UpdateGrant,
    responses((status = 200, body = GrantView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn update_grant(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, user_id)): Path<(String, Uuid)>,
    Json(body): Json<UpdateGrant>,
) -> ApiResult<axum::Json<GrantView>> {
    let agent = state.store.get_agent(&id).await?;
    let change = GrantChange {
        access: body.access.as_deref().map(|access| access_level(Some(access))).transpose()?,
        expires_at: body.expires_at,
        rate_limit: body.rate_limit.map(|limit| limit.map(RateLimitBody::check).transpose()).transpose()?,
    };
    let mut tx = state.store.begin().await?;
    tx.change_grant(agent.id, user_id, &change).await?;
    tx.audit(principal.audit("agent.grant.update", "agent", agent.id, json!({"user_id": user_id}))).await?;
    tx.commit().await?;
    Ok(axum::Json(grant_view(&state, agent.id, user_id).await?))
}

/// Revoke a grant [operator]: the user is refused with a message saying so (a pairing code or a new
/// grant lets them back in).
#[utoipa::path(delete, path = "/agents/{id}/users/{user_id}", tag = "channels",
    params(("id" = String, Path, description = "Agent id or slug"), ("user_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_grant(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, user_id)): Path<(String, Uuid)>,
) -> ApiResult<StatusCode> {
    let agent = state.store.get_agent(&id).await?;
    let mut tx = state.store.begin().await?;
    if !tx.revoke_grant(agent.id, user_id).await? {
        return Err(ApiError::not_found("grant"));
    }
    tx.audit(principal.audit("agent.grant.revoke", "agent", agent.id, json!({"user_id": user_id}))).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- Pairing codes ----

/// A pairing code.
#[derive(Debug, Serialize, ToSchema)]
pub struct PairingCodeView {
    pub id: Uuid,
    pub agent_id: Uuid,
    /// The code (6 characters); shown to operators only, `null` for viewers.
    pub code: Option<String>,
    /// The access the grant it gives has.
    pub access: String,
    /// `active`, `redeemed`, `revoked`, `burnt` (too many wrong guesses) or `expired`.
    pub state: String,
    pub expires_at: DateTime<Utc>,
    pub redeemed_by: Option<Uuid>,
    pub redeemed_at: Option<DateTime<Utc>>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl PairingCodeView {
    fn new(code: PairingCode, now: Timestamp, show_code: bool) -> Self {
        Self {
            state: code.state(now).to_owned(),
            id: code.id,
            agent_id: code.agent_id,
            code: show_code.then_some(code.code),
            access: code.access,
            expires_at: ms_time(code.expires_at),
            redeemed_by: code.redeemed_by,
            redeemed_at: code.redeemed_at.map(ms_time),
            created_by: code.created_by,
            created_at: ms_time(code.created_at),
        }
    }
}

/// Body of `POST /agents/{id}/pairing-codes`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePairingCode {
    /// `read` or `write` (default) for the grant the code gives.
    pub access: Option<String>,
}

/// Create a single-use pairing code, valid 1 h [operator]. The user sends it to the bot (`/pair CODE`,
/// or the bare code) to get a grant.
#[utoipa::path(post, path = "/agents/{id}/pairing-codes", tag = "channels", params(("id" = String, Path, description = "Agent id or slug")),
    request_body = CreatePairingCode, responses((status = 201, body = PairingCodeView), (status = 400, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn new_pairing_code(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<CreatePairingCode>,
) -> ApiResult<impl IntoResponse> {
    let agent = state.store.get_agent(&id).await?;
    let access = access_level(body.access.as_deref())?;
    let code = create_pairing_code(&state.store, agent.id, &access, &principal.actor_ref()).await?;
    let mut tx = state.store.begin().await?;
    tx.audit(principal.audit("agent.pairing_code.create", "agent", agent.id, json!({"pairing_code_id": code.id})))
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(PairingCodeView::new(code, state.store.clock().now(), true))))
}

/// The agent's pairing codes in creation order [viewer]; the codes themselves only for operators.
#[utoipa::path(get, path = "/agents/{id}/pairing-codes", tag = "channels",
    params(("id" = String, Path, description = "Agent id or slug"), PageParams),
    responses((status = 200, body = List<PairingCodeView>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_pairing_codes(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<PairingCodeView>>> {
    let agent = state.store.get_agent(&id).await?;
    let now = state.store.clock().now();
    let show = principal.role.includes(Role::Operator);
    let items = state
        .store
        .pairing_codes(agent.id)
        .await?
        .into_iter()
        .map(|code| PairingCodeView::new(code, now, show))
        .collect();
    Ok(axum::Json(List::from_all(items, &page, |code| code.id.to_string())?))
}

/// Revoke an unredeemed pairing code [operator] (409 when already redeemed or revoked).
#[utoipa::path(delete, path = "/agents/{id}/pairing-codes/{code_id}", tag = "channels",
    params(("id" = String, Path, description = "Agent id or slug"), ("code_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn revoke_pairing_code(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, code_id)): Path<(String, Uuid)>,
) -> ApiResult<StatusCode> {
    let agent = state.store.get_agent(&id).await?;
    let mut tx = state.store.begin().await?;
    match tx.revoke_pairing_code(agent.id, code_id).await {
        Ok(()) => {}
        Err(cortex_store::StoreError::StaleState { .. }) => {
            return Err(ApiError::new(Code::InvalidState, "the code was already redeemed or revoked"));
        }
        Err(err) => return Err(err.into()),
    }
    tx.audit(principal.audit("agent.pairing_code.revoke", "agent", agent.id, json!({"pairing_code_id": code_id})))
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- Access requests ----

/// A request for access filed by a chat user the agent did not admit.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessRequestView {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub user_id: Uuid,
    pub display_name: String,
    pub channel_id: Option<Uuid>,
    pub chat_id: Option<String>,
    /// The start of the message that filed it.
    pub message_preview: Option<String>,
    /// `pending`, `approved` or `denied`.
    pub status: String,
    /// Why it was denied (told to the user).
    pub reason: Option<String>,
    pub decided_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<AccessRequest> for AccessRequestView {
    fn from(request: AccessRequest) -> Self {
        Self {
            id: request.id,
            agent_id: request.agent_id,
            user_id: request.user_id,
            display_name: request.display_name,
            channel_id: request.channel_id,
            chat_id: request.chat_id,
            message_preview: request.message_preview,
            status: request.status,
            reason: request.reason,
            decided_by: request.decided_by,
            created_at: ms_time(request.created_at),
            updated_at: ms_time(request.updated_at),
        }
    }
}

/// Query of `GET /agents/{id}/access-requests`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AccessRequestParams {
    /// `pending`, `approved` or `denied`; all when absent.
    pub status: Option<String>,
    /// Page size, 1–200 (default 50).
    pub limit: Option<i64>,
    /// Opaque cursor from the previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// Body of `PATCH /agents/{id}/access-requests/{request_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideAccessRequest {
    /// `approved` or `denied`.
    pub status: String,
    /// Told to the user with a denial (≤ 500 characters).
    pub reason: Option<String>,
}

/// The agent's latest 200 access requests, in creation order [viewer].
#[utoipa::path(get, path = "/agents/{id}/access-requests", tag = "channels",
    params(("id" = String, Path, description = "Agent id or slug"), AccessRequestParams),
    responses((status = 200, body = List<AccessRequestView>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_access_requests(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<AccessRequestParams>,
) -> ApiResult<axum::Json<List<AccessRequestView>>> {
    let agent = state.store.get_agent(&id).await?;
    let status = match params.status.as_deref().map(str::to_ascii_lowercase) {
        None => None,
        Some(status) if ["pending", "approved", "denied"].contains(&status.as_str()) => Some(status),
        Some(other) => return Err(ApiError::validation(&[("status", format!("unknown status `{other}`"))])),
    };
    let page = PageParams { limit: params.limit, cursor: params.cursor };
    let items = state.store.access_requests(agent.id, status.as_deref(), 200).await?;
    let items = items.into_iter().map(AccessRequestView::from).collect();
    Ok(axum::Json(List::from_all(items, &page, |request| request.id.to_string())?))
}

/// Approve (grant, origin `approval`) or deny a pending access request [operator]; the user is told in
/// the chat they wrote from. 409 when it was already decided.
#[utoipa::path(patch, path = "/agents/{id}/access-requests/{request_id}", tag = "channels",
    params(("id" = String, Path, description = "Agent id or slug"), ("request_id" = Uuid, Path)),
    request_body = DecideAccessRequest, responses((status = 200, body = AccessRequestView), (status = 400, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn decide_access_request(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, request_id)): Path<(String, Uuid)>,
    Json(body): Json<DecideAccessRequest>,
) -> ApiResult<axum::Json<AccessRequestView>> {
    let agent = state.store.get_agent(&id).await?;
    let approve = match body.status.to_ascii_lowercase().as_str() {
        "approved" => true,
        "denied" => false,
        other => {
            return Err(ApiError::validation(&[("status", format!("must be `approved` or `denied`, got `{other}`"))]));
        }
    };
    let reason = body.reason.map(|reason| reason.trim().to_owned()).filter(|reason| !reason.is_empty());
    if reason.as_ref().is_some_and(|reason| reason.chars().count() > 500) {
        return Err(ApiError::validation(&[("reason", "must be at most 500 characters".into())]));
    }
    let request = state.store.access_request(agent.id, request_id).await?;
    let mut tx = state.store.begin().await?;
    match tx.decide_access_request(agent.id, request.id, approve, reason.as_deref(), &principal.actor_ref()).await {
        Ok(()) => {}
        Err(cortex_store::StoreError::StaleState { .. }) => {
            return Err(ApiError::new(Code::InvalidState, format!("the request is already {}", request.status)));
        }
        Err(err) => return Err(err.into()),
    }
    if let (Some(channel_id), Some(target)) = (request.channel_id, &request.reply_target) {
        tx.enqueue_outbox(&NewOutbox {
            channel_id: Some(channel_id),
            target: target.0.clone(),
            payload: json!({"kind": "notice", "text": decision_notice(approve, reason.as_deref())}),
            idempotency_key: format!("access-request:{}:decision", request.id),
            job_id: None,
        })
        .await?;
    }
    let action = if approve { "agent.access_request.approve" } else { "agent.access_request.deny" };
    tx.audit(principal.audit(action, "agent", agent.id, json!({"request_id": request.id, "user_id": request.user_id})))
        .await?;
    tx.commit().await?;
    Ok(axum::Json(state.store.access_request(agent.id, request.id).await?.into()))
}
