//! Telegram Bot API adapter (SPEC §8.2): long polling with the offset persisted through the sink, or
//! webhook mode with the `secret_token` check; HTML rendering with a plain-text fallback; 429
//! `retry_after` honoured.
//!
//! Polling: each `getUpdates` answer is delivered event by event (each recorded before the next), then
//! the offset after the last update is saved. A crash in between replays those updates into the dedupe
//! log, so a restart neither loses nor repeats an update.

mod api;
mod wire;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::adapter::{
    AdapterError, ChannelAdapter, InboundSink, SendError, WebhookBatch, WebhookError, WebhookRequest,
};
use crate::text::telegram_html;
use crate::types::{BotIdentity, ButtonPress, ChatRef, OutboundMessage, Platform, SentMessage};
use api::{ApiError, BotApi};
use wire::{Me, Update};

/// The header Telegram sets on webhook requests to the `secret_token` given in `setWebhook`.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// Timeout of an ordinary (not long-poll) API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How updates arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TelegramMode {
    /// `getUpdates` long polling, `timeout` seconds per poll.
    Polling { timeout: Duration },
    /// Telegram posts updates to our webhook. `url` is registered with `setWebhook` when the adapter
    /// starts; `secret` is required on every request unless `None` (an operator switched the check off
    /// for peers that cannot send it).
    Webhook { url: Option<String>, secret: Option<String> },
}

/// Everything the adapter needs; the token stays in memory only.
#[derive(Clone)]
pub struct TelegramConfig {
    pub channel_id: Uuid,
    /// `https://api.telegram.org` or a fake's base.
    pub api_base: String,
    pub token: String,
    pub mode: TelegramMode,
}

impl std::fmt::Debug for TelegramConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramConfig")
            .field("channel_id", &self.channel_id)
            .field("api_base", &self.api_base)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// One Telegram bot.
#[derive(Debug)]
pub struct TelegramAdapter {
    channel_id: Uuid,
    api: BotApi,
    mode: TelegramMode,
    /// Learnt from `getMe`; used to tell mentions and replies to the bot in groups.
    me: Mutex<Option<BotIdentity>>,
}

impl TelegramAdapter {
    pub fn new(http: reqwest::Client, config: TelegramConfig) -> Self {
        Self {
            channel_id: config.channel_id,
            api: BotApi::new(http, &config.api_base, &config.token),
            mode: config.mode,
            me: Mutex::new(None),
        }
    }

    fn events(&self, updates: Vec<Update>) -> Vec<(i64, Option<crate::types::InboundEvent>)> {
        let me = self.me.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let me = Me {
            channel_id: self.channel_id,
            id: me.as_ref().map(|me| me.id.as_str()),
            username: me.as_ref().and_then(|me| me.username.as_deref()),
        };
        updates.into_iter().map(|update| (update.update_id, update.into_event(&me))).collect()
    }

    async fn poll(
        &self,
        sink: &dyn InboundSink,
        cancel: &CancellationToken,
        timeout: Duration,
    ) -> Result<(), AdapterError> {
        // A webhook left registered makes getUpdates fail with 409; polling owns the bot now.
        if let Err(err) = self.api.call("deleteWebhook", &json!({}), CALL_TIMEOUT).await {
            tracing::debug!(error = %err.description_for_log(), "deleteWebhook failed");
        }
        let mut offset: Option<i64> = sink.load_cursor().await?.and_then(|cursor| cursor.parse().ok());
        loop {
            let body = json!({
                "offset": offset,
                "timeout": timeout.as_secs(),
                "allowed_updates": ["message", "callback_query"],
            });
            let answer = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                answer = self.api.call("getUpdates", &body, timeout + CALL_TIMEOUT) => answer,
            };
            let updates = match answer {
                Ok(result) => serde_json::from_value::<Vec<Update>>(result)
                    .map_err(|err| AdapterError::Protocol(format!("getUpdates result: {err}")))?,
                Err(ApiError::Api { status: 429, retry_after, .. }) => {
                    let wait = retry_after.unwrap_or(Duration::from_secs(1));
                    tokio::select! {
                        () = cancel.cancelled() => return Ok(()),
                        () = tokio::time::sleep(wait) => continue,
                    }
                }
                Err(err) => return Err(err.into()),
            };
            sink.alive();
            let Some(last) = updates.iter().map(|update| update.update_id).max() else {
                continue;
            };
            for (_, event) in self.events(updates) {
                if let Some(event) = event {
                    sink.deliver(event).await?;
                }
            }
            offset = Some(last + 1);
            sink.save_cursor(&(last + 1).to_string()).await?;
        }
    }

    fn chat_id(chat: &ChatRef) -> Value {
        match chat.chat_id.parse::<i64>() {
            Ok(number) => json!(number),
            Err(_) => json!(chat.chat_id),
        }
    }

    /// The `sendMessage`/`editMessageText` body; `html` renders Markdown, else the text goes as is.
    fn message_body(message: &OutboundMessage, html: bool) -> Value {
        let mut body = json!({
            "chat_id": Self::chat_id(&message.chat),
            "text": if html { telegram_html(&message.text) } else { message.text.clone() },
            "link_preview_options": {"is_disabled": message.disable_link_previews},
        });
        if html {
            body["parse_mode"] = json!("HTML");
        }
        if let Some(thread) = message.chat.thread_id.as_ref().and_then(|thread| thread.parse::<i64>().ok()) {
            body["message_thread_id"] = json!(thread);
        }
        if let Some(reply_to) = message.reply_to.as_ref().and_then(|id| id.parse::<i64>().ok()) {
            body["reply_parameters"] = json!({"message_id": reply_to, "allow_sending_without_reply": true});
        }
        if !message.buttons.is_empty() {
            let rows: Vec<Value> = message
                .buttons
                .iter()
                .map(|button| json!([{"text": button.label, "callback_data": button.data}]))
                .collect();
            body["reply_markup"] = json!({"inline_keyboard": rows});
        }
        body
    }

    /// Calls `method` with rendered HTML, and once more as plain text if Telegram refuses the markup.
    async fn call_rendered(&self, method: &str, message: &OutboundMessage, extra: &Value) -> Result<Value, ApiError> {
        let with = |html: bool| {
            let mut body = Self::message_body(message, html);
            if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
                body.extend(extra.clone());
            }
            body
        };
        match self.api.call(method, &with(true), CALL_TIMEOUT).await {
            Err(err) if err.is_parse_error() => self.api.call(method, &with(false), CALL_TIMEOUT).await,
            other => other,
        }
    }
}

impl ApiError {
    fn description_for_log(&self) -> String {
        SendError::from(self.clone()).message
    }
}

#[async_trait]
impl ChannelAdapter for TelegramAdapter {
    fn platform(&self) -> Platform {
        Platform::Telegram
    }

    async fn verify(&self) -> Result<BotIdentity, AdapterError> {
        let me: wire::User = serde_json::from_value(self.api.call("getMe", &json!({}), CALL_TIMEOUT).await?)
            .map_err(|err| AdapterError::Protocol(format!("getMe result: {err}")))?;
        let identity = BotIdentity { id: me.id.clone(), name: me.display_name(), username: me.username };
        *self.me.lock().unwrap_or_else(PoisonError::into_inner) = Some(identity.clone());
        Ok(identity)
    }

    async fn run(&self, sink: Arc<dyn InboundSink>, cancel: CancellationToken) -> Result<(), AdapterError> {
        self.verify().await?;
        sink.alive();
        match &self.mode {
            TelegramMode::Polling { timeout } => self.poll(sink.as_ref(), &cancel, *timeout).await,
            TelegramMode::Webhook { url, secret } => {
                if let Some(url) = url {
                    let mut body = json!({"url": url, "allowed_updates": ["message", "callback_query"]});
                    if let Some(secret) = secret {
                        body["secret_token"] = json!(secret);
                    }
                    self.api.call("setWebhook", &body, CALL_TIMEOUT).await?;
                }
                cancel.cancelled().await;
                Ok(())
            }
        }
    }

    fn receives_by_connection(&self) -> bool {
        matches!(self.mode, TelegramMode::Polling { .. })
    }

    async fn send(&self, message: &OutboundMessage) -> Result<SentMessage, SendError> {
        let result = self.call_rendered("sendMessage", message, &json!({})).await?;
        let sent: wire::Message =
            serde_json::from_value(result).map_err(|err| SendError::transient(format!("sendMessage result: {err}")))?;
        Ok(SentMessage { platform_message_id: sent.message_id })
    }

    async fn edit(&self, platform_message_id: &str, message: &OutboundMessage) -> Result<(), SendError> {
        let message_id = platform_message_id
            .parse::<i64>()
            .map_err(|_| SendError::permanent(format!("`{platform_message_id}` is not a Telegram message id")))?;
        match self.call_rendered("editMessageText", message, &json!({"message_id": message_id})).await {
            Err(err) if err.is_not_modified() => Ok(()),
            other => other.map(drop).map_err(SendError::from),
        }
    }

    async fn typing(&self, chat: &ChatRef) -> Result<(), SendError> {
        let mut body = json!({"chat_id": Self::chat_id(chat), "action": "typing"});
        if let Some(thread) = chat.thread_id.as_ref().and_then(|thread| thread.parse::<i64>().ok()) {
            body["message_thread_id"] = json!(thread);
        }
        self.api.call("sendChatAction", &body, CALL_TIMEOUT).await?;
        Ok(())
    }

    async fn answer_interaction(&self, press: &ButtonPress, text: Option<&str>) -> Result<(), SendError> {
        let id = press.platform_interaction_id.strip_prefix("cb:").unwrap_or(&press.platform_interaction_id);
        let mut body = json!({"callback_query_id": id});
        if let Some(text) = text {
            body["text"] = json!(text);
        }
        self.api.call("answerCallbackQuery", &body, CALL_TIMEOUT).await?;
        Ok(())
    }

    fn webhook(&self, request: WebhookRequest<'_>) -> Option<Result<WebhookBatch, WebhookError>> {
        let TelegramMode::Webhook { secret, .. } = &self.mode else {
            return None;
        };
        Some(self.parse_webhook(secret.as_deref(), request))
    }
}

impl TelegramAdapter {
    fn parse_webhook(&self, secret: Option<&str>, request: WebhookRequest<'_>) -> Result<WebhookBatch, WebhookError> {
        if let Some(secret) = secret {
            let given = request.headers.get(SECRET_HEADER).map(|value| value.as_bytes()).unwrap_or_default();
            if !bool::from(given.ct_eq(secret.as_bytes())) {
                return Err(WebhookError::Unauthenticated("missing or wrong X-Telegram-Bot-Api-Secret-Token"));
            }
        }
        let update: Update =
            serde_json::from_slice(request.body).map_err(|err| WebhookError::Malformed(err.to_string()))?;
        let events = self.events(vec![update]).into_iter().filter_map(|(_, event)| event).collect();
        Ok(WebhookBatch { events, reply: None })
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderMap, HeaderValue};

    use super::*;

    fn adapter(secret: Option<&str>) -> TelegramAdapter {
        let _ = rustls::crypto::ring::default_provider().install_default();
        TelegramAdapter::new(
            reqwest::Client::new(),
            TelegramConfig {
                channel_id: Uuid::nil(),
                api_base: "http://127.0.0.1:9".into(),
                token: "1:secret".into(),
                mode: TelegramMode::Webhook { url: None, secret: secret.map(str::to_owned) },
            },
        )
    }

    const UPDATE: &[u8] =
        br#"{"update_id": 1, "message": {"message_id": 2, "chat": {"id": 3, "type": "private"}, "from": {"id": 3}, "text": "hi"}}"#;

    #[test]
    fn webhook_requests_need_the_secret_token() {
        let adapter = adapter(Some("s3cret"));
        let mut headers = HeaderMap::new();
        let request = |headers: &HeaderMap| adapter.webhook(WebhookRequest { headers, body: UPDATE }).unwrap();
        assert!(matches!(request(&headers), Err(WebhookError::Unauthenticated(_))));
        headers.insert(SECRET_HEADER, HeaderValue::from_static("s3creT"));
        assert!(matches!(request(&headers), Err(WebhookError::Unauthenticated(_))));
        headers.insert(SECRET_HEADER, HeaderValue::from_static("s3cret"));
        assert_eq!(request(&headers).unwrap().events.len(), 1);
        let garbage = adapter.webhook(WebhookRequest { headers: &headers, body: b"{" }).unwrap();
        assert!(matches!(garbage, Err(WebhookError::Malformed(_))));
    }

    #[test]
    fn the_secret_check_can_be_switched_off() {
        let adapter = adapter(None);
        let batch = adapter.webhook(WebhookRequest { headers: &HeaderMap::new(), body: UPDATE }).unwrap().unwrap();
        assert_eq!(batch.events.len(), 1);
    }

    #[test]
    fn outbound_bodies_disable_previews_and_carry_threads_replies_and_buttons() {
        let mut message = OutboundMessage::text(
            ChatRef { chat_id: "-100".into(), thread_id: Some("7".into()), kind: crate::types::ChatKind::Group },
            "see <https://x>",
        );
        message.reply_to = Some("5".into());
        message.buttons = vec![crate::types::Button { label: "Approve".into(), data: "a:1".into() }];
        let body = TelegramAdapter::message_body(&message, true);
        assert_eq!(body["chat_id"], json!(-100));
        assert_eq!(body["text"], json!("see &lt;https://x&gt;"));
        assert_eq!(body["parse_mode"], json!("HTML"));
        assert_eq!(body["link_preview_options"], json!({"is_disabled": true}));
        assert_eq!(body["message_thread_id"], json!(7));
        assert_eq!(body["reply_parameters"]["message_id"], json!(5));
        assert_eq!(body["reply_markup"], json!({"inline_keyboard": [[{"text": "Approve", "callback_data": "a:1"}]]}));
        let plain = TelegramAdapter::message_body(&message, false);
        assert_eq!((plain["text"].as_str(), plain.get("parse_mode")), (Some("see <https://x>"), None));
    }
}
