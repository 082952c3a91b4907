//! Slack adapter (SPEC §8.4): our own thin client. Socket Mode when an app-level token (`xapp-…`) is set —
//! `apps.connections.open` → WebSocket, every envelope acknowledged by `envelope_id` once recorded
//! (before any processing), a new connection on `disconnect` or a dropped socket — and the Events API
//! webhook `POST /webhooks/slack/{channel_id}` when a signing secret is set (`X-Slack-Signature` v0
//! HMAC-SHA256 over `v0:{timestamp}:{raw body}`, timestamp within 5 minutes, constant-time compare;
//! `url_verification` answered with its challenge).
//!
//! Messages: `message` (DMs and channels) and `app_mention`; messages with a `bot_id` or a `subtype`
//! are ignored. The platform message id is `{channel}:{ts}`, so the `message` and `app_mention` events of
//! one message are recorded once. Replies go to the thread (`thread_ts`: the message's thread, else in a
//! channel the message itself) with `unfurl_links: false`; 429 `Retry-After` is handed to the outbox.

mod api;
mod socket;
mod wire;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::adapter::{
    AdapterError, ChannelAdapter, InboundSink, SendError, WebhookBatch, WebhookError, WebhookRequest,
};
use crate::signature::hmac_sha256_matches;
use crate::types::{BotIdentity, ButtonPress, ChatRef, OutboundMessage, Platform, SentMessage};
use api::WebApi;

/// The real Web API.
pub const DEFAULT_API_BASE: &str = "https://slack.com/api";
/// How old (or how far in the future) a signed request's timestamp may be.
pub const SIGNATURE_WINDOW: Duration = Duration::from_secs(300);
/// Header carrying `v0=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-slack-signature";
/// Header carrying the request's Unix timestamp.
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";

/// Everything the adapter needs; tokens and the signing secret stay in memory only.
#[derive(Clone)]
pub struct SlackConfig {
    pub channel_id: Uuid,
    /// `https://slack.com/api` or a fake's base (ends in `/api`).
    pub api_base: String,
    /// `xoxb-…`: sending and `auth.test`.
    pub bot_token: String,
    /// `xapp-…`: Socket Mode; `None` receives through the Events API webhook only.
    pub app_token: Option<String>,
    /// Verifies Events API webhooks; `None` refuses every webhook request.
    pub signing_secret: Option<String>,
}

impl std::fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackConfig")
            .field("channel_id", &self.channel_id)
            .field("api_base", &self.api_base)
            .field("socket_mode", &self.app_token.is_some())
            .finish_non_exhaustive()
    }
}

/// One Slack app.
pub struct SlackAdapter {
    channel_id: Uuid,
    api: WebApi,
    app_token: Option<String>,
    signing_secret: Option<String>,
    /// The bot's user id from `auth.test`; tells mentions apart.
    me: Mutex<Option<BotIdentity>>,
}

impl std::fmt::Debug for SlackAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackAdapter").field("channel_id", &self.channel_id).finish_non_exhaustive()
    }
}

/// Slack mrkdwn: `&`, `<`, `>` escaped (so agent text cannot forge links or mentions), `**bold**` → `*bold*`.
pub fn slack_mrkdwn(markdown: &str) -> String {
    let escaped = markdown.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    escaped.replace("**", "*")
}

impl SlackAdapter {
    pub fn new(http: reqwest::Client, config: SlackConfig) -> Self {
        Self {
            channel_id: config.channel_id,
            api: WebApi::new(http, &config.api_base, &config.bot_token),
            app_token: config.app_token,
            signing_secret: config.signing_secret,
            me: Mutex::new(None),
        }
    }

    fn bot_user_id(&self) -> Option<String> {
        self.me.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(|me| me.id.clone())
    }

    /// The `chat.postMessage`/`chat.update` body.
    fn message_body(message: &OutboundMessage) -> Value {
        let text = slack_mrkdwn(&message.text);
        let mut body = json!({
            "channel": message.chat.chat_id,
            "text": text,
            "unfurl_links": !message.disable_link_previews,
            "unfurl_media": !message.disable_link_previews,
        });
        if let Some(thread) = &message.chat.thread_id {
            body["thread_ts"] = json!(thread);
        }
        if !message.buttons.is_empty() {
            let buttons: Vec<Value> = message
                .buttons
                .iter()
                .map(|button| {
                    json!({"type": "button", "text": {"type": "plain_text", "text": button.label},
                           "action_id": button.data, "value": button.data})
                })
                .collect();
            body["blocks"] = json!([
                {"type": "section", "text": {"type": "mrkdwn", "text": text}},
                {"type": "actions", "elements": buttons},
            ]);
        }
        body
    }

    /// Verifies the signature and window of an Events API request, then parses it.
    fn parse_webhook(&self, request: WebhookRequest<'_>, now: i64) -> Result<WebhookBatch, WebhookError> {
        let secret = self.signing_secret.as_deref().ok_or(WebhookError::Unauthenticated("no signing secret is set"))?;
        let header = |name: &str| request.headers.get(name).and_then(|value| value.to_str().ok());
        let timestamp = header(TIMESTAMP_HEADER).ok_or(WebhookError::Unauthenticated("missing timestamp"))?;
        let at: i64 = timestamp.trim().parse().map_err(|_| WebhookError::Unauthenticated("unreadable timestamp"))?;
        if now.abs_diff(at) > SIGNATURE_WINDOW.as_secs() {
            return Err(WebhookError::Unauthenticated("timestamp outside the 5-minute window"));
        }
        let signature = header(SIGNATURE_HEADER)
            .and_then(|value| value.strip_prefix("v0="))
            .ok_or(WebhookError::Unauthenticated("missing X-Slack-Signature"))?;
        if !hmac_sha256_matches(secret.as_bytes(), &[b"v0:", timestamp.as_bytes(), b":", request.body], signature) {
            return Err(WebhookError::Unauthenticated("wrong X-Slack-Signature"));
        }
        let bot = self.bot_user_id();
        wire::parse_payload(request.body, self.channel_id, bot.as_deref())
    }
}

#[async_trait]
impl ChannelAdapter for SlackAdapter {
    fn platform(&self) -> Platform {
        Platform::Slack
    }

    async fn verify(&self) -> Result<BotIdentity, AdapterError> {
        let answer = self.api.call("auth.test", &json!({}), None).await?;
        let id =
            answer["user_id"].as_str().ok_or_else(|| AdapterError::Protocol("auth.test named no user_id".into()))?;
        let name = answer["user"].as_str().unwrap_or(id).to_owned();
        let identity = BotIdentity { id: id.to_owned(), username: Some(name.clone()), name };
        *self.me.lock().unwrap_or_else(PoisonError::into_inner) = Some(identity.clone());
        Ok(identity)
    }

    async fn run(&self, sink: Arc<dyn InboundSink>, cancel: CancellationToken) -> Result<(), AdapterError> {
        self.verify().await?;
        sink.alive();
        match &self.app_token {
            Some(app_token) => socket::run(self, app_token, sink.as_ref(), &cancel).await,
            None => {
                cancel.cancelled().await;
                Ok(())
            }
        }
    }

    fn receives_by_connection(&self) -> bool {
        self.app_token.is_some()
    }

    async fn send(&self, message: &OutboundMessage) -> Result<SentMessage, SendError> {
        let answer = self.api.call("chat.postMessage", &Self::message_body(message), None).await?;
        let ts = answer["ts"].as_str().ok_or_else(|| SendError::transient("chat.postMessage answered no ts"))?;
        Ok(SentMessage { platform_message_id: ts.to_owned() })
    }

    async fn edit(&self, platform_message_id: &str, message: &OutboundMessage) -> Result<(), SendError> {
        let mut body = Self::message_body(message);
        body["ts"] = json!(platform_message_id);
        if message.buttons.is_empty() {
            // Without `blocks` Slack keeps the old ones (and their buttons).
            body["blocks"] = json!([{"type": "section", "text": {"type": "mrkdwn", "text": body["text"].clone()}}]);
        }
        if let Some(body) = body.as_object_mut() {
            body.remove("thread_ts");
        }
        self.api.call("chat.update", &body, None).await?;
        Ok(())
    }

    async fn typing(&self, _chat: &ChatRef) -> Result<(), SendError> {
        // Slack has no typing indicator for bots.
        Ok(())
    }

    async fn answer_interaction(&self, press: &ButtonPress, text: Option<&str>) -> Result<(), SendError> {
        // The envelope (or webhook request) was already acknowledged when the press was recorded; a
        // notice goes to the presser alone.
        let Some(text) = text else { return Ok(()) };
        let mut body = json!({"channel": press.chat.chat_id, "user": press.sender.platform_user_id,
                              "text": slack_mrkdwn(text)});
        if let Some(thread) = &press.chat.thread_id {
            body["thread_ts"] = json!(thread);
        }
        self.api.call("chat.postEphemeral", &body, None).await?;
        Ok(())
    }

    fn webhook(&self, request: WebhookRequest<'_>) -> Option<Result<WebhookBatch, WebhookError>> {
        Some(self.parse_webhook(request, chrono::Utc::now().timestamp()))
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderMap, HeaderValue};

    use super::*;
    use crate::signature::hmac_sha256_hex;
    use crate::types::ChatKind;

    fn adapter(secret: Option<&str>) -> SlackAdapter {
        let _ = rustls::crypto::ring::default_provider().install_default();
        SlackAdapter::new(
            reqwest::Client::new(),
            SlackConfig {
                channel_id: Uuid::nil(),
                api_base: "http://127.0.0.1:9/api".into(),
                bot_token: "xoxb-1".into(),
                app_token: None,
                signing_secret: secret.map(str::to_owned),
            },
        )
    }

    fn signed(secret: &str, at: i64, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let timestamp = at.to_string();
        let mac = hmac_sha256_hex(secret.as_bytes(), &[b"v0:", timestamp.as_bytes(), b":", body]);
        headers.insert(TIMESTAMP_HEADER, HeaderValue::from_str(&timestamp).unwrap());
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(&format!("v0={mac}")).unwrap());
        headers
    }

    const NOW: i64 = 1_790_000_000;
    const EVENT: &[u8] = br#"{"type":"event_callback","event_id":"Ev1","event":{"type":"message","channel":"D1","user":"U1","text":"hi","ts":"1.000001","channel_type":"im"}}"#;

    #[test]
    fn webhooks_need_a_fresh_valid_signature_over_the_raw_body() {
        let signed_adapter = adapter(Some("shh"));
        let check = |headers: &HeaderMap, body: &[u8], now: i64| {
            signed_adapter.parse_webhook(WebhookRequest { headers, body }, now)
        };
        assert_eq!(check(&signed("shh", NOW, EVENT), EVENT, NOW).unwrap().events.len(), 1);
        assert_eq!(check(&signed("shh", NOW - 299, EVENT), EVENT, NOW).unwrap().events.len(), 1);
        let stale = check(&signed("shh", NOW - 301, EVENT), EVENT, NOW);
        assert!(matches!(stale, Err(WebhookError::Unauthenticated(_))));
        let future = check(&signed("shh", NOW + 301, EVENT), EVENT, NOW);
        assert!(matches!(future, Err(WebhookError::Unauthenticated(_))));
        let wrong_secret = check(&signed("shhh", NOW, EVENT), EVENT, NOW);
        assert!(matches!(wrong_secret, Err(WebhookError::Unauthenticated(_))));
        let mut tampered = EVENT.to_vec();
        let at = tampered.len() - 3;
        tampered[at] = b'x';
        assert!(matches!(check(&signed("shh", NOW, EVENT), &tampered, NOW), Err(WebhookError::Unauthenticated(_))));
        assert!(matches!(check(&HeaderMap::new(), EVENT, NOW), Err(WebhookError::Unauthenticated(_))));
        let unsigned =
            adapter(None).parse_webhook(WebhookRequest { headers: &signed("shh", NOW, EVENT), body: EVENT }, NOW);
        assert!(matches!(unsigned, Err(WebhookError::Unauthenticated(_))));
    }

    #[test]
    fn url_verification_is_answered_with_the_challenge() {
        let body = br#"{"type":"url_verification","token":"x","challenge":"c-123"}"#;
        let batch = adapter(Some("shh"))
            .parse_webhook(WebhookRequest { headers: &signed("shh", NOW, body), body }, NOW)
            .unwrap();
        assert_eq!((batch.reply.as_deref(), batch.events.len()), (Some("c-123"), 0));
    }

    #[test]
    fn outbound_bodies_escape_turn_unfurling_off_and_reply_in_the_thread() {
        let mut message = OutboundMessage::text(
            ChatRef { chat_id: "C1".into(), thread_id: Some("1.5".into()), kind: ChatKind::Group },
            "**done** <!channel> & https://x",
        );
        message.buttons = vec![crate::types::Button { label: "Approve".into(), data: "apr:a:1".into() }];
        let body = SlackAdapter::message_body(&message);
        assert_eq!(body["text"], json!("*done* &lt;!channel&gt; &amp; https://x"));
        assert_eq!((body["unfurl_links"].clone(), body["unfurl_media"].clone()), (json!(false), json!(false)));
        assert_eq!(body["thread_ts"], json!("1.5"));
        assert_eq!(body["blocks"][1]["elements"][0]["action_id"], json!("apr:a:1"));
    }
}
