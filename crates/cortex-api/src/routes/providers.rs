//! `GET /providers` (issue 15): every provider preset and custom provider, the credentials that serve it,
//! its catalogue models with prices, and the models its server reports (`/v1/models`, cached for an hour;
//! `?refresh=true` asks again). Feeds the provider and model pickers.

use std::collections::HashMap;

use axum::extract::State;
use cortex_llm::ModelInfo;
use cortex_llm::presets::{self, AuthStyle, Preset};
use cortex_store::credentials::ProviderCredential;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::{ApiResult, ErrorBody};
use crate::extract::Query;
use crate::guard::Routes;
use crate::state::AppState;
use crate::views::List;

/// The `/providers` route, registered in [`crate::router`].
pub fn routes() -> Routes {
    Routes::new().viewer(routes!(list_providers))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
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
}

fn auth_name(auth: AuthStyle) -> String {
    match auth {
        AuthStyle::Bearer => "bearer".into(),
        AuthStyle::XApiKey => "x-api-key".into(),
    }
}

/// The view of one provider from its preset (if any) and the credentials serving it.
fn provider_view(
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
    }
}

/// Provider presets and custom providers with their credentials and models.
#[utoipa::path(get, path = "/providers", tag = "providers", params(ProvidersParams), responses(
    (status = 200, body = List<ProviderView>), (status = 400, body = ErrorBody)))]
async fn list_providers(
    State(state): State<AppState>,
    Query(params): Query<ProvidersParams>,
) -> ApiResult<axum::Json<List<ProviderView>>> {
    let rows = state.store.credentials_of_kind("llm").await?;
    let reported = state.runtime.reported_models(params.refresh.unwrap_or(false)).await?;
    let serving =
        |name: &str| -> Vec<&ProviderCredential> { rows.iter().filter(|row| row.provider_name() == name).collect() };
    let mut items: Vec<ProviderView> = presets::all()
        .iter()
        .map(|preset| provider_view(preset.name, Some(preset), &serving(preset.name), &reported))
        .collect();
    let mut custom: Vec<&str> =
        rows.iter().map(ProviderCredential::provider_name).filter(|name| presets::find(name).is_none()).collect();
    custom.sort_unstable();
    custom.dedup();
    items.extend(custom.into_iter().map(|name| provider_view(name, None, &serving(name), &reported)));
    Ok(axum::Json(List { items, next_cursor: None }))
}
