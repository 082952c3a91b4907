//! Authentication (SPEC §17.1–§17.2): every route except the public ones needs an API key in
//! `Authorization: Bearer …`. The result is a [`Principal`]; the minimum role of each route is declared
//! once where the route is registered ([`crate::guard`]).
//!
//! Wrong keys are counted per client address: after 20 in a minute the address gets 429 with
//! `Retry-After` for every attempt until its allowance refills ([`crate::rate_limit::FailedAuth`]).
//!
//! Keys are never read from the query string; a request that tries is refused, so keys do not end up
//! in proxy and access logs.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cortex_core::role::Role;
use cortex_store::audit::NewAudit;
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

/// Paths that need no credentials (SPEC §2.3).
pub fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
        || path.starts_with("/webhooks/")
        || path.starts_with("/auth/")
        || path == "/ui"
        || path.starts_with("/ui/")
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
        Ok(principal) => {
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
            next.run(request).await
        }
        Err(err) => {
            if let Some(address) = client.filter(|_| err.code == Code::Unauthorized) {
                state.auth_failures.failed(address);
            }
            err.into_response()
        }
    }
}

async fn resolve(state: &AppState, headers: &HeaderMap) -> ApiResult<Principal> {
    let presented = bearer_token(headers).ok_or_else(ApiError::unauthorized)?;
    let prefix = lookup_prefix(presented);
    let Some((key, hash)) = state.store.find_api_key(&prefix).await? else {
        return Err(ApiError::unauthorized());
    };
    if !cortex_core::api_key::verify(presented, &hash) || !key.is_active(state.store.clock().now()) {
        return Err(ApiError::unauthorized());
    }
    let store = state.store.clone();
    let (key_id, last_used) = (key.id, key.last_used_at);
    tokio::spawn(async move {
        if let Err(err) = store.touch_api_key(key_id, last_used).await {
            tracing::debug!(error = %err, "could not record key use");
        }
    });
    Ok(Principal {
        credential: Credential::ApiKey(key.id),
        user_id: key.user_id,
        role: key.role,
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
