//! Discord adapter (SPEC §8.3): our own thin client — the gateway WebSocket for receiving
//! ([`gateway`]) and REST for sending ([`rest`]); both base URLs configurable.
//!
//! Sending: `POST /channels/{id}/messages` with `flags: SUPPRESS_EMBEDS` (no link previews of agent
//! output), `allowed_mentions: {parse: []}` (agent text never pings `@everyone` or a role), a
//! `message_reference` to the message answered, buttons as one action row; Discord renders Markdown
//! itself, so text goes as written. Button presses arrive as interactions over the gateway and are
//! acknowledged with a deferred update.

mod gateway;
mod rest;
mod wire;

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use gateway::INTENTS;
use rest::Rest;

use crate::adapter::{
    AdapterError, ChannelAdapter, InboundSink, SendError, WebhookBatch, WebhookError, WebhookRequest,
};
use crate::types::{BotIdentity, ButtonPress, ChatRef, OutboundMessage, Platform, SentMessage};

/// The real REST API (v10).
pub const DEFAULT_API_BASE: &str = "https://discord.com/api/v10";
/// Message flag SUPPRESS_EMBEDS: no link previews.
pub const SUPPRESS_EMBEDS: u64 = 1 << 2;

/// Everything the adapter needs; the token stays in memory only.
#[derive(Clone)]
pub struct DiscordConfig {
    pub channel_id: Uuid,
    /// `https://discord.com/api/v10` or a fake's base (includes `/api/v10`).
    pub api_base: String,
    /// A bare `ws(s)://host[:port]`; `None` discovers it with `GET /gateway/bot`.
    pub gateway_url: Option<String>,
    pub token: String,
}

impl std::fmt::Debug for DiscordConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscordConfig")
            .field("channel_id", &self.channel_id)
            .field("api_base", &self.api_base)
            .field("gateway_url", &self.gateway_url)
            .finish_non_exhaustive()
    }
}

/// One Discord bot.
pub struct DiscordAdapter {
    channel_id: Uuid,
    rest: Rest,
    gateway_url: Option<String>,
    token: String,
    /// Learnt from `GET /users/@me` or `READY`; tells mentions of the bot apart.
    me: Mutex<Option<BotIdentity>>,
}

impl std::fmt::Debug for DiscordAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscordAdapter").field("channel_id", &self.channel_id).finish_non_exhaustive()
    }
}

impl DiscordAdapter {
    pub fn new(http: reqwest::Client, config: DiscordConfig) -> Self {
        Self {
            channel_id: config.channel_id,
            rest: Rest::new(http, &config.api_base, &config.token),
            gateway_url: config.gateway_url,
            token: config.token,
            me: Mutex::new(None),
        }
    }

    fn remember(&self, identity: BotIdentity) {
        *self.me.lock().unwrap_or_else(PoisonError::into_inner) = Some(identity);
    }

    fn bot_id(&self) -> Option<String> {
        self.me.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(|me| me.id.clone())
    }

    /// The configured gateway URL, else the one `GET /gateway/bot` names.
    async fn gateway_url(&self) -> Result<String, AdapterError> {
        if let Some(url) = &self.gateway_url {
            return Ok(url.clone());
        }
        let answer = self.rest.call(Method::GET, "/gateway/bot", None).await?;
        answer["url"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| AdapterError::Protocol("GET /gateway/bot named no url".into()))
    }

    /// The `POST /channels/{id}/messages` (or edit) body.
    fn message_body(message: &OutboundMessage) -> Value {
        let mut body = json!({
            "content": message.text,
            "allowed_mentions": {"parse": []},
        });
        if message.disable_link_previews {
            body["flags"] = json!(SUPPRESS_EMBEDS);
        }
        if let Some(reply_to) = &message.reply_to {
            body["message_reference"] = json!({"message_id": reply_to, "fail_if_not_exists": false});
        }
        if !message.buttons.is_empty() {
            let buttons: Vec<Value> = message
                .buttons
                .iter()
                .map(|button| json!({"type": 2, "style": 1, "label": button.label, "custom_id": button.data}))
                .collect();
            body["components"] = json!([{"type": 1, "components": buttons}]);
        }
        body
    }
}

#[async_trait]
impl ChannelAdapter for DiscordAdapter {
    fn platform(&self) -> Platform {
        Platform::Discord
    }

    async fn verify(&self) -> Result<BotIdentity, AdapterError> {
        let me: wire::User = serde_json::from_value(self.rest.call(Method::GET, "/users/@me", None).await?)
            .map_err(|err| AdapterError::Protocol(format!("GET /users/@me: {err}")))?;
        let identity = BotIdentity { id: me.id.clone(), name: me.display_name(), username: me.username };
        self.remember(identity.clone());
        Ok(identity)
    }

    async fn run(&self, sink: Arc<dyn InboundSink>, cancel: CancellationToken) -> Result<(), AdapterError> {
        self.verify().await?;
        sink.alive();
        gateway::run(self, sink.as_ref(), &cancel).await
    }

    fn receives_by_connection(&self) -> bool {
        true
    }

    async fn send(&self, message: &OutboundMessage) -> Result<SentMessage, SendError> {
        let path = format!("/channels/{}/messages", message.chat.chat_id);
        let sent = self.rest.call(Method::POST, &path, Some(&Self::message_body(message))).await?;
        let id = sent["id"].as_str().ok_or_else(|| SendError::transient("Discord answered a message without an id"))?;
        Ok(SentMessage { platform_message_id: id.to_owned() })
    }

    async fn edit(&self, platform_message_id: &str, message: &OutboundMessage) -> Result<(), SendError> {
        let path = format!("/channels/{}/messages/{platform_message_id}", message.chat.chat_id);
        let mut body = Self::message_body(message);
        if let Some(body) = body.as_object_mut() {
            body.remove("message_reference");
            body.entry("components").or_insert_with(|| json!([]));
        }
        self.rest.call(Method::PATCH, &path, Some(&body)).await?;
        Ok(())
    }

    async fn typing(&self, chat: &ChatRef) -> Result<(), SendError> {
        self.rest.call(Method::POST, &format!("/channels/{}/typing", chat.chat_id), None).await?;
        Ok(())
    }

    async fn answer_interaction(&self, press: &ButtonPress, text: Option<&str>) -> Result<(), SendError> {
        let mut parts = press.platform_interaction_id.splitn(3, ':');
        let (Some("ix"), Some(id), Some(token)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SendError::permanent("not a Discord interaction id"));
        };
        // Within 3 s: a deferred update (type 6), or an ephemeral notice (type 4, flag 64) with text.
        let body = match text {
            Some(text) => json!({"type": 4, "data": {"content": text, "flags": 64, "allowed_mentions": {"parse": []}}}),
            None => json!({"type": 6}),
        };
        self.rest.call(Method::POST, &format!("/interactions/{id}/{token}/callback"), Some(&body)).await?;
        Ok(())
    }

    fn webhook(&self, _request: WebhookRequest<'_>) -> Option<Result<WebhookBatch, WebhookError>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Button, ChatKind};

    #[test]
    fn outbound_bodies_suppress_embeds_and_mentions_and_carry_replies_and_buttons() {
        let mut message = OutboundMessage::text(
            ChatRef { chat_id: "10".into(), thread_id: None, kind: ChatKind::Group },
            "see https://x @everyone",
        );
        message.reply_to = Some("55".into());
        message.buttons = vec![Button { label: "Approve".into(), data: "apr:a:1".into() }];
        let body = DiscordAdapter::message_body(&message);
        assert_eq!(body["content"], json!("see https://x @everyone"));
        assert_eq!(body["flags"], json!(4));
        assert_eq!(body["allowed_mentions"], json!({"parse": []}));
        assert_eq!(body["message_reference"]["message_id"], json!("55"));
        assert_eq!(body["components"][0]["components"][0]["custom_id"], json!("apr:a:1"));
    }
}
