//! Authentication (SPEC §17.1–§17.2, §11.1): every route except the public ones needs an API key in
//! `Authorization: Bearer …` or a dashboard session cookie (`cortex_session`). Both resolve to the same
//! [`Principal`]; the minimum role of each route is declared once where the route is registered
//! ([`crate::guard`]).
//!
//! Cookie-authenticated unsafe requests (POST/PUT/PATCH/DELETE) must also carry the session's
//! `X-CSRF-Token` and come from the server's own origin (SPEC Appendix B); otherwise 403 `csrf_failed`.
//! Dashboard pages answer a missing session with a redirect to the sign-in page instead of 401.
//!
//! Wrong keys are counted per client address: after 20 in a minute the address gets 429 with
//! `Retry-After` for every attempt until its allowance refills ([`crate::rate_limit::FailedAuth`]).
//!
//! A key belonging to a disabled user is refused like an unknown one, and a key acts with at most its
//! owner's current role (demoting a user demotes their keys).
//!
//! Keys are never read from the query string; a request that tries is refused, so keys do not end up
//! in proxy and access logs.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cortex_core::role::Role;
use cortex_store::audit::NewAudit;
use cortex_store::logins::WebSession;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult, Code};
use crate::rate_limit::Bucket;
use crate::state::AppState;

/// What a request authenticated with. An API key today; a dashboard session (SPEC §11.1) resolves to a
/// [`Principal`] the same way, so route guards, rate limits and audit entries need not tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Credential {
    ApiKey(Uuid),
    Session(Uuid),
}

impl Credential {
    /// The id of the key or session: what rate limits are counted against.
    pub fn id(self) -> Uuid {
        match self {
            Self::ApiKey(id) | Self::Session(id) => id,
        }
    }
}

/// The rate budget a principal draws from ([`crate::rate_limit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateBudget {
    /// Whose buckets: the key's own, its creator's for keys a non-admin made, or the session's.
    pub scope: Uuid,
    /// The key's own API limit, replacing the server-wide one.
    pub per_minute: Option<u32>,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub credential: Credential,
    pub user_id: Option<Uuid>,
    pub role: Role,
    /// The key's name or the session user's display name, for audit trails.
    pub name: String,
    pub budget: RateBudget,
}

impl Principal {
    /// The API key this request used, if it used one.
    pub fn key_id(&self) -> Option<Uuid> {
        match self.credential {
            Credential::ApiKey(id) => Some(id),
            Credential::Session(_) => None,
        }
    }

    /// Refuses with 403 unless the principal's role includes `role`. Routes declare their minimum role
    /// in [`crate::guard::Routes`]; handlers call this only for input-dependent escalations (`?purge=true`).
    pub fn require(&self, role: Role) -> ApiResult<()> {
        if self.role.includes(role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("this action needs the {role} role; this caller has {}", self.role)))
        }
    }

    /// `(actor_type, actor_id)` as the audit log records them (SPEC §3.1 `audit_log`).
    fn actor(&self) -> (&'static str, String) {
        match self.credential {
            Credential::ApiKey(id) => ("api_key", id.to_string()),
            // A dashboard session always belongs to a user; the session id is only a fallback.
            Credential::Session(id) => ("user", self.user_id.unwrap_or(id).to_string()),
        }
    }

    /// A short reference such as `api_key:<id>` for `created_by` fields.
    pub fn actor_ref(&self) -> String {
        let (kind, id) = self.actor();
        format!("{kind}:{id}")
    }

    /// The caller as a JSON object for audit trails that store actors as documents.
    pub fn actor_json(&self) -> serde_json::Value {
        let (kind, id) = self.actor();
        serde_json::json!({"type": kind, "id": id, "name": self.name, "role": self.role, "user_id": self.user_id})
    }

    /// An audit entry for an action this principal performed.
    pub fn audit(
        &self,
        action: &str,
        target_type: &'static str,
        target_id: impl ToString,
        details: serde_json::Value,
    ) -> NewAudit {
        let (actor_type, actor_id) = self.actor();
        NewAudit {
            actor_type,
            actor_id: Some(actor_id),
            action: action.to_owned(),
            target_type,
            target_id: Some(target_id.to_string()),
            details,
            ip: None,
            request_id: None,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().ok_or_else(ApiError::unauthorized)
    }
}

/// The dashboard session a request authenticated with, beside its [`Principal`]: what `/auth/session`,
/// logout and the pages need (CSRF token, session id).
#[derive(Debug, Clone)]
pub struct SessionContext {
    pub session: WebSession,
}

/// Paths that need no credentials (SPEC §2.3): health, webhooks, the sign-in endpoints needed before a
/// session exists, and the dashboard's sign-in pages and static files. Dashboard pages with data are not
/// public; they need a session like the API.
pub fn is_public(path: &str) -> bool {
    matches!(path, "/" | "/healthz" | "/readyz" | "/metrics" | "/auth/login" | "/auth/providers")
        || path == "/auth/provider-callback"
        || matches!(path, "/ui" | "/ui/login" | "/ui/setup")
        || path.starts_with("/webhooks/")
        || path.starts_with("/auth/login/")
        || path.starts_with("/auth/callback/")
        || path.starts_with("/ui/static/")
}

/// Dashboard pages: without a session they redirect to the sign-in page.
fn is_page(path: &str) -> bool {
    path.starts_with("/ui/")
}

/// Methods that change state and so need the CSRF token when a cookie authenticates them.
fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// Query parameter names that look like credentials.
const CREDENTIAL_PARAMS: &[&str] = &["api_key", "apikey", "key", "token", "access_token", "auth", "password"];

/// Middleware: resolves the bearer key into a [`Principal`] or answers 401.
pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if let Some(query) = request.uri().query()
        && query
            .split('&')
            .filter_map(|pair| pair.split('=').next())
            .any(|name| CREDENTIAL_PARAMS.iter().any(|credential| name.eq_ignore_ascii_case(credential)))
    {
        return ApiError::bad_request(
            "credentials are never accepted in the URL; send them in the Authorization header",
        )
        .into_response();
    }
    if is_public(request.uri().path()) {
        return next.run(request).await;
    }
    let client = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
    if let Some(retry_after) = client.and_then(|address| state.auth_failures.check(address).err()) {
        return ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                Code::RateLimited,
                format!("too many failed authentications from this address; retry in {retry_after} s"),
            )
        }
        .into_response();
    }
    match resolve(&state, request.headers()).await {
        Ok(Resolved { principal, session, refreshed_cookie }) => {
            if let Some(context) = &session
                && is_unsafe(request.method())
                && let Err(refusal) = check_csrf(&state, request.headers(), &context.session)
            {
                tracing::info!(path = %request.uri().path(), "refused: {}", refusal.message);
                return refusal.into_response();
            }
            let is_chat = request.method() == axum::http::Method::POST && request.uri().path().ends_with("/chat");
            let RateBudget { scope, per_minute } = principal.budget;
            let over = state
                .limiter
                .check(scope, Bucket::Api, per_minute)
                .err()
                .or_else(|| if is_chat { state.limiter.check(scope, Bucket::Chat, None).err() } else { None });
            if let Some(retry_after) = over {
                return ApiError {
                    retry_after: Some(retry_after),
                    ..ApiError::new(Code::RateLimited, format!("rate limit reached; retry in {retry_after} s"))
                }
                .into_response();
            }
            tracing::Span::current().record("principal", tracing::field::display(principal.credential.id()));
            request.extensions_mut().insert(principal);
            if let Some(context) = session {
                request.extensions_mut().insert(context);
            }
            let mut response = next.run(request).await;
            if let Some(cookie) = refreshed_cookie {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(_) if is_page(request.uri().path()) && !request.headers().contains_key("hx-request") => {
            let target = request.uri().path_and_query().map(|target| target.as_str()).unwrap_or("/ui/");
            let location = format!(
                "/ui/login?next={}",
                url::form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>()
            );
            crate::routes::ui::see_other(&location)
        }
        Err(err) => {
            if let Some(address) = client.filter(|_| err.code == Code::Unauthorized) {
                state.auth_failures.failed(address);
            }
            err.into_response()
        }
    }
}

/// What authentication found.
struct Resolved {
    principal: Principal,
    session: Option<SessionContext>,
    /// A `Set-Cookie` extending the session cookie after its server-side expiry slid.
    refreshed_cookie: Option<HeaderValue>,
}

async fn resolve(state: &AppState, headers: &HeaderMap) -> ApiResult<Resolved> {
    match bearer_token(headers) {
        Some(presented) => {
            let principal = resolve_key(state, presented).await?;
            Ok(Resolved { principal, session: None, refreshed_cookie: None })
        }
        None => resolve_session(state, headers).await,
    }
}

/// The session named by the request's `cortex_session` cookie, extended when due (7-day sliding TTL).
async fn resolve_session(state: &AppState, headers: &HeaderMap) -> ApiResult<Resolved> {
    let token = session_token(headers).ok_or_else(ApiError::unauthorized)?;
    let Some((session, user)) = state.store.find_web_session(&cortex_auth::token::hash(token)).await? else {
        return Err(ApiError::unauthorized());
    };
    if user.disabled_at.is_some() || user.role == Role::None {
        return Err(ApiError::unauthorized());
    }
    let policy = state.config.dashboard.session;
    let now = state.store.clock().now();
    let mut refreshed_cookie = None;
    if policy.needs_extension(session.last_active_at, now) {
        let mut tx = state.store.begin().await?;
        tx.extend_web_session(session.id, policy.expires_at(now)).await?;
        tx.commit().await?;
        let cookie =
            cortex_auth::cookie::session(token, state.config.dashboard.secure_cookie(), policy.ttl.num_seconds());
        refreshed_cookie = HeaderValue::from_str(&cookie).ok();
    }
    let principal = Principal {
        credential: Credential::Session(session.id),
        user_id: Some(user.id),
        role: user.role,
        name: user.display_name,
        budget: RateBudget { scope: session.id, per_minute: None },
    };
    Ok(Resolved { principal, session: Some(SessionContext { session }), refreshed_cookie })
}

/// The session token in the request's cookies, if any.
pub fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(cortex_auth::cookie::read_session)
}

/// Refuses a cookie-authenticated unsafe request without the session's CSRF token or from another origin.
fn check_csrf(state: &AppState, headers: &HeaderMap, session: &WebSession) -> ApiResult<()> {
    if !is_same_origin(state, headers) {
        return Err(ApiError::new(
            Code::CsrfFailed,
            "cross-site request refused: a signed-in browser may change things only from this server's own pages",
        ));
    }
    let presented = headers.get("x-csrf-token").and_then(|value| value.to_str().ok()).unwrap_or_default();
    if !cortex_auth::token::matches(presented, &session.csrf_token) {
        return Err(ApiError::new(
            Code::CsrfFailed,
            "missing or wrong X-CSRF-Token; reload the page (GET /auth/session returns the token)",
        ));
    }
    Ok(())
}

/// Whether a browser request came from this server's own origin or `CORTEX_PUBLIC_URL` (SPEC Appendix B).
pub fn is_same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    let text = |name: header::HeaderName| headers.get(name).and_then(|value| value.to_str().ok());
    let request = cortex_auth::origin::RequestOrigin {
        origin: text(header::ORIGIN),
        sec_fetch_site: headers.get("sec-fetch-site").and_then(|value| value.to_str().ok()),
        host: text(header::HOST),
    };
    cortex_auth::origin::is_same_origin(request, state.config.dashboard.public_url.as_ref())
}

async fn resolve_key(state: &AppState, presented: &str) -> ApiResult<Principal> {
    let prefix = lookup_prefix(presented);
    let Some(found) = state.store.find_api_key(&prefix).await? else {
        return Err(ApiError::unauthorized());
    };
    let key = found.key;
    if !cortex_core::api_key::verify(presented, &found.hash) || !key.is_active(state.store.clock().now()) {
        return Err(ApiError::unauthorized());
    }
    // A disabled user's keys stop working; a demoted user's keys act with at most the user's new role.
    let role = match found.owner {
        Some((_, true)) => return Err(ApiError::unauthorized()),
        Some((owner_role, false)) if !owner_role.includes(key.role) => owner_role,
        _ => key.role,
    };
    // Recorded at most once a minute; a task is started only when it is due (most requests skip it).
    if state.store.api_key_touch_due(key.last_used_at) {
        let store = state.store.clone();
        let (key_id, last_used) = (key.id, key.last_used_at);
        tokio::spawn(async move {
            if let Err(err) = store.touch_api_key(key_id, last_used).await {
                tracing::debug!(error = %err, "could not record key use");
            }
        });
    }
    Ok(Principal {
        credential: Credential::ApiKey(key.id),
        user_id: key.user_id,
        role,
        name: key.name,
        budget: RateBudget { scope: key.rate_scope_id, per_minute: key.rate_limit_per_minute },
    })
}

/// The lookup prefix of any presented key: ours carry it; other strong secrets (a bootstrap key chosen
/// by the operator) are found by a prefix of their hash.
pub fn lookup_prefix(key: &str) -> String {
    match cortex_core::api_key::prefix_of(key) {
        Some(prefix) => prefix.to_owned(),
        None => format!("h{}", &cortex_core::api_key::hash(key)[..7]),
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// Refuses cross-site browser connections to streaming endpoints (SSE, WebSocket): a request carrying an
/// `Origin` must come from this server's own origin or one listed in the configuration.
pub fn check_origin(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|value| value.to_str().ok()) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|value| value.to_str().ok()).unwrap_or_default();
    let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or(origin);
    if origin_host.eq_ignore_ascii_case(host) || state.config.allowed_origins.iter().any(|allowed| allowed == origin) {
        Ok(())
    } else {
        Err(ApiError::new(Code::Forbidden, format!("origin {origin} may not open streams on this server")))
    }
}
