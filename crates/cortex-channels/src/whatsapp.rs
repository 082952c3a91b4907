//! WhatsApp Cloud API adapter (SPEC §8.5): inbound only through the webhook — `GET /webhooks/whatsapp`
//! answers Meta's verify handshake (`hub.mode=subscribe`, `hub.verify_token` compared in constant time,
//! `hub.challenge` echoed), `POST /webhooks/whatsapp` needs `X-Hub-Signature-256: sha256=<hex>` =
//! HMAC-SHA256(app secret, raw body), compared in constant time — and sending through the Graph API
//! (`POST {base}/{phone_number_id}/messages`, bearer token, `messaging_product: "whatsapp"`, link
//! previews off). Free-form text outside the 24-hour customer-service window is refused by the
//! platform (error 131047): that is a permanent failure with code `outside_window` and the platform's
//! reason, so the outbox row is `failed` and visible to operators.
//!
//! Several numbers may share the one webhook URL: a payload is routed to the channel whose
//! `phone_number_id` it names (`metadata.phone_number_id`); other entries are ignored.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::adapter::{
    AdapterError, ChannelAdapter, InboundSink, SendError, WebhookBatch, WebhookError, WebhookRequest,
};
use crate::signature::hmac_sha256_matches;
use crate::types::{
    AttachmentRef, BotIdentity, ButtonPress, ChatKind, ChatRef, Inbound, InboundEvent, OutboundMessage, Platform,
    Sender, SentMessage,
};

/// The real Graph API.
pub const DEFAULT_API_BASE: &str = "https://graph.facebook.com/v21.0";
/// Header carrying `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// Graph error code for free-form messages outside the 24-hour window.
const OUTSIDE_WINDOW: i64 = 131_047;
/// Graph error codes for rate limits.
const RATE_LIMITS: [i64; 4] = [4, 80_007, 130_429, 131_056];
/// Longest button title WhatsApp shows.
const MAX_BUTTON_TITLE: usize = 20;
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the adapter needs; the token and secrets stay in memory only.
#[derive(Clone)]
pub struct WhatsAppConfig {
    pub channel_id: Uuid,
    /// `https://graph.facebook.com/v21.0` or a fake's base.
    pub api_base: String,
    pub phone_number_id: String,
    pub access_token: String,
    /// Signs webhook bodies (`X-Hub-Signature-256`).
    pub app_secret: String,
    /// What Meta's verify handshake must present.
    pub verify_token: String,
}

impl std::fmt::Debug for WhatsAppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhatsAppConfig")
            .field("channel_id", &self.channel_id)
            .field("api_base", &self.api_base)
            .field("phone_number_id", &self.phone_number_id)
            .finish_non_exhaustive()
    }
}

/// One WhatsApp business number.
pub struct WhatsAppAdapter {
    http: reqwest::Client,
    config: WhatsAppConfig,
}

impl std::fmt::Debug for WhatsAppAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhatsAppAdapter").field("config", &self.config).finish()
    }
}

/// A Graph API failure.
#[derive(Debug)]
struct GraphError {
    status: u16,
    code: Option<i64>,
    message: String,
    retry_after: Option<Duration>,
}

impl From<GraphError> for SendError {
    fn from(err: GraphError) -> Self {
        let message = format!("WhatsApp error {}: {}", err.status, err.message);
        if err.code == Some(OUTSIDE_WINDOW) {
            return SendError { message, code: Some("outside_window".into()), retry_after: None, permanent: true };
        }
        if err.status == 429 || err.code.is_some_and(|code| RATE_LIMITS.contains(&code)) {
            return SendError {
                message,
                code: Some("rate_limited".into()),
                retry_after: err.retry_after,
                permanent: false,
            };
        }
        if err.status == 401 || err.code == Some(190) {
            return SendError { message, code: Some("unauthorized".into()), retry_after: None, permanent: true };
        }
        if err.status >= 500 || err.status == 0 {
            return SendError::transient(message);
        }
        SendError::permanent(message)
    }
}

impl From<GraphError> for AdapterError {
    fn from(err: GraphError) -> Self {
        let message = format!("WhatsApp error {}: {}", err.status, err.message);
        match (err.status, err.code) {
            (401 | 403, _) | (_, Some(190)) => AdapterError::Unauthorized(message),
            (0, _) => AdapterError::Unavailable(message),
            (status, _) if status >= 500 => AdapterError::Unavailable(message),
            _ => AdapterError::Unauthorized(message),
        }
    }
}

impl WhatsAppAdapter {
    pub fn new(http: reqwest::Client, config: WhatsAppConfig) -> Self {
        Self { http, config }
    }

    /// Calls the Graph API; `body` `None` is a GET.
    async fn call(&self, path: &str, body: Option<&Value>) -> Result<Value, GraphError> {
        let url = format!("{}/{path}", self.config.api_base.trim_end_matches('/'));
        let request = match body {
            Some(body) => self.http.post(url).json(body),
            None => self.http.get(url),
        };
        let network = |err: reqwest::Error| GraphError {
            status: 0,
            code: None,
            message: format!("unreachable: {}", err.without_url()),
            retry_after: None,
        };
        let response =
            request.bearer_auth(&self.config.access_token).timeout(CALL_TIMEOUT).send().await.map_err(network)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response.bytes().await.map_err(network)?;
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status < 300 && answer.is_object() {
            return Ok(answer);
        }
        let error = &answer["error"];
        // The platform's own words: `details` says why (e.g. the 24-hour window), `message` names the code.
        let message = [error["message"].as_str(), error["error_data"]["details"].as_str()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" — ");
        Err(GraphError {
            status,
            code: error["code"].as_i64(),
            message: if message.is_empty() { format!("HTTP {status}") } else { message },
            retry_after,
        })
    }

    /// The `/{phone_number_id}/messages` body.
    fn message_body(&self, message: &OutboundMessage) -> Value {
        let mut body = if message.buttons.is_empty() {
            json!({"type": "text", "text": {"body": message.text, "preview_url": !message.disable_link_previews}})
        } else {
            let buttons: Vec<Value> = message
                .buttons
                .iter()
                .take(3)
                .map(|button| {
                    let title: String = button.label.chars().take(MAX_BUTTON_TITLE).collect();
                    json!({"type": "reply", "reply": {"id": button.data, "title": title}})
                })
                .collect();
            json!({"type": "interactive", "interactive": {"type": "button", "body": {"text": message.text},
                                                          "action": {"buttons": buttons}}})
        };
        body["messaging_product"] = json!("whatsapp");
        body["recipient_type"] = json!("individual");
        body["to"] = json!(message.chat.chat_id);
        if let Some(reply_to) = &message.reply_to {
            body["context"] = json!({"message_id": reply_to});
        }
        body
    }

    /// Verifies the signature, then normalises the messages addressed to this number.
    fn parse_webhook(&self, request: WebhookRequest<'_>) -> Result<WebhookBatch, WebhookError> {
        let signature = request
            .headers
            .get(SIGNATURE_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("sha256="))
            .ok_or(WebhookError::Unauthenticated("missing X-Hub-Signature-256"))?;
        if !hmac_sha256_matches(self.config.app_secret.as_bytes(), &[request.body], signature) {
            return Err(WebhookError::Unauthenticated("wrong X-Hub-Signature-256"));
        }
        let payload: Value =
            serde_json::from_slice(request.body).map_err(|err| WebhookError::Malformed(err.to_string()))?;
        let mut events = Vec::new();
        for change in payload["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|entry| entry["changes"].as_array().into_iter().flatten())
        {
            let value = &change["value"];
            if value["metadata"]["phone_number_id"].as_str() != Some(self.config.phone_number_id.as_str()) {
                continue;
            }
            for message in value["messages"].as_array().into_iter().flatten() {
                if let Some(event) = self.event(value, message) {
                    events.push(event);
                }
            }
        }
        Ok(WebhookBatch { events, reply: None })
    }

    fn event(&self, value: &Value, message: &Value) -> Option<InboundEvent> {
        let from = message["from"].as_str()?;
        let id = message["id"].as_str()?;
        let name = value["contacts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|contact| contact["wa_id"].as_str() == Some(from))
            .and_then(|contact| contact["profile"]["name"].as_str())
            .unwrap_or(from);
        let chat = ChatRef { chat_id: from.to_owned(), thread_id: None, kind: ChatKind::Direct };
        let sender = Sender { platform_user_id: from.to_owned(), display_name: name.to_owned() };
        let reply_to = message["context"]["id"].as_str().map(str::to_owned);
        let press = |data: Option<&str>| {
            Some(InboundEvent::Interaction(ButtonPress {
                channel_id: self.config.channel_id,
                platform_interaction_id: id.to_owned(),
                chat: chat.clone(),
                sender: sender.clone(),
                message_id: reply_to.clone(),
                data: data?.to_owned(),
            }))
        };
        let (text, attachments) = match message["type"].as_str()? {
            "text" => (message["text"]["body"].as_str()?.to_owned(), Vec::new()),
            "interactive" => return press(message["interactive"]["button_reply"]["id"].as_str()),
            "button" => return press(message["button"]["payload"].as_str()),
            kind @ ("image" | "audio" | "video" | "document") => {
                let media = &message[kind];
                let attachment = AttachmentRef {
                    kind: if kind == "document" { "file".into() } else { kind.into() },
                    mime: media["mime_type"].as_str().map(str::to_owned),
                    size: None,
                    name: media["filename"].as_str().map(str::to_owned),
                    platform_file_ref: media["id"].as_str()?.to_owned(),
                };
                (media["caption"].as_str().unwrap_or_default().to_owned(), vec![attachment])
            }
            _ => return None,
        };
        Some(InboundEvent::Message(Inbound {
            channel_id: self.config.channel_id,
            platform_message_id: id.to_owned(),
            chat,
            sender,
            text,
            attachments,
            reply_to,
            is_mention: true,
        }))
    }
}

#[async_trait]
impl ChannelAdapter for WhatsAppAdapter {
    fn platform(&self) -> Platform {
        Platform::WhatsApp
    }

    async fn verify(&self) -> Result<BotIdentity, AdapterError> {
        let number = self
            .call(&format!("{}?fields=display_phone_number,verified_name", self.config.phone_number_id), None)
            .await?;
        let name = number["verified_name"].as_str().unwrap_or(&self.config.phone_number_id).to_owned();
        Ok(BotIdentity {
            id: self.config.phone_number_id.clone(),
            username: number["display_phone_number"].as_str().map(str::to_owned),
            name,
        })
    }

    async fn run(&self, sink: Arc<dyn InboundSink>, cancel: CancellationToken) -> Result<(), AdapterError> {
        self.verify().await?;
        sink.alive();
        cancel.cancelled().await;
        Ok(())
    }

    fn receives_by_connection(&self) -> bool {
        false
    }

    async fn send(&self, message: &OutboundMessage) -> Result<SentMessage, SendError> {
        let path = format!("{}/messages", self.config.phone_number_id);
        let answer = self.call(&path, Some(&self.message_body(message))).await?;
        let id = answer["messages"][0]["id"]
            .as_str()
            .ok_or_else(|| SendError::transient("the Graph API answered no message id"))?;
        Ok(SentMessage { platform_message_id: id.to_owned() })
    }

    async fn edit(&self, _platform_message_id: &str, _message: &OutboundMessage) -> Result<(), SendError> {
        Err(SendError::permanent("WhatsApp messages cannot be edited"))
    }

    async fn typing(&self, _chat: &ChatRef) -> Result<(), SendError> {
        Ok(())
    }

    async fn answer_interaction(&self, _press: &ButtonPress, _text: Option<&str>) -> Result<(), SendError> {
        // A reply button press is an ordinary inbound message; there is nothing to acknowledge.
        Ok(())
    }

    fn webhook(&self, request: WebhookRequest<'_>) -> Option<Result<WebhookBatch, WebhookError>> {
        Some(self.parse_webhook(request))
    }

    fn subscription_challenge(&self, mode: &str, token: &str, challenge: &str) -> Option<String> {
        let matches = bool::from(token.as_bytes().ct_eq(self.config.verify_token.as_bytes()));
        (mode == "subscribe" && matches).then(|| challenge.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderMap, HeaderValue};

    use super::*;
    use crate::signature::hmac_sha256_hex;

    fn adapter() -> WhatsAppAdapter {
        let _ = rustls::crypto::ring::default_provider().install_default();
        WhatsAppAdapter::new(
            reqwest::Client::new(),
            WhatsAppConfig {
                channel_id: Uuid::nil(),
                api_base: "http://127.0.0.1:9/v21.0".into(),
                phone_number_id: "1555".into(),
                access_token: "t".into(),
                app_secret: "app-secret".into(),
                verify_token: "verify-me".into(),
            },
        )
    }

    fn body(phone: &str, message: Value) -> Vec<u8> {
        json!({"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {
            "metadata": {"phone_number_id": phone}, "contacts": [{"wa_id": "49170", "profile": {"name": "Ada"}}],
            "messages": [message]}}]}]})
        .to_string()
        .into_bytes()
    }

    fn signed(secret: &str, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let mac = hmac_sha256_hex(secret.as_bytes(), &[body]);
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(&format!("sha256={mac}")).unwrap());
        headers
    }

    #[test]
    fn webhooks_need_the_signature_over_the_raw_body_and_route_by_number() {
        let adapter = adapter();
        let text = body("1555", json!({"from": "49170", "id": "wamid.1", "type": "text", "text": {"body": "hi"}}));
        let batch =
            adapter.parse_webhook(WebhookRequest { headers: &signed("app-secret", &text), body: &text }).unwrap();
        let [InboundEvent::Message(message)] = batch.events.as_slice() else { panic!("{batch:?}") };
        assert_eq!((message.text.as_str(), message.sender.display_name.as_str()), ("hi", "Ada"));
        assert_eq!((message.chat.chat_id.as_str(), message.platform_message_id.as_str()), ("49170", "wamid.1"));
        let refused = adapter.parse_webhook(WebhookRequest { headers: &signed("other", &text), body: &text });
        assert!(matches!(refused, Err(WebhookError::Unauthenticated(_))));
        let unsigned = adapter.parse_webhook(WebhookRequest { headers: &HeaderMap::new(), body: &text });
        assert!(matches!(unsigned, Err(WebhookError::Unauthenticated(_))));
        let mut tampered = text.clone();
        tampered[10] = b'X';
        let tampered_result =
            adapter.parse_webhook(WebhookRequest { headers: &signed("app-secret", &text), body: &tampered });
        assert!(matches!(tampered_result, Err(WebhookError::Unauthenticated(_))));
        let other = body("1666", json!({"from": "49170", "id": "wamid.2", "type": "text", "text": {"body": "hi"}}));
        let batch =
            adapter.parse_webhook(WebhookRequest { headers: &signed("app-secret", &other), body: &other }).unwrap();
        assert!(batch.events.is_empty(), "another number's message");
    }

    #[test]
    fn reply_buttons_become_presses_and_the_handshake_needs_the_token() {
        let adapter = adapter();
        let press = body(
            "1555",
            json!({"from": "49170", "id": "wamid.3", "type": "interactive", "context": {"id": "wamid.OUT1"},
                                         "interactive": {"type": "button_reply", "button_reply": {"id": "apr:a:x", "title": "Approve"}}}),
        );
        let batch =
            adapter.parse_webhook(WebhookRequest { headers: &signed("app-secret", &press), body: &press }).unwrap();
        let [InboundEvent::Interaction(press)] = batch.events.as_slice() else { panic!("{batch:?}") };
        assert_eq!((press.data.as_str(), press.message_id.as_deref()), ("apr:a:x", Some("wamid.OUT1")));
        assert_eq!(adapter.subscription_challenge("subscribe", "verify-me", "c1").as_deref(), Some("c1"));
        assert_eq!(adapter.subscription_challenge("subscribe", "verify-mE", "c1"), None);
        assert_eq!(adapter.subscription_challenge("unsubscribe", "verify-me", "c1"), None);
    }

    #[test]
    fn outbound_bodies_turn_previews_off_and_cap_buttons() {
        let mut message = OutboundMessage::text(
            ChatRef { chat_id: "49170".into(), thread_id: None, kind: ChatKind::Direct },
            "see https://x",
        );
        message.reply_to = Some("wamid.1".into());
        let body = adapter().message_body(&message);
        assert_eq!(body["text"], json!({"body": "see https://x", "preview_url": false}));
        assert_eq!((body["messaging_product"].as_str(), body["to"].as_str()), (Some("whatsapp"), Some("49170")));
        assert_eq!(body["context"]["message_id"], json!("wamid.1"));
        message.buttons = (0..4)
            .map(|n| crate::types::Button { label: format!("A very long button title {n}"), data: format!("d{n}") })
            .collect();
        let body = adapter().message_body(&message);
        let buttons = body["interactive"]["action"]["buttons"].as_array().unwrap();
        assert_eq!(buttons.len(), 3);
        assert_eq!(buttons[0]["reply"]["title"].as_str().unwrap().chars().count(), 20);
    }
}
