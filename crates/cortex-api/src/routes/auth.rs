//! Dashboard sign-in over the API (SPEC §2.4 "Identity", Appendix B "Local users"): `POST /auth/login`
//! with email and password sets the `cortex_session` cookie; `GET /auth/session` tells who is signed in
//! and the CSRF token; `POST /auth/logout` ends this session, `POST /auth/logout-all` every session of
//! the user. The dashboard's own forms use the same functions ([`password_login`], [`start_session`]).
//!
//! Failed logins are counted per client address and per account; at 10 within 15 minutes every attempt
//! is answered 429 with `Retry-After`, even one with the right password.

use std::net::SocketAddr;

use crate::guard::routes;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cortex_auth::throttle::{Decision, Failures};
use cortex_core::role::Role;
use cortex_store::logins::{FailureCount, NewWebSession, WebSession};
use cortex_store::users::User;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Principal, SessionContext};
use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::extract::Json;
use crate::guard::Routes;
use crate::state::AppState;

pub fn routes() -> Routes {
    Routes::new()
        .public(routes!(login))
        .viewer(routes!(current_session))
        .viewer(routes!(logout))
        .viewer(routes!(logout_all))
}

/// Where a request came from, for throttling and the session record.
pub struct ClientMeta {
    pub ip: String,
    pub user_agent: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ClientMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(address)| address.ip().to_string())
            .unwrap_or_else(|| "unknown".into());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(|agent| agent.chars().take(300).collect());
        Ok(Self { ip, user_agent })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionUser {
    pub id: String,
    pub display_name: String,
    pub email: Option<String>,
}

/// Who is signed in, and the token unsafe requests must echo in `X-CSRF-Token`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub user: SessionUser,
    pub role: Role,
    /// `null` when the request authenticated with an API key (keys need no CSRF token).
    pub csrf_token: Option<String>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

fn session_view(user: &User, session: Option<&WebSession>) -> SessionView {
    SessionView {
        user: SessionUser {
            id: user.id.to_string(),
            display_name: user.display_name.clone(),
            email: user.email.clone(),
        },
        role: user.role,
        csrf_token: session.map(|session| session.csrf_token.clone()),
        expires_at: session.map(|session| session.expires_at),
    }
}

/// Emails are compared trimmed and lowercased.
pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn failures(count: FailureCount) -> Failures {
    Failures { count: count.count, oldest: count.oldest }
}

/// Refuses with 429 while the address or the account has too many recent failures.
pub(crate) async fn check_throttle(state: &AppState, ip: &str, account: &str) -> ApiResult<()> {
    let throttle = state.config.dashboard.throttle;
    let now = state.store.clock().now();
    let (by_ip, by_account) = state.store.login_failures(ip, account, throttle.window_start(now)).await?;
    match throttle.decide(now, failures(by_ip), failures(by_account)) {
        Decision::Allow => Ok(()),
        Decision::Refuse { retry_after_seconds } => Err(ApiError {
            retry_after: Some(retry_after_seconds),
            ..ApiError::new(
                Code::RateLimited,
                format!("too many failed sign-ins; try again in {} minute(s)", retry_after_seconds.div_ceil(60)),
            )
        }),
    }
}

/// Counts a failed attempt against the address and the account.
pub(crate) async fn record_failure(state: &AppState, ip: &str, account: &str) -> ApiResult<()> {
    let now = state.store.clock().now();
    let mut tx = state.store.begin().await?;
    tx.record_login_failure(ip, account, state.config.dashboard.throttle.window_start(now)).await?;
    tx.commit().await?;
    Ok(())
}

/// Checks an email and password (throttled). The user on success; 401 with one sentence for every kind
/// of failure, so the answer does not tell which part was wrong.
pub async fn password_login(state: &AppState, meta: &ClientMeta, email: &str, password: &str) -> ApiResult<User> {
    let account = normalise_email(email);
    check_throttle(state, &meta.ip, &account).await?;
    let found = state.store.find_login_user(&account).await?;
    let password = password.to_owned();
    let verified = tokio::task::spawn_blocking(move || match found {
        Some((user, Some(hash))) if cortex_auth::password::verify(&password, &hash) => Some(user),
        Some((_, Some(_))) => None,
        _ => {
            cortex_auth::password::verify_nothing(&password);
            None
        }
    })
    .await
    .map_err(|err| ApiError::new(Code::Internal, format!("password check failed: {err}")))?;
    match verified {
        Some(user) if user.disabled_at.is_none() && user.role != Role::None => Ok(user),
        _ => {
            record_failure(state, &meta.ip, &account).await?;
            Err(ApiError::new(Code::Unauthorized, "the email or password is wrong"))
        }
    }
}

/// Opens a session for `user`: stores the hash of a fresh 256-bit id, audits the sign-in, and returns the
/// session with the `Set-Cookie` value that carries the id.
pub async fn start_session(
    state: &AppState,
    meta: &ClientMeta,
    user: &User,
    method: &str,
) -> ApiResult<(WebSession, HeaderValue)> {
    let token = cortex_auth::token::SessionToken::generate();
    let policy = state.config.dashboard.session;
    let new = NewWebSession {
        token_hash: token.hash,
        user_id: user.id,
        csrf_token: cortex_auth::token::csrf_token(),
        expires_at: policy.expires_at(state.store.clock().now()),
        ip: Some(meta.ip.clone()),
        user_agent: meta.user_agent.clone(),
    };
    let mut tx = state.store.begin().await?;
    let session = tx.insert_web_session(&new).await?;
    tx.audit(cortex_store::audit::NewAudit {
        actor_type: "user",
        actor_id: Some(user.id.to_string()),
        action: "auth.login".into(),
        target_type: "web_session",
        target_id: Some(session.id.to_string()),
        details: serde_json::json!({"method": method, "user_agent": meta.user_agent}),
        ip: Some(meta.ip.clone()),
        request_id: None,
    })
    .await?;
    tx.commit().await?;
    let cookie = cortex_auth::cookie::session(
        &token.plaintext,
        state.config.dashboard.secure_cookie(),
        policy.ttl.num_seconds(),
    );
    let cookie = HeaderValue::from_str(&cookie).map_err(|err| ApiError::new(Code::Internal, err.to_string()))?;
    Ok((session, cookie))
}

/// The `Set-Cookie` value that removes the session cookie.
pub(crate) fn clearing_cookie(state: &AppState) -> HeaderValue {
    HeaderValue::from_str(&cortex_auth::cookie::clear(state.config.dashboard.secure_cookie()))
        .unwrap_or_else(|_| HeaderValue::from_static("cortex_session=; Path=/; Max-Age=0"))
}

/// Sign in with email and password; sets the `cortex_session` cookie.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest, responses(
    (status = 200, body = SessionView, description = "Signed in; the response sets the `cortex_session` cookie"),
    (status = 401, body = ErrorBody, description = "Wrong email or password"),
    (status = 403, body = ErrorBody, description = "Cross-site request (`csrf_failed`)"),
    (status = 429, body = ErrorBody, description = "Too many failed attempts for this address or account")))]
async fn login(
    State(state): State<AppState>,
    meta: ClientMeta,
    headers: axum::http::HeaderMap,
    Json(body): Json<LoginRequest>,
) -> ApiResult<Response> {
    // Login CSRF: a browser on another site must not sign the user into an account of the attacker.
    if headers.contains_key(header::ORIGIN) && !crate::auth::is_same_origin(&state, &headers) {
        return Err(ApiError::new(Code::CsrfFailed, "cross-site sign-in refused"));
    }
    let user = password_login(&state, &meta, &body.email, &body.password).await?;
    let (session, cookie) = start_session(&state, &meta, &user, "password").await?;
    let mut response = axum::Json(session_view(&user, Some(&session))).into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}

/// Who is signed in, with the CSRF token for unsafe requests.
#[utoipa::path(get, path = "/auth/session", tag = "auth", responses((status = 200, body = SessionView)))]
async fn current_session(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<axum::Extension<SessionContext>>,
) -> ApiResult<axum::Json<SessionView>> {
    let user_id = principal.user_id.ok_or_else(|| ApiError::not_found("user of this key"))?;
    let user = state.store.get_user(user_id).await?;
    Ok(axum::Json(session_view(&user, session.as_ref().map(|context| &context.session))))
}

/// The session of a request, or 400 when it authenticated with an API key.
fn require_session(session: Option<axum::Extension<SessionContext>>) -> ApiResult<WebSession> {
    session.map(|axum::Extension(context)| context.session).ok_or_else(|| {
        ApiError::bad_request("this request used an API key, not a dashboard session; revoke keys at /api-keys")
    })
}

/// End this dashboard session; its cookie stops working at once.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", responses(
    (status = 204, description = "Signed out; the cookie is cleared"),
    (status = 400, body = ErrorBody, description = "The request used an API key")))]
async fn logout(
    State(state): State<AppState>,
    principal: Principal,
    meta: ClientMeta,
    session: Option<axum::Extension<SessionContext>>,
) -> ApiResult<Response> {
    let session = require_session(session)?;
    let mut tx = state.store.begin().await?;
    tx.delete_web_session(session.id).await?;
    let mut audit = principal.audit("auth.logout", "web_session", session.id, serde_json::json!({}));
    audit.ip = Some(meta.ip);
    tx.audit(audit).await?;
    tx.commit().await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().append(header::SET_COOKIE, clearing_cookie(&state));
    Ok(response)
}

/// End every dashboard session of the signed-in user, on every device.
#[utoipa::path(post, path = "/auth/logout-all", tag = "auth", responses(
    (status = 204, description = "Every session of the user ended; the cookie is cleared"),
    (status = 400, body = ErrorBody, description = "The request used an API key")))]
async fn logout_all(
    State(state): State<AppState>,
    principal: Principal,
    meta: ClientMeta,
    session: Option<axum::Extension<SessionContext>>,
) -> ApiResult<Response> {
    let session = require_session(session)?;
    let mut tx = state.store.begin().await?;
    let ended = tx.delete_user_web_sessions(session.user_id).await?;
    let mut audit = principal.audit("auth.logout_all", "user", session.user_id, serde_json::json!({"sessions": ended}));
    audit.ip = Some(meta.ip);
    tx.audit(audit).await?;
    tx.commit().await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().append(header::SET_COOKIE, clearing_cookie(&state));
    Ok(response)
}
