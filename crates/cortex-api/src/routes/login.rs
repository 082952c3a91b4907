//! Sign-in through GitHub, Google and OpenID Connect providers (SPEC §2.4 "Identity", §11.1, Appendix B
//! "Login providers"), and their management at `/settings/login-providers` [admin].
//!
//! The browser flow:
//! 1. `GET /auth/login/{provider}` stores an `oauth_state` row (hash of a random `state`, the PKCE
//!    verifier encrypted, the OIDC nonce, where to go afterwards; 10 minutes, single use), sets the
//!    short-lived `cortex_oauth_state` cookie to the same `state`, and redirects to the provider.
//! 2. `GET /auth/callback/{provider}?code&state` requires the cookie to equal `state` (so a callback
//!    link made by someone else cannot sign this browser into *their* account), consumes the row, lets
//!    [`cortex_auth::oauth::finish`] verify the provider's answer, maps it to a user
//!    ([`crate::login::user_for`]) and opens a session exactly like password sign-in
//!    ([`crate::routes::auth::start_session`]).
//!
//! Failures of the browser flow answer the sign-in page with the reason in words and a 4xx status
//! (502-class provider outages are 422 `provider_unavailable` in words too); never a 5xx for what a
//! provider or a browser sent.
//!
//! Client secrets are write-only: encrypted for their row, never returned (`client_secret_set` says
//! whether one is stored). Environment-configured providers are listed with `source: "env"` and are
//! read-only (409 naming the variables).

use crate::guard::routes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use cortex_auth::oauth::{self, Kind, OAuthError};
use cortex_core::role::Role;
use cortex_store::login_providers::{LoginProviderRow, OAuthState, client_secret_ref, pkce_verifier_ref};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::extract::{self, Json, PageParams};
use crate::guard::Routes;
use crate::limits::{self, Fields, Text};
use crate::login::{self, ActiveProvider};
use crate::routes::auth::{ClientMeta, start_session};
use crate::state::AppState;
use crate::views::List;

/// The cookie that binds a sign-in in progress to the browser that started it.
const STATE_COOKIE: &str = "cortex_oauth_state";
/// How long a started sign-in may be completed (SPEC §3.1 `oauth_state`).
const STATE_TTL: chrono::Duration = chrono::Duration::minutes(10);
/// Longest client id and client secret accepted.
const CLIENT_ID_MAX: usize = 512;
const CLIENT_SECRET_MAX: usize = 2_048;

pub fn routes() -> Routes {
    Routes::new()
        .public(routes!(list_enabled))
        .public(routes!(start_login))
        .public(routes!(callback))
        .admin(routes!(list_settings, put_provider))
        .admin(routes!(delete_provider))
}

fn parse_kind(provider: &str) -> ApiResult<Kind> {
    Kind::parse(provider).ok_or_else(|| ApiError::not_found("login provider (github, google or oidc)"))
}

/// A sign-in button.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderLink {
    /// `github`, `google` or `oidc`.
    pub provider: String,
    /// Button label.
    pub name: String,
    /// Where the button leads (`/auth/login/{provider}`).
    pub login_url: String,
}

/// The enabled login providers, for a sign-in page.
#[utoipa::path(get, path = "/auth/providers", tag = "auth", params(PageParams), responses(
    (status = 200, body = List<ProviderLink>), (status = 400, body = ErrorBody)))]
async fn list_enabled(
    State(state): State<AppState>,
    extract::Query(page): extract::Query<PageParams>,
) -> ApiResult<axum::Json<List<ProviderLink>>> {
    let items = login::enabled_providers(&state)
        .await?
        .into_iter()
        .map(|provider| ProviderLink {
            provider: provider.kind().as_str().to_owned(),
            login_url: format!("/auth/login/{}", provider.kind().as_str()),
            name: provider.label,
        })
        .collect();
    Ok(axum::Json(List::from_all(items, &page, |link| link.provider.clone())?))
}

/// The URL the provider sends the browser back to: `{CORTEX_PUBLIC_URL or own origin}/auth/callback/{p}`.
fn callback_url(state: &AppState, headers: &HeaderMap, kind: Kind) -> ApiResult<String> {
    let base = match &state.config.dashboard.public_url {
        Some(public) => public.as_str().trim_end_matches('/').to_owned(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|value| value.to_str().ok())
                .filter(|host| !host.is_empty() && host.chars().all(|c| c.is_ascii_graphic()))
                .ok_or_else(|| ApiError::bad_request("no Host header; set CORTEX_PUBLIC_URL"))?;
            format!("http://{host}")
        }
    };
    Ok(format!("{base}/auth/callback/{}", kind.as_str()))
}

fn state_cookie(state: &AppState, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.config.dashboard.secure_cookie() { "; Secure" } else { "" };
    let cookie =
        format!("{STATE_COOKIE}={value}; Path=/auth/callback/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}");
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("cortex_oauth_state=; Max-Age=0"))
}

fn presented_state_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == STATE_COOKIE)
        .map(|(_, value)| value.trim())
}

/// The sign-in page with an error, for failures of the browser flow.
fn refused_page(state: &AppState, status: StatusCode, message: &str) -> Response {
    let page = cortex_ui::views::LoginPage {
        error: Some(message.to_owned()),
        notice: None,
        email: String::new(),
        next: "/ui/".into(),
        setup_open: false,
        providers: Vec::new(),
    };
    let mut response = match cortex_ui::Template::render(&page) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(_) => (status, message.to_owned()).into_response(),
    };
    response.headers_mut().append(header::SET_COOKIE, state_cookie(state, "", 0));
    response
}

fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default();
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

/// A failure of the browser flow as a page: status from the error's code, message in words.
fn page_for(state: &AppState, err: ApiError) -> Response {
    if err.code == Code::Internal {
        tracing::error!(message = %err.message, "provider sign-in failed");
        return refused_page(
            state,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Signing in failed on the server; the log has the details.",
        );
    }
    refused_page(state, err.code.status(), &sentence(&err.message))
}

fn oauth_error(provider: &ActiveProvider, err: OAuthError) -> ApiError {
    match err {
        OAuthError::Refused(reason) => {
            ApiError::new(Code::Unauthorized, format!("{} sign-in refused: {reason}", provider.label))
        }
        OAuthError::Token(reason) => {
            ApiError::new(Code::Unauthorized, format!("{} sign-in refused: {reason}", provider.label))
        }
        OAuthError::Provider(reason) => ApiError::new(
            Code::ProviderUnavailable,
            format!("{} cannot be used for signing in right now: {reason}", provider.label),
        ),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StartParams {
    /// Dashboard path to open after signing in (only `/ui/…` paths are followed).
    pub next: Option<String>,
}

/// Redirect to the provider's sign-in (authorization code with PKCE; `state` and, for OIDC, `nonce`).
#[utoipa::path(get, path = "/auth/login/{provider}", tag = "auth",
    params(("provider" = String, Path, description = "`github`, `google` or `oidc`"), StartParams),
    responses((status = 303, description = "To the provider; sets the short-lived `cortex_oauth_state` cookie. \
        Failures answer the sign-in page (HTML) with the reason: 404 no enabled provider of this type, 422 the \
        provider cannot be reached or is misconfigured.")))]
async fn start_login(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    Query(params): Query<StartParams>,
    headers: HeaderMap,
) -> Response {
    match start(&state, &provider, params.next.as_deref(), &headers).await {
        Ok(response) => response,
        Err(err) => page_for(&state, err),
    }
}

async fn start(state: &AppState, provider: &str, next: Option<&str>, headers: &HeaderMap) -> ApiResult<Response> {
    let kind = parse_kind(provider)?;
    let provider = login::provider(state, kind)
        .await?
        .filter(|provider| provider.enabled)
        .ok_or_else(|| ApiError::not_found(&format!("enabled {} sign-in", kind.default_label())))?;
    let redirect_uri = callback_url(state, headers, kind)?;
    let begun = oauth::begin(login::http(), &provider.settings, &redirect_uri)
        .await
        .map_err(|err| oauth_error(&provider, err))?;
    let id = cortex_core::new_id();
    let row = OAuthState {
        id,
        state_hash: cortex_auth::token::hash(&begun.state),
        provider: kind.as_str().to_owned(),
        pkce_verifier: Some(state.cipher.encrypt(&pkce_verifier_ref(id), begun.verifier.as_bytes())),
        nonce: begun.nonce.clone(),
        redirect_to: crate::routes::ui::safe_next(next),
        expires_at_ms: (state.store.clock().now() + STATE_TTL).timestamp_millis(),
    };
    let mut tx = state.store.begin().await?;
    tx.insert_oauth_state(&row).await?;
    tx.commit().await?;
    let mut response = crate::routes::ui::see_other(&begun.authorize_url);
    response.headers_mut().append(header::SET_COOKIE, state_cookie(state, &begun.state, STATE_TTL.num_seconds()));
    Ok(response)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    /// Set by the provider when the user declined or the request was invalid.
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// Where the provider sends the browser back: verifies the answer and opens a dashboard session.
#[utoipa::path(get, path = "/auth/callback/{provider}", tag = "auth",
    params(("provider" = String, Path, description = "`github`, `google` or `oidc`"), CallbackParams),
    responses((status = 303, description = "Signed in: sets `cortex_session` and opens the dashboard. Failures \
        answer the sign-in page (HTML) with the reason: 400 unknown, used, expired or foreign `state`; 401 the \
        provider's answer failed verification or the email is not verified; 403 no account for this email and \
        auto-signup is off, or the account is disabled; 422 the provider cannot be reached.")))]
async fn callback(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    Query(params): Query<CallbackParams>,
    meta: ClientMeta,
    headers: HeaderMap,
) -> Response {
    match complete(&state, &provider, &params, &meta, &headers).await {
        Ok(response) => response,
        Err(err) => {
            tracing::info!(provider, reason = %err.message, "provider sign-in refused");
            page_for(&state, err)
        }
    }
}

async fn complete(
    state: &AppState,
    provider: &str,
    params: &CallbackParams,
    meta: &ClientMeta,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let kind = parse_kind(provider)?;
    let presented = params.state.as_deref().filter(|value| !value.is_empty()).ok_or_else(|| {
        ApiError::bad_request("the provider's answer has no state; start signing in again from the sign-in page")
    })?;
    let in_browser = presented_state_cookie(headers).unwrap_or_default();
    if !cortex_auth::token::matches(presented, in_browser) {
        return Err(ApiError::bad_request(
            "this sign-in was not started in this browser (or took longer than 10 minutes); start it again",
        ));
    }
    let mut tx = state.store.begin().await?;
    let pending = tx.take_oauth_state(&cortex_auth::token::hash(presented)).await?;
    tx.commit().await?;
    let pending = pending
        .ok_or_else(|| ApiError::bad_request("this sign-in is unknown or was already used; start signing in again"))?;
    if pending.provider != kind.as_str() {
        return Err(ApiError::bad_request("this sign-in was started for another provider; start it again"));
    }
    if pending.expires_at() < state.store.clock().now() {
        return Err(ApiError::bad_request("this sign-in took longer than 10 minutes; start it again"));
    }
    let provider = login::provider(state, kind)
        .await?
        .filter(|provider| provider.enabled)
        .ok_or_else(|| ApiError::not_found(&format!("enabled {} sign-in", kind.default_label())))?;
    if let Some(error) = &params.error {
        let reason = params.error_description.as_deref().unwrap_or(error);
        let reason: String = reason.chars().filter(|c| !c.is_control()).take(200).collect();
        return Err(ApiError::new(Code::Unauthorized, format!("{} did not sign you in: {reason}", provider.label)));
    }
    let code = params
        .code
        .as_deref()
        .filter(|code| !code.is_empty())
        .ok_or_else(|| ApiError::bad_request("the provider's answer has no code; start signing in again"))?;
    let verifier = pending
        .pkce_verifier
        .as_deref()
        .and_then(|stored| state.cipher.decrypt(&pkce_verifier_ref(pending.id), stored).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| ApiError::new(Code::Internal, "the stored sign-in cannot be read"))?;
    let redirect_uri = callback_url(state, headers, kind)?;
    let callback = oauth::Callback {
        code,
        verifier: &verifier,
        nonce: pending.nonce.as_deref(),
        redirect_uri: &redirect_uri,
        now: state.store.clock().now().timestamp(),
    };
    let identity =
        oauth::finish(login::http(), &provider.settings, callback).await.map_err(|err| oauth_error(&provider, err))?;
    let user = login::user_for(state, &provider, &identity, &meta.ip).await?;
    let (_, cookie) = start_session(state, meta, &user, &format!("oauth:{}", kind.as_str())).await?;
    let mut response = crate::routes::ui::see_other(&pending.redirect_to);
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response.headers_mut().append(header::SET_COOKIE, state_cookie(state, "", 0));
    Ok(response)
}

/// A login provider as admins see it; the client secret is never returned.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginProviderView {
    /// `github`, `google` or `oidc`.
    pub provider: String,
    /// Button label.
    pub display_name: String,
    pub client_id: String,
    /// Whether a client secret is stored (it is never shown).
    pub client_secret_set: bool,
    pub issuer_url: Option<String>,
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    pub userinfo_url: Option<String>,
    pub api_url: Option<String>,
    pub auto_signup: bool,
    /// Role of users created by auto-signup.
    pub signup_role: Role,
    pub enabled: bool,
    /// `env` (read-only; change the environment) or `api`.
    pub source: String,
    pub updated_at: Option<DateTime<Utc>>,
}

fn view(provider: &ActiveProvider, updated_at: Option<DateTime<Utc>>) -> LoginProviderView {
    let settings = &provider.settings;
    LoginProviderView {
        provider: settings.kind.as_str().to_owned(),
        display_name: provider.label.clone(),
        client_id: settings.client_id.clone(),
        client_secret_set: !settings.client_secret.is_empty(),
        issuer_url: settings.issuer().map(str::to_owned),
        authorize_url: settings.authorize_url.clone(),
        token_url: settings.token_url.clone(),
        userinfo_url: settings.userinfo_url.clone(),
        api_url: settings.api_url.clone(),
        auto_signup: provider.auto_signup,
        signup_role: provider.signup_role,
        enabled: provider.enabled,
        source: provider.source.to_owned(),
        updated_at,
    }
}

/// Every configured login provider (environment and stored), enabled or not.
pub(crate) async fn configured(state: &AppState) -> ApiResult<Vec<LoginProviderView>> {
    let rows = state.store.list_login_providers().await?;
    let mut views = Vec::new();
    for kind in Kind::ALL {
        let row = rows.iter().find(|row| row.provider == kind.as_str());
        if let Some(provider) = login::provider(state, kind).await? {
            let updated_at = if provider.source == "api" { row.map(|row| row.updated_at) } else { None };
            views.push(view(&provider, updated_at));
        }
    }
    Ok(views)
}

/// The login providers (client secrets never included).
#[utoipa::path(get, path = "/settings/login-providers", tag = "settings", params(PageParams),
    responses((status = 200, body = List<LoginProviderView>), (status = 400, body = ErrorBody)))]
async fn list_settings(
    State(state): State<AppState>,
    extract::Query(page): extract::Query<PageParams>,
) -> ApiResult<axum::Json<List<LoginProviderView>>> {
    Ok(axum::Json(List::from_all(configured(&state).await?, &page, |view| view.provider.clone())?))
}

/// A login provider to create or replace.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutLoginProvider {
    /// `github`, `google` or `oidc`.
    pub provider: String,
    #[schema(max_length = 512)]
    pub client_id: String,
    /// Required when creating; omit to keep the stored one. Write-only.
    #[schema(max_length = 2048)]
    pub client_secret: Option<String>,
    /// Button label (default GitHub / Google / Single sign-on).
    #[schema(max_length = 100)]
    pub display_name: Option<String>,
    /// OIDC issuer (required for `oidc`; `google` defaults to https://accounts.google.com).
    pub issuer_url: Option<String>,
    /// Overrides discovery (OIDC) or GitHub's `https://github.com/login/oauth/authorize`.
    pub authorize_url: Option<String>,
    /// Overrides discovery (OIDC) or GitHub's `https://github.com/login/oauth/access_token`.
    pub token_url: Option<String>,
    /// Overrides discovery (OIDC).
    pub userinfo_url: Option<String>,
    /// GitHub's API base (default https://api.github.com; GitHub Enterprise: `https://HOST/api/v3`).
    pub api_url: Option<String>,
    /// Create users for unknown verified emails (default false).
    #[serde(default)]
    pub auto_signup: bool,
    /// Role of users created by auto-signup (default viewer).
    pub signup_role: Option<Role>,
    /// Default true.
    pub enabled: Option<bool>,
}

pub(crate) fn env_variables(kind: Kind) -> &'static str {
    match kind {
        Kind::Github => "CORTEX_OAUTH_GITHUB_*",
        Kind::Google => "CORTEX_OAUTH_GOOGLE_*",
        Kind::Oidc => "CORTEX_OIDC_*",
    }
}

/// Create or replace the login provider of `provider`'s type.
#[utoipa::path(put, path = "/settings/login-providers", tag = "settings", request_body = PutLoginProvider,
    responses(
        (status = 201, body = LoginProviderView, description = "Created"),
        (status = 200, body = LoginProviderView, description = "Replaced"),
        (status = 400, body = ErrorBody, description = "A field is invalid (`validation_failed` names it)"),
        (status = 409, body = ErrorBody, description = "The provider is configured by the environment")))]
async fn put_provider(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<PutLoginProvider>,
) -> ApiResult<Response> {
    let kind = Kind::parse(&body.provider)
        .ok_or_else(|| ApiError::validation(&[("provider", "must be github, google or oidc".to_owned())]))?;
    if login::env_provider(&state, kind).is_some() {
        return Err(ApiError::new(
            Code::Conflict,
            format!(
                "{} sign-in is configured by the environment ({}); change it there",
                kind.default_label(),
                env_variables(kind)
            ),
        ));
    }
    let mut fields = Fields::default();
    fields
        .text("client_id", &body.client_id, CLIENT_ID_MAX, Text::Name)
        .optional("client_secret", body.client_secret.as_deref(), CLIENT_SECRET_MAX, Text::Name)
        .optional("display_name", body.display_name.as_deref(), limits::NAME, Text::Name);
    if body.client_id.trim().is_empty() {
        fields.0.push(("client_id", "must not be empty".into()));
    }
    let urls = [
        ("issuer_url", &body.issuer_url),
        ("authorize_url", &body.authorize_url),
        ("token_url", &body.token_url),
        ("userinfo_url", &body.userinfo_url),
        ("api_url", &body.api_url),
    ];
    for (field, value) in urls {
        if let Some(value) = value {
            fields.text(field, value, limits::URL, Text::Name);
            if !login::is_http_url(value) {
                fields.0.push((field, "must be an http:// or https:// URL with a host".into()));
            }
        }
    }
    if kind == Kind::Oidc && body.issuer_url.is_none() {
        fields.0.push(("issuer_url", "is required for an OpenID Connect provider".into()));
    }
    if kind == Kind::Github && body.issuer_url.is_some() {
        fields.0.push((
            "issuer_url",
            "GitHub is not an OpenID Connect issuer; set authorize_url, token_url and api_url".into(),
        ));
    }
    let signup_role = body.signup_role.unwrap_or(Role::Viewer);
    if signup_role == Role::None {
        fields.0.push(("signup_role", "must be viewer, operator, approver or admin (role none cannot sign in)".into()));
    }
    let existing = state.store.login_provider(kind.as_str()).await?;
    let id = existing.as_ref().map_or_else(cortex_core::new_id, |row| row.id);
    let secret = body.client_secret.as_deref().filter(|secret| !secret.is_empty());
    let client_secret_enc = match (secret, &existing) {
        (Some(secret), _) => Some(state.cipher.encrypt(&client_secret_ref(id), secret.as_bytes())),
        (None, Some(row)) if row.client_secret_enc.is_some() => row.client_secret_enc.clone(),
        (None, _) => {
            fields.0.push(("client_secret", "is required when adding a provider".into()));
            None
        }
    };
    if !fields.is_empty() {
        return Err(ApiError::validation(&fields.0));
    }
    let trimmed = |value: &Option<String>| value.as_deref().map(|url| url.trim_end_matches('/').to_owned());
    let row = LoginProviderRow {
        id,
        provider: kind.as_str().to_owned(),
        display_name: body.display_name.clone().filter(|name| !name.trim().is_empty()),
        client_id: body.client_id.trim().to_owned(),
        client_secret_enc,
        issuer_url: trimmed(&body.issuer_url),
        authorize_url: body.authorize_url.clone(),
        token_url: body.token_url.clone(),
        userinfo_url: body.userinfo_url.clone(),
        api_url: trimmed(&body.api_url),
        auto_signup: body.auto_signup,
        signup_role,
        enabled: body.enabled.unwrap_or(true),
        created_at: state.store.clock().now(),
        updated_at: state.store.clock().now(),
    };
    let mut tx = state.store.begin().await?;
    let created = tx.put_login_provider(&row).await?;
    tx.audit(principal.audit(
        if created { "login_provider.create" } else { "login_provider.update" },
        "login_provider",
        kind.as_str(),
        serde_json::json!({"client_id": row.client_id, "secret_changed": secret.is_some(), "enabled": row.enabled,
                           "auto_signup": row.auto_signup, "signup_role": row.signup_role}),
    ))
    .await?;
    tx.commit().await?;
    let provider = login::provider(&state, kind).await?.ok_or_else(|| ApiError::not_found("login provider"))?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(view(&provider, Some(row.updated_at)))).into_response())
}

/// Remove a stored login provider; sessions it opened stay valid, linked identities stay linked.
#[utoipa::path(delete, path = "/settings/login-providers/{provider}", tag = "settings",
    params(("provider" = String, Path, description = "`github`, `google` or `oidc`")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody, description = "No stored provider of this type"),
        (status = 409, body = ErrorBody, description = "The provider is configured by the environment")))]
async fn delete_provider(
    State(state): State<AppState>,
    principal: Principal,
    Path(provider): Path<String>,
) -> ApiResult<StatusCode> {
    let kind = parse_kind(&provider)?;
    if login::env_provider(&state, kind).is_some() {
        return Err(ApiError::new(
            Code::Conflict,
            format!(
                "{} sign-in is configured by the environment ({}); remove it there",
                kind.default_label(),
                env_variables(kind)
            ),
        ));
    }
    let mut tx = state.store.begin().await?;
    if !tx.delete_login_provider(kind.as_str()).await? {
        return Err(ApiError::not_found("login provider"));
    }
    tx.audit(principal.audit("login_provider.delete", "login_provider", kind.as_str(), serde_json::json!({}))).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
