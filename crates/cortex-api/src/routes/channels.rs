//! Channels (SPEC §2.4 "Channels", §8): chat-platform bots, their outbox, agent ↔ chat bindings and the
//! platform webhooks.
//!
//! Credentials are verified against the platform before anything is stored (an invalid token is 422),
//! encrypted at rest (cell `channel.secrets_enc.<id>`) and never returned: responses list which
//! secrets are set. Every change commits a `ChannelChanged` notification, on which the supervisor of
//! every process starts, restarts or stops that channel (hot reload). Env-defined channels
//! (`source: env`) are read-only here.

use std::collections::BTreeMap;

use crate::guard::routes;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use cortex_channels::adapter::{AdapterError, WebhookError, WebhookRequest};
use cortex_channels::supervisor::{ChannelHealth, WebhookRejection, build_adapter};
use cortex_channels::types::Platform;
use cortex_store::channel_access::{Binding, NewBinding};
use cortex_store::channels::{Channel, ChannelWrite};
use cortex_store::outbox::OutboxItem;
use cortex_store::secrets::SecretRef;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::{Principal, check_origin};
use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::extract::{Json, PageParams, Query};
use crate::guard::Routes;
use crate::state::AppState;
use crate::views::List;

/// The channel routes, registered in [`crate::router`].
pub fn routes() -> Routes {
    Routes::new()
        .admin(routes!(create_channel))
        .viewer(routes!(list_channels))
        .viewer(routes!(channel_health_stream))
        .viewer(routes!(get_channel))
        .admin(routes!(update_channel))
        .admin(routes!(delete_channel))
        .viewer(routes!(list_outbox))
        .operator(routes!(retry_outbox))
        .operator(routes!(set_default_agent))
        .operator(routes!(bind_chat))
        .viewer(routes!(list_bindings))
        .operator(routes!(unbind_chat))
        .public(routes!(telegram_webhook))
        .public(routes!(slack_webhook))
        .public(routes!(whatsapp_verify, whatsapp_webhook))
}

/// Secret settings per platform: accepted in `config`, stored encrypted, never returned.
fn secret_keys(platform: Platform) -> &'static [&'static str] {
    match platform {
        Platform::Telegram => &["bot_token", "webhook_secret"],
        Platform::Discord => &["bot_token"],
        Platform::Slack => &["bot_token", "app_token", "signing_secret"],
        Platform::WhatsApp => &["access_token", "app_secret", "verify_token"],
    }
}

/// Secrets a channel of the platform cannot work without.
fn required_secrets(platform: Platform) -> &'static [&'static str] {
    match platform {
        Platform::Telegram | Platform::Discord => &["bot_token"],
        Platform::Slack => &["bot_token"],
        Platform::WhatsApp => &["access_token", "app_secret", "verify_token"],
    }
}

/// Non-secret settings per platform.
fn setting_keys(platform: Platform) -> &'static [&'static str] {
    match platform {
        Platform::Telegram => &["api_base", "mode", "require_secret", "poll_timeout_seconds"],
        Platform::Discord => &["api_base", "gateway_url"],
        Platform::Slack => &["api_base"],
        Platform::WhatsApp => &["api_base", "phone_number_id"],
    }
}

/// Body of `POST /channels`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChannel {
    #[serde(rename = "type")]
    pub channel_type: Platform,
    pub name: String,
    /// Platform settings and secrets, e.g. Telegram `{bot_token, api_base?, mode?: polling|webhook,
    /// require_secret?, poll_timeout_seconds?}`, Discord `{bot_token, api_base?, gateway_url?}`, Slack
    /// `{bot_token, app_token? (Socket Mode), signing_secret? (Events API), api_base?}`, WhatsApp
    /// `{access_token, app_secret, verify_token, phone_number_id, api_base?}`. Secrets are stored
    /// encrypted and never returned.
    #[schema(value_type = Object)]
    pub config: Map<String, Value>,
    /// `open` (default) or `allowlist`: only platform users on the channel allowlist get through.
    pub inbound_policy: Option<String>,
    /// Agent answering chats that have no binding.
    pub default_agent_id: Option<Uuid>,
    /// Default true.
    pub enabled: Option<bool>,
}

/// Body of `PATCH /channels/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateChannel {
    pub name: Option<String>,
    /// Settings to change; a secret given here replaces the stored one; `null` removes a setting.
    #[schema(value_type = Option<Object>)]
    pub config: Option<Map<String, Value>>,
    pub inbound_policy: Option<String>,
    pub enabled: Option<bool>,
}

/// A channel as operators see it; secrets appear as names only.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelView {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub channel_type: String,
    pub name: String,
    /// Non-secret settings.
    #[schema(value_type = Object)]
    pub config: Value,
    /// Names of the secrets that are set.
    pub secrets: Vec<String>,
    /// `env` (read-only, from the environment) or `api`.
    pub source: String,
    pub enabled: bool,
    pub inbound_policy: String,
    pub default_agent_id: Option<Uuid>,
    #[schema(value_type = Option<Object>)]
    pub bot_identity: Option<Value>,
    /// `starting|healthy|unhealthy|recovering|circuit_open|stopped` in this process.
    pub state: String,
    pub last_error: Option<String>,
    pub last_activity_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ChannelView {
    fn new(channel: Channel, health: Option<&ChannelHealth>) -> Self {
        let stopped = if channel.enabled { "starting" } else { "stopped" };
        Self {
            id: channel.id,
            channel_type: channel.channel_type,
            name: channel.name,
            config: channel.config,
            secrets: channel.secret_keys,
            source: channel.source,
            enabled: channel.enabled,
            inbound_policy: channel.inbound_policy,
            default_agent_id: channel.default_agent_id,
            bot_identity: channel.bot_identity,
            state: health.map_or(stopped, |health| health.state.as_str()).to_owned(),
            last_error: health.and_then(|health| health.last_error.clone()),
            last_activity_at: health.and_then(|health| health.last_activity_at),
            created_at: channel.created_at,
            updated_at: channel.updated_at,
        }
    }

    pub(crate) fn of(state: &AppState, channel: Channel) -> Self {
        let health = state.channels.health();
        let found = health.iter().find(|health| health.id == channel.id);
        Self::new(channel, found)
    }
}

/// An outbox message.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxView {
    pub id: Uuid,
    /// `queued`, `sending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i64,
    #[schema(value_type = Object)]
    pub target: Value,
    #[schema(value_type = Object)]
    pub payload: Value,
    /// The platform's id(s) for what it accepted (comma-separated for a reply sent in parts).
    pub platform_message_id: Option<String>,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub job_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<OutboxItem> for OutboxView {
    fn from(item: OutboxItem) -> Self {
        Self {
            id: item.id,
            status: item.status,
            attempts: item.attempts,
            target: item.target,
            payload: item.payload,
            platform_message_id: item.platform_message_id,
            last_error: item.last_error,
            next_attempt_at: item.next_attempt_at,
            job_id: item.job_id,
            created_at: item.created_at,
            updated_at: item.updated_at,
        }
    }
}

/// An agent ↔ chat binding.
#[derive(Debug, Serialize, ToSchema)]
pub struct BindingView {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub channel_type: String,
    /// The one bot this binding is pinned to; `null` binds the chat on every channel of the type.
    pub channel_id: Option<Uuid>,
    pub chat_id: String,
    /// `all` or `mentions`; `null` = all in direct chats, mentions in groups.
    pub respond_to: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<Binding> for BindingView {
    fn from(binding: Binding) -> Self {
        Self {
            id: binding.id,
            agent_id: binding.agent_id,
            channel_type: binding.channel_type.clone(),
            channel_id: binding.channel_id,
            chat_id: binding.chat_id.clone(),
            respond_to: binding.respond_to.clone(),
            created_at: binding.created(),
        }
    }
}

/// Splits `config` into settings and secrets, checking names and types.
fn split_config(
    platform: Platform,
    config: &Map<String, Value>,
) -> ApiResult<(Map<String, Value>, BTreeMap<String, String>)> {
    let mut settings = Map::new();
    let mut secrets = BTreeMap::new();
    let mut fields: Vec<(&str, String)> = Vec::new();
    for (key, value) in config {
        if secret_keys(platform).contains(&key.as_str()) {
            match value {
                Value::String(text) if !text.trim().is_empty() => {
                    secrets.insert(key.clone(), text.trim().to_owned());
                }
                _ => fields.push(("config", format!("`{key}` must be a non-empty string"))),
            }
        } else if setting_keys(platform).contains(&key.as_str()) {
            if let Err(reason) = check_setting(key, value) {
                fields.push(("config", format!("`{key}` {reason}")));
            }
            settings.insert(key.clone(), value.clone());
        } else {
            fields.push(("config", format!("unknown setting `{key}` for {platform} channels")));
        }
    }
    if !fields.is_empty() {
        return Err(ApiError::validation(&fields));
    }
    Ok((settings, secrets))
}

fn check_setting(key: &str, value: &Value) -> Result<(), String> {
    match key {
        "api_base" => {
            let text = value.as_str().ok_or("must be a string")?;
            let url = url::Url::parse(text).map_err(|err| format!("is not a URL: {err}"))?;
            if matches!(url.scheme(), "http" | "https") && url.host().is_some() {
                Ok(())
            } else {
                Err("must be an http:// or https:// URL".into())
            }
        }
        "gateway_url" => {
            let text = value.as_str().ok_or("must be a string")?;
            let url = url::Url::parse(text).map_err(|err| format!("is not a URL: {err}"))?;
            if matches!(url.scheme(), "ws" | "wss") && url.host().is_some() {
                Ok(())
            } else {
                Err("must be a ws:// or wss:// URL".into())
            }
        }
        "phone_number_id" => match value.as_str() {
            Some(id) if !id.is_empty() && id.len() <= 32 && id.bytes().all(|byte| byte.is_ascii_digit()) => Ok(()),
            _ => Err("must be the number's id (digits)".into()),
        },
        "mode" => match value.as_str() {
            Some("polling" | "webhook") => Ok(()),
            _ => Err("must be `polling` or `webhook`".into()),
        },
        "require_secret" => value.as_bool().map(drop).ok_or_else(|| "must be true or false".into()),
        "poll_timeout_seconds" => match value.as_u64() {
            Some(1..=50) => Ok(()),
            _ => Err("must be between 1 and 50".into()),
        },
        _ => Ok(()),
    }
}

fn check_policy(policy: Option<&str>) -> ApiResult<String> {
    match policy.map(str::to_ascii_lowercase).as_deref() {
        None | Some("open") => Ok("open".into()),
        Some("allowlist") => Ok("allowlist".into()),
        Some(other) => {
            Err(ApiError::validation(&[("inbound_policy", format!("must be `open` or `allowlist`, got `{other}`"))]))
        }
    }
}

fn check_name(name: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::validation(&[("name", "must be 1–100 characters".into())]));
    }
    Ok(name.to_owned())
}

/// Builds the adapter the row describes and asks the platform who the bot is (422 when it refuses).
async fn verify(state: &AppState, channel: &Channel, secrets: &BTreeMap<String, String>) -> ApiResult<Value> {
    let adapter = build_adapter(channel, secrets, state.channels.http(), None)
        .map_err(|reason| ApiError::new(Code::Unprocessable, reason))?;
    match adapter.verify().await {
        Ok(identity) => Ok(serde_json::to_value(identity).unwrap_or(Value::Null)),
        Err(AdapterError::Unauthorized(reason)) => {
            Err(ApiError::new(Code::Unprocessable, format!("the platform refused the credentials: {reason}")))
        }
        Err(err) => Err(ApiError::new(Code::Unprocessable, format!("could not verify the credentials: {err}"))),
    }
}

/// A channel id from the path; anything else is an unknown channel (404).
pub(crate) fn channel_uuid(id: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found("channel"))
}

fn env_read_only(channel: &Channel) -> ApiResult<()> {
    if channel.source == "env" {
        return Err(ApiError::new(
            Code::Conflict,
            "this channel comes from the environment; change the environment instead",
        ));
    }
    Ok(())
}

/// Register a bot [admin]. Its credentials are verified with the platform first (invalid → 422); the
/// channel starts receiving within seconds, without a restart.
#[utoipa::path(post, path = "/channels", tag = "channels", request_body = CreateChannel, responses(
    (status = 201, body = ChannelView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
    (status = 422, body = ErrorBody)))]
async fn create_channel(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CreateChannel>,
) -> ApiResult<impl IntoResponse> {
    let name = check_name(&body.name)?;
    let inbound_policy = check_policy(body.inbound_policy.as_deref())?;
    let platform = body.channel_type;
    let (settings, mut secrets) = split_config(platform, &body.config)?;
    let missing: Vec<(&str, String)> = required_secrets(platform)
        .iter()
        .filter(|key| !secrets.contains_key(**key))
        .map(|key| ("config", format!("`{key}` is required")))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::validation(&missing));
    }
    if platform == Platform::Slack && !secrets.contains_key("app_token") && !secrets.contains_key("signing_secret") {
        return Err(ApiError::validation(&[(
            "config",
            "a Slack channel needs `app_token` (Socket Mode) or `signing_secret` (Events API webhook)".into(),
        )]));
    }
    if platform == Platform::WhatsApp && !settings.contains_key("phone_number_id") {
        return Err(ApiError::validation(&[("config", "`phone_number_id` is required".into())]));
    }
    if platform == Platform::Telegram && settings.get("mode").and_then(Value::as_str) == Some("webhook") {
        secrets.entry("webhook_secret".into()).or_insert_with(new_webhook_secret);
    }
    if let Some(agent_id) = body.default_agent_id {
        state.store.get_agent(&agent_id.to_string()).await?;
    }
    let id = cortex_core::new_id();
    let mut write = ChannelWrite {
        id,
        channel_type: platform.as_str().to_owned(),
        name,
        config: Value::Object(settings),
        secrets_enc: Some(state.cipher.encrypt_json(&SecretRef::new("channel", "secrets_enc", id), &secrets)),
        secret_keys: secrets.keys().cloned().collect(),
        source: "api".into(),
        enabled: body.enabled.unwrap_or(true),
        inbound_policy,
        default_agent_id: body.default_agent_id,
        bot_identity: None,
    };
    let preview = preview(&write);
    write.bot_identity = Some(verify(&state, &preview, &secrets).await?);
    let mut tx = state.store.begin().await?;
    tx.insert_channel(&write).await.map_err(|err| conflict(err, &write.name))?;
    tx.audit(principal.audit("channel.create", "channel", id, json!({"type": write.channel_type, "name": write.name})))
        .await?;
    tx.commit().await?;
    let channel = state.store.channel(id).await?;
    Ok((StatusCode::CREATED, axum::Json(ChannelView::of(&state, channel))))
}

/// The channel a write would produce, for verifying before it is stored.
fn preview(write: &ChannelWrite) -> Channel {
    Channel {
        id: write.id,
        channel_type: write.channel_type.clone(),
        name: write.name.clone(),
        config: write.config.clone(),
        secrets_enc: None,
        secret_keys: write.secret_keys.clone(),
        source: write.source.clone(),
        enabled: write.enabled,
        inbound_policy: write.inbound_policy.clone(),
        default_agent_id: write.default_agent_id,
        bot_identity: None,
        created_at: chrono::DateTime::UNIX_EPOCH,
        updated_at: chrono::DateTime::UNIX_EPOCH,
    }
}

fn new_webhook_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    hex::encode(bytes)
}

fn conflict(err: cortex_store::StoreError, name: &str) -> ApiError {
    match err {
        cortex_store::StoreError::Conflict { .. } => {
            ApiError::new(Code::Conflict, format!("a channel named `{name}` already exists"))
        }
        other => other.into(),
    }
}

/// List channels with their health in this process, oldest first [viewer].
#[utoipa::path(get, path = "/channels", tag = "channels", params(PageParams), responses(
    (status = 200, body = List<ChannelView>), (status = 400, body = ErrorBody)))]
async fn list_channels(
    State(state): State<AppState>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<ChannelView>>> {
    let health = state.channels.health();
    let items: Vec<ChannelView> = state
        .store
        .channels()
        .await?
        .into_iter()
        .map(|channel| {
            let found = health.iter().find(|health| health.id == channel.id);
            ChannelView::new(channel, found)
        })
        .collect();
    Ok(axum::Json(List::from_all(items, &page, |channel| channel.id.to_string())?))
}

/// Live health of this process's channels as SSE [viewer]: one `channel.health` event
/// `{channel_id, type, state, last_error}` per channel with its current state, then one per change of
/// state (`starting|healthy|unhealthy|recovering|circuit_open|stopped`). Event ids count this process's
/// changes; there is no replay (`Last-Event-ID` is ignored): the current states sent first stand in.
#[utoipa::path(get, path = "/channels/stream", tag = "channels", responses(
    (status = 200, content_type = "text/event-stream", description = "Event stream of `channel.health` events")))]
async fn channel_health_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<crate::sse::EventStream> {
    check_origin(&state, &headers)?;
    Ok(crate::sse::channel_health(state.channels.clone(), state.shutdown.clone()))
}

/// One channel [viewer].
#[utoipa::path(get, path = "/channels/{id}", tag = "channels", params(("id" = Uuid, Path)), responses(
    (status = 200, body = ChannelView), (status = 404, body = ErrorBody)))]
async fn get_channel(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<axum::Json<ChannelView>> {
    let channel = state.store.channel(channel_uuid(&id)?).await?;
    Ok(axum::Json(ChannelView::of(&state, channel)))
}

/// Change a channel [admin]; new credentials are verified first. The running adapter restarts with
/// the new settings (or stops when disabled) within seconds.
#[utoipa::path(patch, path = "/channels/{id}", tag = "channels", params(("id" = Uuid, Path)), request_body = UpdateChannel,
    responses((status = 200, body = ChannelView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_channel(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<UpdateChannel>,
) -> ApiResult<axum::Json<ChannelView>> {
    let channel = state.store.channel(channel_uuid(&id)?).await?;
    env_read_only(&channel)?;
    let platform: Platform = channel.channel_type.parse().map_err(|_| ApiError::not_found("channel"))?;
    let aad = SecretRef::new("channel", "secrets_enc", channel.id);
    let mut secrets = match &channel.secrets_enc {
        Some(enc) => state.cipher.decrypt_json(&aad, enc).map_err(|err| {
            tracing::error!(channel_id = %channel.id, error = %err, "channel secrets cannot be decrypted");
            ApiError::new(Code::Internal, "the channel's secrets cannot be read")
        })?,
        None => BTreeMap::new(),
    };
    let mut settings = channel.config.as_object().cloned().unwrap_or_default();
    let mut reverify = false;
    if let Some(config) = &body.config {
        let (removed, given): (Map<String, Value>, Map<String, Value>) =
            config.clone().into_iter().partition(|(_, value)| value.is_null());
        let (new_settings, new_secrets) = split_config(platform, &given)?;
        for key in removed.keys() {
            settings.remove(key);
            secrets.remove(key);
        }
        reverify = !new_secrets.is_empty() || new_settings.contains_key("api_base");
        settings.extend(new_settings);
        secrets.extend(new_secrets);
    }
    if settings.get("mode").and_then(Value::as_str) == Some("webhook") {
        secrets.entry("webhook_secret".into()).or_insert_with(new_webhook_secret);
    }
    let mut write = ChannelWrite {
        id: channel.id,
        channel_type: channel.channel_type.clone(),
        name: match &body.name {
            Some(name) => check_name(name)?,
            None => channel.name.clone(),
        },
        config: Value::Object(settings),
        secrets_enc: Some(state.cipher.encrypt_json(&aad, &secrets)),
        secret_keys: secrets.keys().cloned().collect(),
        source: channel.source.clone(),
        enabled: body.enabled.unwrap_or(channel.enabled),
        inbound_policy: match &body.inbound_policy {
            Some(policy) => check_policy(Some(policy))?,
            None => channel.inbound_policy.clone(),
        },
        default_agent_id: channel.default_agent_id,
        bot_identity: channel.bot_identity.clone(),
    };
    if reverify {
        write.bot_identity = Some(verify(&state, &preview(&write), &secrets).await?);
    }
    let mut tx = state.store.begin().await?;
    tx.update_channel(&write).await.map_err(|err| conflict(err, &write.name))?;
    tx.audit(principal.audit(
        "channel.update",
        "channel",
        channel.id,
        json!({"name": write.name, "enabled": write.enabled}),
    ))
    .await?;
    tx.commit().await?;
    let channel = state.store.channel(channel.id).await?;
    Ok(axum::Json(ChannelView::of(&state, channel)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// Also delete the bindings pinned to this channel.
    #[serde(default)]
    pub force: bool,
}

/// Delete a channel [admin] and stop its adapter. With bindings pinned to it → 409 listing them,
/// unless `?force=true`.
#[utoipa::path(delete, path = "/channels/{id}", tag = "channels", params(("id" = Uuid, Path), DeleteParams), responses(
    (status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_channel(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(params): Query<DeleteParams>,
) -> ApiResult<StatusCode> {
    let channel = state.store.channel(channel_uuid(&id)?).await?;
    env_read_only(&channel)?;
    let pinned = state.store.channel_bindings(channel.id).await?;
    if !pinned.is_empty() && !params.force {
        let ids: Vec<String> = pinned.iter().map(|binding| binding.id.to_string()).collect();
        return Err(ApiError::new(
            Code::Conflict,
            format!("bindings are pinned to this channel: {}; pass ?force=true to delete them too", ids.join(", ")),
        ));
    }
    let mut tx = state.store.begin().await?;
    tx.delete_channel(channel.id).await?;
    tx.audit(principal.audit("channel.delete", "channel", channel.id, json!({"name": channel.name}))).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutboxParams {
    /// `queued`, `sending`, `delivered` or `failed`.
    pub status: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// The channel's outbound messages, newest first [viewer]: failed deliveries stay visible here.
#[utoipa::path(get, path = "/channels/{id}/outbox", tag = "channels", params(("id" = Uuid, Path), OutboxParams), responses(
    (status = 200, body = List<OutboxView>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_outbox(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<OutboxParams>,
) -> ApiResult<axum::Json<List<OutboxView>>> {
    let channel = state.store.channel(channel_uuid(&id)?).await?;
    let status = match params.status.as_deref().map(str::to_ascii_lowercase) {
        None => None,
        Some(status) if ["queued", "sending", "delivered", "failed"].contains(&status.as_str()) => Some(status),
        Some(other) => {
            return Err(ApiError::validation(&[("status", format!("unknown outbox status `{other}`"))]));
        }
    };
    let (cursor, limit) = PageParams { limit: params.limit, cursor: params.cursor }.parse()?;
    let page = state.store.list_outbox(channel.id, status.as_deref(), cursor, limit).await?;
    Ok(axum::Json(List::from_page(page, OutboxView::from)))
}

/// Queue a failed message again [operator] (409 unless it is `failed`).
#[utoipa::path(post, path = "/channels/{id}/outbox/{message_id}/retry", tag = "channels",
    params(("id" = Uuid, Path), ("message_id" = Uuid, Path)), responses((status = 202, body = OutboxView),
    (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn retry_outbox(
    State(state): State<AppState>,
    Path((id, message_id)): Path<(String, Uuid)>,
) -> ApiResult<impl IntoResponse> {
    let channel_id = channel_uuid(&id)?;
    let item = state.store.outbox_item(message_id).await?.filter(|item| item.channel_id == Some(channel_id));
    let Some(item) = item else { return Err(ApiError::not_found("outbox message")) };
    if !state.store.retry_outbox(item.id).await? {
        return Err(ApiError::new(Code::InvalidState, format!("the message is {}, not failed", item.status)));
    }
    let item = state.store.outbox_item(item.id).await?.ok_or_else(|| ApiError::not_found("outbox message"))?;
    Ok((StatusCode::ACCEPTED, axum::Json(OutboxView::from(item))))
}

/// Body of `PUT /channels/{id}/default-agent`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultAgent {
    /// The agent answering unbound chats of this channel, or `null` for none.
    pub agent_id: Option<Uuid>,
}

/// Set the agent that answers this channel's unbound chats [operator].
#[utoipa::path(put, path = "/channels/{id}/default-agent", tag = "channels", params(("id" = Uuid, Path)), request_body = DefaultAgent,
    responses((status = 200, body = ChannelView), (status = 404, body = ErrorBody)))]
async fn set_default_agent(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<DefaultAgent>,
) -> ApiResult<axum::Json<ChannelView>> {
    let channel = state.store.channel(channel_uuid(&id)?).await?;
    if let Some(agent_id) = body.agent_id {
        state.store.get_agent(&agent_id.to_string()).await?;
    }
    let write = ChannelWrite {
        id: channel.id,
        channel_type: channel.channel_type.clone(),
        name: channel.name.clone(),
        config: channel.config.clone(),
        secrets_enc: channel.secrets_enc.clone(),
        secret_keys: channel.secret_keys.clone(),
        source: channel.source.clone(),
        enabled: channel.enabled,
        inbound_policy: channel.inbound_policy.clone(),
        default_agent_id: body.agent_id,
        bot_identity: channel.bot_identity.clone(),
    };
    let mut tx = state.store.begin().await?;
    tx.update_channel(&write).await?;
    tx.audit(principal.audit("channel.default_agent", "channel", channel.id, json!({"agent_id": body.agent_id})))
        .await?;
    tx.commit().await?;
    Ok(axum::Json(ChannelView::of(&state, state.store.channel(channel.id).await?)))
}

/// Body of `POST /agents/{id}/channels`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindChat {
    pub channel_type: Platform,
    /// The platform's conversation id (Telegram chat id, Slack channel id, WhatsApp `wa_id`).
    pub chat_id: String,
    /// Pin the binding to one bot; without it the chat is bound on every channel of the type.
    pub channel_id: Option<Uuid>,
    /// `all` or `mentions` (default: all in direct chats, mentions in groups).
    pub respond_to: Option<String>,
}

/// Bind a chat to this agent [operator]; a chat bound to another agent moves here. 201 when created or
/// moved, 200 when it already pointed here.
#[utoipa::path(post, path = "/agents/{id}/channels", tag = "channels", params(("id" = String, Path, description = "Agent id or slug")),
    request_body = BindChat, responses((status = 201, body = BindingView), (status = 200, body = BindingView),
    (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn bind_chat(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<BindChat>,
) -> ApiResult<impl IntoResponse> {
    let agent = state.store.get_agent(&id).await?;
    let chat_id = body.chat_id.trim().to_owned();
    if chat_id.is_empty() || chat_id.len() > 200 {
        return Err(ApiError::validation(&[("chat_id", "must be 1–200 characters".into())]));
    }
    let respond_to = match body.respond_to.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some(value @ ("all" | "mentions")) => Some(value.to_owned()),
        Some(other) => {
            return Err(ApiError::validation(&[("respond_to", format!("must be `all` or `mentions`, got `{other}`"))]));
        }
    };
    if let Some(channel_id) = body.channel_id {
        let channel = state.store.channel(channel_id).await?;
        if channel.channel_type != body.channel_type.as_str() {
            return Err(ApiError::validation(&[("channel_id", format!("is a {} channel", channel.channel_type))]));
        }
    }
    let mut tx = state.store.begin().await?;
    let (binding, changed) = tx
        .upsert_binding(&NewBinding {
            agent_id: agent.id,
            channel_type: body.channel_type.as_str().to_owned(),
            channel_id: body.channel_id,
            chat_id,
            respond_to,
        })
        .await?;
    tx.audit(principal.audit(
        "channel.bind",
        "agent",
        agent.id,
        json!({"binding_id": binding.id, "chat_id": binding.chat_id}),
    ))
    .await?;
    tx.commit().await?;
    let status = if changed { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(BindingView::from(binding))))
}

/// The chats bound to this agent, oldest first [viewer].
#[utoipa::path(get, path = "/agents/{id}/channels", tag = "channels", params(("id" = String, Path, description = "Agent id or slug"), PageParams),
    responses((status = 200, body = List<BindingView>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_bindings(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<BindingView>>> {
    let agent = state.store.get_agent(&id).await?;
    let items = state.store.agent_bindings(agent.id).await?.into_iter().map(BindingView::from).collect();
    Ok(axum::Json(List::from_all(items, &page, |binding| binding.id.to_string())?))
}

/// Remove a binding [operator].
#[utoipa::path(delete, path = "/agents/{id}/channels/{binding_id}", tag = "channels",
    params(("id" = String, Path, description = "Agent id or slug"), ("binding_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn unbind_chat(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, binding_id)): Path<(String, Uuid)>,
) -> ApiResult<StatusCode> {
    let agent = state.store.get_agent(&id).await?;
    let mut tx = state.store.begin().await?;
    tx.delete_binding(agent.id, binding_id).await?;
    tx.audit(principal.audit("channel.unbind", "agent", agent.id, json!({"binding_id": binding_id}))).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Telegram webhook (SPEC §8.2): `X-Telegram-Bot-Api-Secret-Token` must match (401 otherwise, nothing
/// recorded); the update is recorded before the 200, so a Telegram retry finds it already there.
#[utoipa::path(post, path = "/webhooks/telegram/{channel_id}", tag = "channels", params(("channel_id" = Uuid, Path)),
    request_body(content = String, content_type = "application/json", description = "A Telegram `Update`, as sent by Telegram"),
    responses((status = 200), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn telegram_webhook(
    State(state): State<AppState>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    channel_webhook(&state, Platform::Telegram, &channel_id, &headers, &body).await
}

/// Slack Events API and interactivity webhook (SPEC §8.4): `X-Slack-Signature` (v0 HMAC-SHA256 of
/// `v0:{X-Slack-Request-Timestamp}:{raw body}` with the channel's signing secret, timestamp within 5
/// minutes) must match — 401 otherwise, nothing recorded. `url_verification` is answered with its
/// challenge; events are recorded before the 200, so Slack's retries are recorded once.
#[utoipa::path(post, path = "/webhooks/slack/{channel_id}", tag = "channels", params(("channel_id" = Uuid, Path)),
    request_body(content = String, content_type = "application/json", description = "An Events API payload, or `payload=` (form) for interactivity"),
    responses((status = 200), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn slack_webhook(
    State(state): State<AppState>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    channel_webhook(&state, Platform::Slack, &channel_id, &headers, &body).await
}

/// WhatsApp webhook verification (SPEC §8.5): `hub.mode=subscribe` with the verify token of a running
/// WhatsApp channel → 200 with `hub.challenge` as plain text; anything else → 403.
#[utoipa::path(get, path = "/webhooks/whatsapp", tag = "channels",
    params(("hub.mode" = Option<String>, Query), ("hub.verify_token" = Option<String>, Query), ("hub.challenge" = Option<String>, Query)),
    responses((status = 200, body = String, content_type = "text/plain"), (status = 403, body = ErrorBody)))]
async fn whatsapp_verify(
    State(state): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    let field = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
    match state.channels.subscription_challenge(
        Platform::WhatsApp,
        field("hub.mode"),
        field("hub.verify_token"),
        field("hub.challenge"),
    ) {
        Some(challenge) => Ok(challenge.into_response()),
        None => Err(ApiError::new(Code::Forbidden, "unknown verify token")),
    }
}

/// WhatsApp Cloud API webhook (SPEC §8.5): `X-Hub-Signature-256` (HMAC-SHA256 of the raw body with the
/// app secret) must match — 401 otherwise, nothing recorded. Routed by `metadata.phone_number_id`;
/// messages are recorded before the 200 (processing continues asynchronously), Meta's retries once.
#[utoipa::path(post, path = "/webhooks/whatsapp", tag = "channels",
    request_body(content = String, content_type = "application/json", description = "A `whatsapp_business_account` notification"),
    responses((status = 200), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn whatsapp_webhook(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    match state
        .channels
        .accept_platform_webhook(Platform::WhatsApp, WebhookRequest { headers: &headers, body: &body })
        .await
    {
        Ok(_) => Ok(axum::Json(json!({"ok": true})).into_response()),
        Err(rejection) => Err(webhook_rejection(rejection, "whatsapp")),
    }
}

/// Verifies and records a webhook request for one channel of `platform`.
async fn channel_webhook(
    state: &AppState,
    platform: Platform,
    channel_id: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let channel_id = channel_uuid(channel_id)?;
    match state.channels.accept_webhook(platform, channel_id, WebhookRequest { headers, body }).await {
        Ok(batch) => Ok(match batch.reply {
            Some(reply) => reply.into_response(),
            None => axum::Json(json!({"ok": true})).into_response(),
        }),
        Err(rejection) => Err(webhook_rejection(rejection, &channel_id.to_string())),
    }
}

/// The answer to a refused webhook request: 404 unknown, 401 unsigned, 400 unreadable, 503 not recorded.
fn webhook_rejection(rejection: WebhookRejection, channel: &str) -> ApiError {
    match rejection {
        WebhookRejection::UnknownChannel => ApiError::not_found("webhook"),
        WebhookRejection::Refused(WebhookError::Unauthenticated(reason)) => {
            tracing::warn!(channel, reason, "webhook refused");
            ApiError::new(Code::Unauthorized, "the request is not signed by the platform")
        }
        WebhookRejection::Refused(WebhookError::Malformed(reason)) => ApiError::bad_request(reason),
        WebhookRejection::Unavailable(reason) => {
            tracing::warn!(channel, reason, "recording a webhook failed");
            ApiError::new(Code::Unavailable, "try again later")
        }
    }
}
