//! Credentials (SPEC §3.2, §17.3, Appendix B "Credentials"; issue 15): provider keys, search keys, tool and
//! speech secrets, managed by admins.
//!
//! The value is write-only: it is encrypted for its row before it is stored and never leaves the server;
//! responses say whether it is set and, for long secrets, its last four characters. Rows materialised from
//! the environment (`source: "env"`) are listed like the others but are read-only: editing or deleting one
//! answers 409 naming the variable to change. A change takes effect on the next model call of any process:
//! every run re-reads the rows and rebuilds the client of a credential whose `updated_at` moved.

use std::collections::{BTreeMap, HashMap};

use crate::guard::routes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use cortex_llm::{ApiStyle, ModelPrice};
use cortex_store::credentials::{CredentialWrite, ProviderCredential, secret_hint, secret_ref};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::extract::{Json, PageParams, Query};
use crate::guard::Routes;
use crate::routes::sessions::path_id;
use crate::state::AppState;
use crate::views::List;

/// The `/credentials` routes, registered in [`crate::router`].
pub fn routes() -> Routes {
    Routes::new()
        .admin(routes!(create_credential))
        .admin(routes!(list_credentials))
        .admin(routes!(get_credential))
        .admin(routes!(update_credential))
        .admin(routes!(delete_credential))
}

cortex_core::string_enum! {
    /// What a credential is for (SPEC §3.2).
    pub enum CredentialKind {
        Llm = "llm",
        Embedding = "embedding",
        Search = "search",
        ToolSecret = "tool_secret",
        Speech = "speech",
    }
}

cortex_core::string_enum! {
    /// Wire protocol of an `llm` credential (SPEC §5.2).
    pub enum WireStyle {
        OpenAi = "openai",
        Anthropic = "anthropic",
    }
}

cortex_core::string_enum! {
    /// What an operator may set: in use, or revoked (kept, never used).
    pub enum CredentialStatus {
        Active = "active",
        Disabled = "disabled",
    }
}

/// Longest accepted secret.
const MAX_VALUE_LEN: usize = 8192;
/// Longest credential name.
const MAX_NAME_LEN: usize = 64;

/// Body of `POST /credentials`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCredential {
    /// For `llm`: the provider id agents use (`openai`, `google`, `groq-local`, `openai-team`); 1–64 of
    /// `a-z 0-9 . _ -`.
    pub name: String,
    pub kind: CredentialKind,
    /// The secret (write-only). Required except for `llm` providers that need no key (local servers).
    pub value: Option<String>,
    /// `llm`: wire style; default: the preset's, else `openai`.
    pub api_style: Option<WireStyle>,
    /// Base URL; default: the preset's (OpenAI style includes `/v1`).
    pub base_url: Option<String>,
    /// `llm`: the preset this credential serves when its name is not a preset (a team's own key named
    /// `openai-team` serves `openai`); agents pick it with `model_config.credential`.
    pub provider: Option<String>,
    /// `llm`: model ids offered in pickers besides what the server reports.
    pub models: Option<Vec<String>>,
    /// `llm`: prices per model-id prefix in USD per million tokens, `{"llama3.1": {"input_per_mtok": 0,
    /// "output_per_mtok": 0, "cache_read_per_mtok": 0}}`; the key `"*"` prices every other model.
    #[schema(value_type = Option<Object>)]
    pub prices: Option<BTreeMap<String, Value>>,
}

/// Body of `PATCH /credentials/{id}`: absent fields keep their value, `""` clears an optional text field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCredential {
    /// A new secret (rotation); `""` removes it.
    pub value: Option<String>,
    pub api_style: Option<String>,
    pub base_url: Option<String>,
    pub provider: Option<String>,
    pub models: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub prices: Option<BTreeMap<String, Value>>,
    /// `disabled` revokes the credential: the next call through it fails with `no_credential`.
    pub status: Option<CredentialStatus>,
}

/// Whether a secret is stored, and how to recognise it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretState {
    pub is_set: bool,
    /// Last four characters of secrets of 16 characters or more.
    pub last4: Option<String>,
}

/// Spend through a credential.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialUsageView {
    pub calls: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
}

/// A credential as the API shows it: never its value.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialView {
    pub id: Uuid,
    pub kind: String,
    pub name: String,
    /// `llm`: the provider it serves (its name unless set otherwise).
    pub provider: Option<String>,
    /// `llm`: the effective wire style.
    pub api_style: Option<String>,
    /// The effective base URL (the preset's when not set).
    pub base_url: Option<String>,
    pub value: SecretState,
    pub models: Vec<String>,
    #[schema(value_type = Object)]
    pub prices: Value,
    /// `active`, `error` (the provider refused it; see `last_error`) or `disabled`.
    pub status: String,
    pub last_used_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub error_count: i64,
    /// `env` (read-only, from the environment) or `api`.
    pub source: String,
    pub read_only: bool,
    /// The provider sign-in that produced the secret, if any.
    pub sign_in: Option<String>,
    /// When a signed-in token expires (it is refreshed before).
    pub expires_at: Option<DateTime<Utc>>,
    /// Slugs of the agents whose models are called through it.
    pub used_by: Vec<String>,
    pub usage: CredentialUsageView,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl CredentialView {
    fn new(row: ProviderCredential, used_by: Vec<String>) -> Self {
        let is_llm = row.kind == CredentialKind::Llm.as_str();
        let preset = is_llm.then(|| cortex_llm::presets::find(row.provider_name())).flatten();
        let api_style = row
            .api_style
            .clone()
            .or_else(|| is_llm.then(|| preset.map_or("openai", |p| p.api_style.as_str()).to_owned()));
        let base_url = row.base_url.clone().or_else(|| {
            preset.filter(|p| api_style.as_deref() == Some(p.api_style.as_str())).map(|p| p.base_url.to_owned())
        });
        Self {
            id: row.id,
            provider: is_llm.then(|| row.provider_name().to_owned()),
            kind: row.kind,
            name: row.name,
            api_style,
            base_url,
            value: SecretState { is_set: row.secret_enc.is_some(), last4: row.secret_hint },
            models: serde_json::from_value(row.models).unwrap_or_default(),
            prices: row.prices,
            status: row.status,
            last_used_at: row.last_used_at,
            last_error: row.last_error,
            error_count: row.error_count,
            read_only: row.source == "env",
            sign_in: row.sign_in,
            expires_at: row.expires_at,
            source: row.source,
            used_by,
            usage: CredentialUsageView {
                calls: row.usage.calls,
                tokens_in: row.usage.tokens_in,
                tokens_out: row.usage.tokens_out,
                cost_usd: row.usage.cost_usd,
            },
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// Which agents use which credential: (kind, name) → agent slugs (not archived ones).
/// - `llm`: the agents whose primary model or fallbacks go through it;
/// - `search`: the agents with `web_search` enabled, on the credential `web_search` uses (the first
///   `search` credential by name that is not disabled);
/// - `tool_secret`: the agents with an enabled policy on a webhook tool whose `credential_refs` name it;
/// - `embedding`: every agent, on the credential the memory embedder uses (each turn recalls memories).
async fn agents_by_credential(
    state: &AppState,
    rows: &[ProviderCredential],
) -> ApiResult<HashMap<(String, String), Vec<String>>> {
    let first_usable = |kind: CredentialKind| {
        rows.iter().find(|row| row.kind == kind.as_str() && row.status != "disabled").map(|row| row.name.clone())
    };
    let search = first_usable(CredentialKind::Search);
    let embedding = first_usable(CredentialKind::Embedding);
    let mut refs_of_webhook: HashMap<String, Vec<String>> = HashMap::new();
    for tool in state.store.list_webhook_tools().await? {
        let refs: Vec<cortex_tools::webhook::CredentialRef> =
            serde_json::from_value(tool.credential_refs.clone()).unwrap_or_default();
        if !refs.is_empty() {
            refs_of_webhook.insert(tool.tool_ref(), refs.into_iter().map(|r| r.credential).collect());
        }
    }
    let mut by_credential: HashMap<(String, String), Vec<String>> = HashMap::new();
    let mut add = |kind: CredentialKind, name: &str, slug: &str| {
        let users = by_credential.entry((kind.as_str().to_owned(), name.to_owned())).or_default();
        if !users.iter().any(|user| user == slug) {
            users.push(slug.to_owned());
        }
    };
    let mut cursor = None;
    loop {
        let page = state.store.list_agents(None, cursor, 200).await?;
        for agent in page.items.iter().filter(|agent| agent.status != cortex_core::agent::AgentStatus::Archived) {
            for candidate in agent.model_config.candidates() {
                add(CredentialKind::Llm, &candidate.provider, &agent.slug);
            }
            if let Some(name) = &embedding {
                add(CredentialKind::Embedding, name, &agent.slug);
            }
            if search.is_none() && refs_of_webhook.is_empty() {
                continue;
            }
            for policy in state.store.tool_policies(agent.id).await?.into_iter().filter(|policy| policy.enabled) {
                if policy.tool_ref == "web_search"
                    && let Some(name) = &search
                {
                    add(CredentialKind::Search, name, &agent.slug);
                }
                for name in refs_of_webhook.get(&policy.tool_ref).into_iter().flatten() {
                    add(CredentialKind::ToolSecret, name, &agent.slug);
                }
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(by_credential)
}

async fn view(state: &AppState, row: ProviderCredential) -> ApiResult<CredentialView> {
    let rows = state.store.list_credentials().await?;
    let mut users = agents_by_credential(state, &rows).await?;
    let used_by = users.remove(&(row.kind.clone(), row.name.clone())).unwrap_or_default();
    Ok(CredentialView::new(row, used_by))
}

/// Every credential as the API shows it, with the agents using each.
pub(crate) async fn views(state: &AppState) -> ApiResult<Vec<CredentialView>> {
    let rows = state.store.list_credentials().await?;
    let mut users = agents_by_credential(state, &rows).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let used_by = users.remove(&(row.kind.clone(), row.name.clone())).unwrap_or_default();
            CredentialView::new(row, used_by)
        })
        .collect())
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_NAME_LEN
        && chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

fn valid_url(value: &str) -> bool {
    url::Url::parse(value).is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
}

/// A usable secret: non-empty, bounded, and sendable in an HTTP header.
fn check_value(value: &str, fields: &mut Vec<(&'static str, String)>) {
    if value.is_empty() || value.len() > MAX_VALUE_LEN || value.chars().any(|c| c.is_control()) {
        fields.push(("value", format!("must be 1–{MAX_VALUE_LEN} bytes without control characters")));
    }
}

fn parse_prices(prices: &BTreeMap<String, Value>, fields: &mut Vec<(&'static str, String)>) -> Value {
    for (prefix, price) in prices {
        let valid = serde_json::from_value::<ModelPrice>(price.clone()).is_ok_and(|price| price.is_valid());
        if !valid || prefix.trim().is_empty() {
            fields.push((
                "prices",
                format!("`{prefix}` must map to {{input_per_mtok, output_per_mtok, cache_read_per_mtok}} of non-negative numbers"),
            ));
        }
    }
    json!(prices)
}

/// Wire style and preset checks shared by create and update of `llm` credentials.
fn check_llm_target(
    name: &str,
    provider: Option<&str>,
    api_style: Option<&str>,
    base_url: Option<&str>,
    fields: &mut Vec<(&'static str, String)>,
) {
    if let Some(provider) = provider
        && cortex_llm::presets::find(provider).is_none()
    {
        let presets: Vec<&str> = cortex_llm::presets::all().iter().map(|preset| preset.name).collect();
        fields.push(("provider", format!("must be a preset: {}", presets.join(", "))));
    }
    if let Some(style) = api_style
        && style.parse::<ApiStyle>().is_err()
    {
        fields.push(("api_style", "must be openai or anthropic".into()));
    }
    let served = provider.unwrap_or(name);
    if cortex_llm::presets::find(served).is_none() && base_url.is_none() {
        fields.push(("base_url", format!("`{served}` is not a preset, so its base_url is required")));
    }
}

/// Create a credential. The value is encrypted at rest and never returned.
#[utoipa::path(post, path = "/credentials", tag = "credentials", request_body = CreateCredential, responses(
    (status = 201, body = CredentialView), (status = 400, body = ErrorBody),
    (status = 409, body = ErrorBody, description = "A credential of this kind and name exists")))]
async fn create_credential(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CreateCredential>,
) -> ApiResult<impl IntoResponse> {
    let name = body.name.trim().to_owned();
    let is_llm = body.kind == CredentialKind::Llm;
    let mut fields: Vec<(&'static str, String)> = Vec::new();
    if !valid_name(&name) {
        fields.push(("name", format!("must be 1–{MAX_NAME_LEN} characters of a-z, 0-9, '.', '_' and '-'")));
    }
    if let Some(value) = &body.value {
        check_value(value, &mut fields);
    }
    if let Some(base) = &body.base_url
        && !valid_url(base)
    {
        fields.push(("base_url", "must be an http:// or https:// URL with a host".into()));
    }
    let prices = body.prices.as_ref().map(|prices| parse_prices(prices, &mut fields));
    let api_style = body.api_style.map(|style| style.as_str().to_owned());
    if is_llm {
        check_llm_target(&name, body.provider.as_deref(), api_style.as_deref(), body.base_url.as_deref(), &mut fields);
        let served = body.provider.as_deref().unwrap_or(&name);
        if body.value.is_none() && cortex_llm::presets::find(served).is_some_and(|preset| preset.key_required) {
            fields.push(("value", format!("`{served}` needs an API key")));
        }
    } else {
        if body.value.is_none() {
            fields.push(("value", "is required".into()));
        }
        for (field, set) in [
            ("api_style", api_style.is_some()),
            ("provider", body.provider.is_some()),
            ("models", body.models.is_some()),
            ("prices", prices.is_some()),
        ] {
            if set {
                fields.push((field, "applies to llm credentials only".into()));
            }
        }
    }
    if !fields.is_empty() {
        return Err(ApiError::validation(&fields));
    }
    let id = cortex_core::new_id();
    let secret_enc = body.value.as_ref().map(|value| state.cipher.encrypt(&secret_ref(id), value.as_bytes()));
    let write = CredentialWrite {
        id,
        kind: body.kind.as_str().to_owned(),
        name: name.clone(),
        provider: body.provider.map(|provider| provider.trim().to_ascii_lowercase()),
        api_style,
        base_url: body.base_url,
        secret_enc,
        secret_hint: body.value.as_deref().and_then(secret_hint),
        models: json!(body.models.unwrap_or_default()),
        prices: prices.unwrap_or_else(|| json!({})),
        status: CredentialStatus::Active.as_str().to_owned(),
        clear_error: false,
    };
    let mut tx = state.store.begin().await?;
    tx.insert_credential(&write).await.map_err(|err| {
        let err = ApiError::from(err);
        if err.code == Code::Conflict {
            ApiError::new(Code::Conflict, format!("a {} credential named `{name}` already exists", write.kind))
        } else {
            err
        }
    })?;
    tx.audit(principal.audit("credential.create", "credential", id, json!({"kind": write.kind, "name": name}))).await?;
    tx.commit().await?;
    refresh_secrets(&state).await;
    let row = state.store.credential_by_id(id).await?;
    Ok((StatusCode::CREATED, axum::Json(view(&state, row).await?)))
}

/// List every credential by kind and name (values never included).
#[utoipa::path(get, path = "/credentials", tag = "credentials", params(PageParams), responses(
    (status = 200, body = List<CredentialView>), (status = 400, body = ErrorBody)))]
async fn list_credentials(
    State(state): State<AppState>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<CredentialView>>> {
    // A line break sorts before every character a kind or name may hold: the order is (kind, name).
    let list = List::from_all(views(&state).await?, &page, |row| format!("{}\n{}", row.kind, row.name))?;
    Ok(axum::Json(list))
}

/// One credential (value never included).
#[utoipa::path(get, path = "/credentials/{id}", tag = "credentials", params(("id" = Uuid, Path)), responses(
    (status = 200, body = CredentialView), (status = 404, body = ErrorBody)))]
async fn get_credential(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<CredentialView>> {
    let row = state.store.credential_by_id(path_id(&id, "credential")?).await?;
    Ok(axum::Json(view(&state, row).await?))
}

/// The answer to editing an env-defined credential.
fn read_only(row: &ProviderCredential) -> ApiError {
    ApiError::new(
        Code::Conflict,
        format!(
            "credential `{}` comes from the environment and is read-only; change the environment and restart",
            row.name
        ),
    )
    .with_details(json!({"source": "env"}))
}

/// Text patch semantics: absent keeps, `""` clears, anything else replaces.
fn patched(current: Option<String>, patch: Option<String>) -> Option<String> {
    match patch {
        None => current,
        Some(text) if text.trim().is_empty() => None,
        Some(text) => Some(text.trim().to_owned()),
    }
}

/// Update a credential: rotate its value, change its endpoint or prices, revoke (`status: disabled`) or
/// re-enable it. Takes effect on the next model call.
#[utoipa::path(patch, path = "/credentials/{id}", tag = "credentials", params(("id" = Uuid, Path)),
    request_body = UpdateCredential, responses(
    (status = 200, body = CredentialView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody, description = "The credential comes from the environment")))]
async fn update_credential(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<UpdateCredential>,
) -> ApiResult<axum::Json<CredentialView>> {
    let row = state.store.credential_by_id(path_id(&id, "credential")?).await?;
    if row.source == "env" {
        return Err(read_only(&row));
    }
    let is_llm = row.kind == CredentialKind::Llm.as_str();
    let mut fields: Vec<(&'static str, String)> = Vec::new();
    if let Some(value) = body.value.as_deref().filter(|value| !value.is_empty()) {
        check_value(value, &mut fields);
    }
    if let Some(base) = body.base_url.as_deref().filter(|base| !base.trim().is_empty())
        && !valid_url(base.trim())
    {
        fields.push(("base_url", "must be an http:// or https:// URL with a host".into()));
    }
    let prices = body.prices.as_ref().map(|prices| parse_prices(prices, &mut fields));
    let provider = patched(row.provider.clone(), body.provider.clone()).map(|p| p.to_ascii_lowercase());
    let api_style = patched(row.api_style.clone(), body.api_style.clone()).map(|s| s.to_ascii_lowercase());
    let base_url = patched(row.base_url.clone(), body.base_url.clone());
    if is_llm {
        check_llm_target(&row.name, provider.as_deref(), api_style.as_deref(), base_url.as_deref(), &mut fields);
    } else {
        for (field, set) in [
            ("api_style", body.api_style.is_some()),
            ("provider", body.provider.is_some()),
            ("models", body.models.is_some()),
            ("prices", prices.is_some()),
        ] {
            if set {
                fields.push((field, "applies to llm credentials only".into()));
            }
        }
        if body.value.as_deref() == Some("") {
            fields.push(("value", "is required for this kind".into()));
        }
    }
    if !fields.is_empty() {
        return Err(ApiError::validation(&fields));
    }
    let rotated = body.value.is_some();
    let (secret_enc, hint) = match body.value.as_deref() {
        None => (row.secret_enc.clone(), row.secret_hint.clone()),
        Some("") => (None, None),
        Some(value) => (Some(state.cipher.encrypt(&secret_ref(row.id), value.as_bytes())), secret_hint(value)),
    };
    let status = match (body.status, row.status.as_str()) {
        (Some(status), _) => status.as_str().to_owned(),
        // A new secret is a fresh start for a credential the provider refused.
        (None, "error") if rotated => CredentialStatus::Active.as_str().to_owned(),
        (None, current) => current.to_owned(),
    };
    let write = CredentialWrite {
        id: row.id,
        kind: row.kind.clone(),
        name: row.name.clone(),
        provider,
        api_style,
        base_url,
        secret_enc,
        secret_hint: hint,
        models: body.models.map_or_else(|| row.models.clone(), |models| json!(models)),
        prices: prices.unwrap_or_else(|| row.prices.clone()),
        clear_error: rotated || (status == "active" && row.status != "active"),
        status,
    };
    let mut tx = state.store.begin().await?;
    if !tx.update_credential(&write).await? {
        return Err(ApiError::not_found("credential"));
    }
    let changed: Vec<&str> = [
        ("value", rotated),
        ("api_style", body.api_style.is_some()),
        ("base_url", body.base_url.is_some()),
        ("provider", body.provider.is_some()),
        ("models", write.models != row.models),
        ("prices", write.prices != row.prices),
        ("status", write.status != row.status),
    ]
    .into_iter()
    .filter_map(|(field, changed)| changed.then_some(field))
    .collect();
    tx.audit(principal.audit(
        "credential.update",
        "credential",
        row.id,
        json!({"kind": row.kind, "name": row.name, "changed": changed, "status": write.status}),
    ))
    .await?;
    tx.commit().await?;
    refresh_secrets(&state).await;
    let row = state.store.credential_by_id(row.id).await?;
    Ok(axum::Json(view(&state, row).await?))
}

/// Delete a credential; calls that needed it fail with `no_credential` from then on.
#[utoipa::path(delete, path = "/credentials/{id}", tag = "credentials", params(("id" = Uuid, Path)), responses(
    (status = 204), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody, description = "The credential comes from the environment")))]
async fn delete_credential(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let row = state.store.credential_by_id(path_id(&id, "credential")?).await?;
    if row.source == "env" {
        return Err(read_only(&row));
    }
    let mut tx = state.store.begin().await?;
    if !tx.delete_credential_by_id(row.id).await? {
        return Err(ApiError::not_found("credential"));
    }
    tx.audit(principal.audit("credential.delete", "credential", row.id, json!({"kind": row.kind, "name": row.name})))
        .await?;
    tx.commit().await?;
    refresh_secrets(&state).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Rebuilds this process's redactor at once after a credential changed (others do so before their next
/// job run), so the new value is kept out of logs from now on.
pub(crate) async fn refresh_secrets(state: &AppState) {
    if let Err(err) = state.runtime.refresh_secrets().await {
        tracing::warn!(error = %err, "the secret redactor was not rebuilt after a credential change");
    }
}
