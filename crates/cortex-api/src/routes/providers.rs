//! `GET /providers` (issue 15): every provider preset and custom provider, the credentials that serve it,
//! its catalogue models with prices, and the models its server reports (`/v1/models`, cached for an hour;
//! `?refresh=true` asks again). Feeds the provider and model pickers.
//!
//! Provider sign-in (authorization code with PKCE, `cortex_runtime::signin`): `POST
//! /providers/{name}/sign-in` returns the URL to open; the provider sends the browser back to the given
//! callback URL with `code` and `state`, which completes at `GET /auth/provider-callback` (public: the
//! single-use `state` is the credential) or, on a headless server, by pasting the code into `POST
//! /providers/sign-in/complete`.

use std::collections::HashMap;

use crate::guard::routes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use cortex_llm::LlmError;
use cortex_llm::ModelInfo;
use cortex_llm::presets::{self, AuthStyle, Preset};
use cortex_runtime::{SignInError, SignInRequest};
use cortex_store::credentials::ProviderCredential;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::extract::{Json, PageParams, Query};
use crate::guard::Routes;
use crate::state::AppState;
use crate::views::List;

/// The `/providers` route, registered in [`crate::router`].
pub fn routes() -> Routes {
    Routes::new()
        .viewer(routes!(list_providers))
        .admin(routes!(start_sign_in))
        .admin(routes!(complete_sign_in))
        .public(routes!(sign_in_callback))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProvidersParams {
    /// Ask every server for its models now instead of using the hour-old answer.
    pub refresh: Option<bool>,
}

/// A credential serving a provider (no secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct ServingCredential {
    pub id: Uuid,
    pub name: String,
    /// `active`, `error` or `disabled`.
    pub status: String,
    /// `env` or `api`.
    pub source: String,
}

/// A catalogue model with its limits and list price (USD per million tokens).
#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogueModel {
    pub id: String,
    pub context_window: u32,
    pub max_output_tokens: u32,
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    pub cache_read_per_mtok: f64,
    pub vision: bool,
}

impl From<&ModelInfo> for CatalogueModel {
    fn from(info: &ModelInfo) -> Self {
        Self {
            id: info.id.to_owned(),
            context_window: info.context_window,
            max_output_tokens: info.max_output_tokens,
            input_per_mtok: info.price.input_per_mtok,
            output_per_mtok: info.price.output_per_mtok,
            cache_read_per_mtok: info.price.cache_read_per_mtok,
            vision: info.vision,
        }
    }
}

/// One provider.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderView {
    /// The id agents use in `model_config.provider`.
    pub name: String,
    pub label: String,
    /// True for built-in presets; false for providers defined only by a credential.
    pub preset: bool,
    /// `openai` or `anthropic`.
    pub api_style: String,
    /// `bearer` or `x-api-key`.
    pub auth: String,
    /// The base URL calls go to (the serving credential's, else the preset's).
    pub base_url: String,
    pub key_required: bool,
    /// Whether an active credential serves it (agents using it can run).
    pub has_credential: bool,
    pub credentials: Vec<ServingCredential>,
    /// Built-in catalogue entries of models this provider's own API serves.
    pub catalogue: Vec<CatalogueModel>,
    /// What the server reported at `/models` (through the credential named like the provider, else the
    /// first active one); `null` without a usable credential or when the server could not be asked.
    pub reported_models: Option<Vec<String>>,
    /// Why `reported_models` is missing, when the server was asked and failed.
    pub reported_error: Option<String>,
    /// Whether `POST /providers/{name}/sign-in` works for it.
    pub sign_in: bool,
}

fn auth_name(auth: AuthStyle) -> String {
    match auth {
        AuthStyle::Bearer => "bearer".into(),
        AuthStyle::XApiKey => "x-api-key".into(),
    }
}

/// The view of one provider from its preset (if any) and the credentials serving it.
fn provider_view(
    sign_in: &[String],
    name: &str,
    preset: Option<&Preset>,
    serving: &[&ProviderCredential],
    reported: &HashMap<String, Result<Vec<String>, String>>,
) -> ProviderView {
    let primary = serving
        .iter()
        .filter(|row| row.status != "disabled")
        .min_by_key(|row| (row.name != name, row.name.clone()))
        .copied();
    let api_style = primary
        .and_then(|row| row.api_style.clone())
        .or_else(|| preset.map(|preset| preset.api_style.as_str().to_owned()))
        .unwrap_or_else(|| "openai".into());
    let style: cortex_llm::ApiStyle = api_style.parse().unwrap_or(cortex_llm::ApiStyle::OpenAi);
    let base_url = primary
        .and_then(|row| row.base_url.clone())
        .or_else(|| preset.map(|preset| preset.base_url.to_owned()))
        .unwrap_or_default();
    let (reported_models, reported_error) = match primary.and_then(|row| reported.get(&row.name)) {
        Some(Ok(models)) => (Some(models.clone()), None),
        Some(Err(reason)) => (None, Some(reason.clone())),
        None => (None, None),
    };
    ProviderView {
        name: name.to_owned(),
        label: preset.map_or_else(|| name.to_owned(), |preset| preset.label.to_owned()),
        preset: preset.is_some(),
        auth: auth_name(AuthStyle::of(style)),
        api_style,
        base_url,
        key_required: preset.is_some_and(|preset| preset.key_required),
        has_credential: serving.iter().any(|row| row.status == "active"),
        credentials: serving
            .iter()
            .map(|row| ServingCredential {
                id: row.id,
                name: row.name.clone(),
                status: row.status.clone(),
                source: row.source.clone(),
            })
            .collect(),
        catalogue: preset.map(|preset| preset.models().map(CatalogueModel::from).collect()).unwrap_or_default(),
        reported_models,
        reported_error,
        sign_in: sign_in.iter().any(|flow| flow == name),
    }
}

/// Provider presets (in their fixed order) and then custom providers by name, with their credentials
/// and models.
#[utoipa::path(get, path = "/providers", tag = "providers", params(ProvidersParams, PageParams), responses(
    (status = 200, body = List<ProviderView>), (status = 400, body = ErrorBody)))]
async fn list_providers(
    State(state): State<AppState>,
    Query(params): Query<ProvidersParams>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<ProviderView>>> {
    let items = provider_views(&state, params.refresh.unwrap_or(false)).await?;
    let order = |view: &ProviderView| match presets::all().iter().position(|preset| preset.name == view.name) {
        Some(index) => format!("0{index:04}"),
        None => format!("1{}", view.name),
    };
    Ok(axum::Json(List::from_all(items, &page, order)?))
}

/// Every preset and custom provider as `GET /providers` shows it (also the dashboard's providers page).
pub(crate) async fn provider_views(state: &AppState, refresh: bool) -> ApiResult<Vec<ProviderView>> {
    let rows = state.store.credentials_of_kind("llm").await?;
    let reported = state.runtime.reported_models(refresh).await?;
    let flows = state.runtime.sign_in_flows();
    let serving =
        |name: &str| -> Vec<&ProviderCredential> { rows.iter().filter(|row| row.provider_name() == name).collect() };
    let mut items: Vec<ProviderView> = presets::all()
        .iter()
        .map(|preset| provider_view(&flows, preset.name, Some(preset), &serving(preset.name), &reported))
        .collect();
    let mut custom: Vec<&str> =
        rows.iter().map(ProviderCredential::provider_name).filter(|name| presets::find(name).is_none()).collect();
    custom.sort_unstable();
    custom.dedup();
    items.extend(custom.into_iter().map(|name| provider_view(&flows, name, None, &serving(name), &reported)));
    Ok(items)
}

/// Body of `POST /providers/{name}/sign-in`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartSignIn {
    /// Where the provider sends the browser back with `code` and `state`: this server's
    /// `{public URL}/auth/provider-callback`, or on a headless server any URL whose address bar the user
    /// copies the code from.
    pub callback_url: String,
    /// The `llm` credential to store the result as (default: the provider's name).
    pub credential_name: Option<String>,
    /// Base URL of model calls through it (default: the preset's).
    pub base_url: Option<String>,
}

/// A started sign-in.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignInStarted {
    /// Open this in a browser and authorize.
    pub authorize_url: String,
    /// Completes the sign-in together with the returned code (single use).
    pub state: String,
    pub expires_at: DateTime<Utc>,
}

/// Body of `POST /providers/sign-in/complete` (the code-paste variant).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteSignIn {
    pub state: String,
    pub code: String,
}

/// A completed sign-in.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignedInView {
    /// The stored credential (see `GET /credentials/{id}`; the key itself is never returned).
    pub credential_id: Uuid,
    pub status: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackParams {
    pub state: Option<String>,
    pub code: Option<String>,
    /// Set by providers when the user declined.
    pub error: Option<String>,
}

fn sign_in_error(err: SignInError) -> ApiError {
    match err {
        SignInError::UnknownFlow { .. } => ApiError::new(Code::Unprocessable, err.to_string()),
        SignInError::Invalid(reason) => ApiError::new(Code::ValidationFailed, reason),
        SignInError::NotFound => ApiError::new(Code::NotFound, err.to_string()),
        SignInError::Expired => ApiError::new(Code::InvalidState, err.to_string()),
        SignInError::EnvCredential(_) => ApiError::new(Code::Conflict, err.to_string()),
        SignInError::Provider(LlmError::Transient { .. } | LlmError::Timeout { .. } | LlmError::Resource { .. }) => {
            ApiError::new(Code::Unavailable, format!("the provider could not be reached: {err}"))
        }
        SignInError::Provider(_) => ApiError::new(Code::Unprocessable, err.to_string()),
        SignInError::Store(store) => store.into(),
    }
}

/// Start signing in to a provider (authorization code with PKCE).
#[utoipa::path(post, path = "/providers/{name}/sign-in", tag = "providers", params(("name" = String, Path)),
    request_body = StartSignIn, responses(
    (status = 201, body = SignInStarted), (status = 400, body = ErrorBody),
    (status = 422, body = ErrorBody, description = "The provider offers no sign-in here")))]
async fn start_sign_in(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Json(body): Json<StartSignIn>,
) -> ApiResult<impl IntoResponse> {
    let credential_name = body.credential_name.as_deref().map(str::trim).filter(|name| !name.is_empty());
    if let Some(name) = credential_name
        && !(name.len() <= 64
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c)))
    {
        return Err(ApiError::validation(&[(
            "credential_name",
            "must be 1–64 characters of a-z, 0-9, '.', '_' and '-'".into(),
        )]));
    }
    if let Some(base) = &body.base_url
        && !url::Url::parse(base).is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
    {
        return Err(ApiError::validation(&[("base_url", "must be an http:// or https:// URL with a host".into())]));
    }
    let request = SignInRequest {
        provider: &name,
        callback_url: &body.callback_url,
        credential_name,
        base_url: body.base_url.as_deref(),
    };
    let started = state.runtime.start_sign_in(&request).await.map_err(sign_in_error)?;
    let mut tx = state.store.begin().await?;
    tx.audit(principal.audit(
        "credential.sign_in_start",
        "provider",
        &name,
        serde_json::json!({"credential": credential_name}),
    ))
    .await?;
    tx.commit().await?;
    let view =
        SignInStarted { authorize_url: started.authorize_url, state: started.state, expires_at: started.expires_at };
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// Complete a sign-in by pasting the code the provider showed (headless servers).
#[utoipa::path(post, path = "/providers/sign-in/complete", tag = "providers", request_body = CompleteSignIn, responses(
    (status = 201, body = SignedInView), (status = 404, body = ErrorBody, description = "Unknown or used state"),
    (status = 409, body = ErrorBody, description = "Expired"), (status = 422, body = ErrorBody, description = "The provider refused the code")))]
async fn complete_sign_in(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CompleteSignIn>,
) -> ApiResult<impl IntoResponse> {
    let id = state.runtime.complete_sign_in(body.state.trim(), &body.code).await.map_err(sign_in_error)?;
    let mut tx = state.store.begin().await?;
    tx.audit(principal.audit("credential.sign_in", "credential", id, serde_json::json!({"via": "code"}))).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(SignedInView { credential_id: id, status: "signed_in".into() })))
}

/// Where providers send the browser back after authorization; completes the sign-in named by `state`.
#[utoipa::path(get, path = "/auth/provider-callback", tag = "providers", params(CallbackParams), responses(
    (status = 200, body = SignedInView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 422, body = ErrorBody)))]
async fn sign_in_callback(
    State(state): State<AppState>,
    Query(params): Query<CallbackParams>,
) -> ApiResult<axum::Json<SignedInView>> {
    if let Some(error) = params.error {
        let error: String = error.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
        return Err(ApiError::new(Code::Unprocessable, format!("the provider reported `{error}`; nothing was stored")));
    }
    let (Some(sign_in), Some(code)) = (params.state, params.code) else {
        return Err(ApiError::bad_request("state and code are required"));
    };
    let id = state.runtime.complete_sign_in(&sign_in, &code).await.map_err(sign_in_error)?;
    let mut tx = state.store.begin().await?;
    tx.audit(cortex_store::audit::NewAudit {
        actor_type: "system",
        actor_id: None,
        action: "credential.sign_in".into(),
        target_type: "credential",
        target_id: Some(id.to_string()),
        details: serde_json::json!({"via": "callback"}),
        ip: None,
        request_id: None,
    })
    .await?;
    tx.commit().await?;
    Ok(axum::Json(SignedInView { credential_id: id, status: "signed_in".into() }))
}
