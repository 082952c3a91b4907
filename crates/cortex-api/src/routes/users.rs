//! Users and roles (SPEC §2.4 `GET|POST|PATCH /users` [admin], §3.1 `user_account`).
//!
//! Admins list users, create local users (a password is hashed with Argon2id like `cortex user create`;
//! without one the user signs in only through a login provider), change a user's role and disable or
//! enable them. Disabling ends the user's dashboard sessions in the same transaction, and the user's API
//! keys stop authenticating (checked at every request, [`crate::auth`]); a demoted user's keys act with at
//! most the new role. The last enabled admin can be neither demoted nor disabled (409), decided under a
//! lock on the admin rows so two admins demoting each other at once cannot both succeed. Every change is
//! audited.
//!
//! Merging (`POST /users/{id}/merge {from_user_id}`, SPEC §3.1, §11.2 "merge identities") folds a second
//! account of the same person into this one: chat-platform and login identities, grants, access requests
//! and sessions move over in one transaction and the merged account is disabled (kept, so the audit log,
//! approvals and API keys that name it still resolve).

use crate::guard::routes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use cortex_core::role::Role;
use cortex_store::users::{MergeCounts, User, UserChange};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::extract::{Json, PageParams, Query};
use crate::guard::Routes;
use crate::limits::{Fields, NAME, Text};
use crate::routes::auth::normalise_email;
use crate::routes::sessions::path_id;
use crate::state::AppState;
use crate::views::List;

pub fn routes() -> Routes {
    Routes::new()
        .admin(routes!(list_users))
        .admin(routes!(create_user))
        .admin(routes!(update_user))
        .admin(routes!(merge_user))
}

/// A user account as the API shows it (never the password hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub display_name: String,
    pub email: Option<String>,
    /// `admin`, `approver`, `operator`, `viewer`, or `none` (chat-platform people who cannot sign in).
    pub role: Role,
    /// Disabled users cannot sign in and their API keys are refused.
    pub disabled: bool,
    #[serde(serialize_with = "crate::views::millis::option")]
    pub disabled_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::views::millis::serialize")]
    pub created_at: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            display_name: user.display_name,
            email: user.email,
            role: user.role,
            disabled: user.disabled_at.is_some(),
            disabled_at: user.disabled_at,
            created_at: user.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// The sign-in email (compared trimmed and lowercased); unique.
    #[schema(max_length = 254)]
    pub email: String,
    /// `viewer`, `operator`, `approver` or `admin`.
    pub role: Role,
    /// 1–100 characters; default: the part of the email before `@`.
    #[schema(max_length = 100)]
    pub display_name: Option<String>,
    /// Sets a local password (Argon2id). Without one the user signs in through a login provider only.
    pub password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[schema(max_length = 100)]
    pub display_name: Option<String>,
    pub role: Option<Role>,
    /// `true` disables the user (ends their sessions, refuses their keys); `false` enables them again.
    pub disabled: Option<bool>,
}

/// Validates a display name into `fields`; returns it trimmed.
fn checked_name<'a>(fields: &mut Fields, name: &'a str) -> &'a str {
    let name = name.trim();
    if name.is_empty() {
        fields.0.push(("display_name", format!("must be 1–{NAME} characters")));
    }
    fields.text("display_name", name, NAME, Text::Name);
    name
}

/// List users, newest first.
#[utoipa::path(get, path = "/users", tag = "users", params(PageParams), responses(
    (status = 200, body = List<UserView>), (status = 400, body = ErrorBody)))]
async fn list_users(
    State(state): State<AppState>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<UserView>>> {
    let (cursor, limit) = page.parse()?;
    let users = state.store.list_users(cursor, limit).await?;
    Ok(axum::Json(List::from_page(users, UserView::from)))
}

/// Create a user who signs in with a password or through a login provider.
#[utoipa::path(post, path = "/users", tag = "users", request_body = CreateUser, responses(
    (status = 201, body = UserView), (status = 400, body = ErrorBody),
    (status = 409, body = ErrorBody, description = "A user with this email exists")))]
async fn create_user(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CreateUser>,
) -> ApiResult<impl IntoResponse> {
    let email = normalise_email(&body.email);
    let mut fields = Fields::default();
    if !email.contains('@') || email.len() > 254 || email.chars().any(char::is_whitespace) {
        fields.0.push(("email", "must be an email address of at most 254 characters".into()));
    }
    let default_name = email.split('@').next().unwrap_or_default().to_owned();
    let name = checked_name(&mut fields, body.display_name.as_deref().unwrap_or(&default_name)).to_owned();
    if body.role == Role::None {
        fields.0.push(("role", "must be viewer, operator, approver or admin".into()));
    }
    if let Some(password) = &body.password
        && let Err(weak) = cortex_auth::password::check_policy(password)
    {
        fields.0.push(("password", weak.to_string()));
    }
    if !fields.0.is_empty() {
        return Err(ApiError::validation(&fields.0));
    }
    let hash = match body.password {
        Some(password) => Some(
            tokio::task::spawn_blocking(move || cortex_auth::password::hash(&password))
                .await
                .map_err(|err| ApiError::new(Code::Internal, err.to_string()))?
                .map_err(|err| ApiError::new(Code::Internal, err.to_string()))?,
        ),
        None => None,
    };
    let mut tx = state.store.begin().await?;
    let user = tx.insert_user(&name, Some(&email), body.role).await.map_err(|err| match err {
        cortex_store::StoreError::Conflict { .. } => {
            ApiError::new(Code::Conflict, format!("a user with email {email} exists already"))
        }
        other => other.into(),
    })?;
    if let Some(hash) = &hash {
        tx.set_password_hash(user.id, hash).await?;
    }
    tx.audit(principal.audit(
        "user.create",
        "user",
        user.id,
        json!({"email": email, "role": user.role, "password": hash.is_some()}),
    ))
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(UserView::from(user))))
}

/// Change a user's name or role, or disable/enable them. Disabling ends their sessions and refuses their
/// API keys.
#[utoipa::path(patch, path = "/users/{id}", tag = "users", request_body = UpdateUser,
    params(("id" = uuid::Uuid, Path)), responses(
    (status = 200, body = UserView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody, description = "It would leave no enabled admin")))]
async fn update_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<UpdateUser>,
) -> ApiResult<axum::Json<UserView>> {
    let id = path_id(&id, "user")?;
    let mut fields = Fields::default();
    let display_name = body.display_name.as_deref().map(|name| checked_name(&mut fields, name).to_owned());
    if !fields.0.is_empty() {
        return Err(ApiError::validation(&fields.0));
    }
    let change = UserChange { display_name, role: body.role, disabled: body.disabled };
    let mut tx = state.store.begin().await?;
    let admins = tx.lock_active_admins().await?;
    let (before, after) = tx.update_user(id, &change).await?;
    let still_admin = after.role == Role::Admin && after.disabled_at.is_none();
    if admins.contains(&id) && !still_admin && admins.len() <= 1 {
        return Err(ApiError::new(Code::Conflict, "this is the last enabled admin; make another user admin first"));
    }
    let disabled_now = after.disabled_at.is_some() && before.disabled_at.is_none();
    let sessions_ended = if disabled_now { tx.delete_user_web_sessions(id).await? } else { 0 };
    tx.audit(principal.audit(
        "user.update",
        "user",
        id,
        json!({
            "role": {"from": before.role, "to": after.role},
            "disabled": {"from": before.disabled_at.is_some(), "to": after.disabled_at.is_some()},
            "display_name": {"from": before.display_name, "to": after.display_name},
            "sessions_ended": sessions_ended,
        }),
    ))
    .await?;
    tx.commit().await?;
    Ok(axum::Json(UserView::from(after)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeUser {
    /// The account to fold into this one; it is disabled afterwards.
    pub from_user_id: Uuid,
}

/// What a merge moved.
#[derive(Debug, Serialize, ToSchema)]
pub struct MergeView {
    /// The account everything now belongs to.
    pub user: UserView,
    /// The merged account, now disabled.
    pub merged: UserView,
    pub channel_mappings: u64,
    pub login_identities: u64,
    pub grants: u64,
    /// Grants of the merged account dropped because this account kept a better one for the same agent.
    pub grants_dropped: u64,
    pub access_requests_denied: u64,
    pub sessions: u64,
}

/// Merge another user into this one: their chat-platform identities (`channel_mapping`), login
/// identities, grants, access requests and sessions move here, then that user is disabled.
#[utoipa::path(post, path = "/users/{id}/merge", tag = "users", request_body = MergeUser,
    params(("id" = uuid::Uuid, Path, description = "The user that receives everything")), responses(
    (status = 200, body = MergeView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody, description = "Same user, a disabled target, or the last enabled admin")))]
async fn merge_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<MergeUser>,
) -> ApiResult<axum::Json<MergeView>> {
    let into = path_id(&id, "user")?;
    let from = body.from_user_id;
    if from == into {
        return Err(ApiError::new(Code::Conflict, "a user cannot be merged into itself; pick two different users"));
    }
    let mut tx = state.store.begin().await?;
    let admins = tx.lock_active_admins().await?;
    let target = tx.get_user(into).await?;
    let source = tx.get_user(from).await.map_err(|err| match err {
        cortex_store::StoreError::NotFound { .. } => ApiError::not_found("user to merge (from_user_id)"),
        other => other.into(),
    })?;
    if target.disabled_at.is_some() {
        return Err(ApiError::new(
            Code::Conflict,
            format!("{} is disabled; merge into an enabled user, or enable them first", target.display_name),
        ));
    }
    if admins.contains(&from) && admins.len() <= 1 {
        return Err(ApiError::new(
            Code::Conflict,
            "the user to merge is the last enabled admin; make another user admin first",
        ));
    }
    let counts: MergeCounts = tx.merge_users(from, into).await?;
    let merged = tx.get_user(from).await?;
    tx.audit(principal.audit(
        "user.merge",
        "user",
        into,
        json!({
            "from_user_id": from,
            "from_display_name": source.display_name,
            "from_email": source.email,
            "channel_mappings": counts.channel_mappings,
            "login_identities": counts.login_identities,
            "grants": counts.grants,
            "grants_dropped": counts.grants_dropped,
            "access_requests_denied": counts.access_requests_denied,
            "sessions": counts.sessions,
            "web_sessions_ended": counts.web_sessions_ended,
        }),
    ))
    .await?;
    tx.commit().await?;
    Ok(axum::Json(MergeView {
        user: UserView::from(target),
        merged: UserView::from(merged),
        channel_mappings: counts.channel_mappings,
        login_identities: counts.login_identities,
        grants: counts.grants,
        grants_dropped: counts.grants_dropped,
        access_requests_denied: counts.access_requests_denied,
        sessions: counts.sessions,
    }))
}
