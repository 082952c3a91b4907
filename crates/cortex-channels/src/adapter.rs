//! The adapter contract every platform implements, and the sink adapters deliver into.
//!
//! An adapter speaks one platform's wire protocol and nothing else: it never touches the database.
//! What it receives goes through its [`InboundSink`], whose [`InboundSink::deliver`] returns only once
//! the event is durably recorded, so an adapter acknowledges the platform (advances an offset, answers a
//! webhook, acks an envelope) only after that. Where a receive loop resumes is saved through the sink
//! too ([`InboundSink::save_cursor`]). Outbound calls report failures as [`SendError`], which says
//! whether a retry can help and how long the platform asked us to wait.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use tokio_util::sync::CancellationToken;

use crate::types::{BotIdentity, ButtonPress, ChatRef, InboundEvent, Limits, OutboundMessage, Platform, SentMessage};

/// A send, edit or typing call the platform did not accept.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// What went wrong, safe to show operators (never contains a token).
    pub message: String,
    /// A machine-readable reason when one is known (`outside_window`, `rate_limited`, …).
    pub code: Option<String>,
    /// The platform asked us to wait this long before trying again.
    pub retry_after: Option<Duration>,
    /// Retrying the same request cannot succeed (bad chat id, blocked bot, message too long).
    pub permanent: bool,
}

impl SendError {
    /// A failure worth retrying later (network, 5xx).
    pub fn transient(message: impl Into<String>) -> Self {
        Self { message: message.into(), code: None, retry_after: None, permanent: false }
    }

    /// A failure no retry can fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), code: None, retry_after: None, permanent: true }
    }
}

/// Why an adapter stopped or could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The platform refused the credentials (invalid or revoked token).
    #[error("the platform refused the credentials: {0}")]
    Unauthorized(String),
    /// The platform could not be reached or answered with an error; trying again later may work.
    #[error("{0}")]
    Unavailable(String),
    /// The platform answered something we cannot read.
    #[error("unexpected answer from the platform: {0}")]
    Protocol(String),
    /// The sink could not record an event (database down); the event was not acknowledged.
    #[error("recording inbound events failed: {0}")]
    Sink(#[from] SinkError),
}

/// The sink could not record or load something.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// Where an adapter delivers what it receives; implemented over the store by [`crate::sink::StoreSink`].
#[async_trait]
pub trait InboundSink: Send + Sync {
    /// Records the event; returns once it is durable (a duplicate of a recorded event is not an error).
    async fn deliver(&self, event: InboundEvent) -> Result<(), SinkError>;
    /// The receive position saved last, if any.
    async fn load_cursor(&self) -> Result<Option<String>, SinkError>;
    /// Saves the receive position (after the events before it were delivered).
    async fn save_cursor(&self, cursor: &str) -> Result<(), SinkError>;
    /// The adapter just heard from the platform (a poll returned, a heartbeat was acknowledged): the
    /// supervisor's proof that the channel really receives.
    fn alive(&self);
}

/// A webhook request as received: headers and the raw body (signatures are computed over the raw
/// bytes, so nothing may parse and re-serialise it first).
#[derive(Debug, Clone, Copy)]
pub struct WebhookRequest<'a> {
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// What a verified webhook request carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookBatch {
    pub events: Vec<InboundEvent>,
    /// A body the platform expects back verbatim (Slack's `url_verification` challenge).
    pub reply: Option<String>,
}

/// A webhook request we refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// Missing or wrong signature or secret: answered 401, nothing processed.
    #[error("the request is not signed by the platform: {0}")]
    Unauthenticated(&'static str),
    /// Signed, but not a payload we can read: answered 400.
    #[error("unreadable webhook payload: {0}")]
    Malformed(String),
}

/// One running bot on one platform (SPEC §8.1).
#[async_trait]
pub trait ChannelAdapter: Send + Sync {
    fn platform(&self) -> Platform;

    /// What one message may carry.
    fn limits(&self) -> Limits {
        self.platform().limits()
    }

    /// Checks the credentials with the platform and returns who the bot is.
    async fn verify(&self) -> Result<BotIdentity, AdapterError>;

    /// The long-lived receive loop (long poll, gateway, socket). Returns `Ok` when `cancel` fires and an
    /// error when the connection failed (the supervisor restarts it with backoff). Webhook-only
    /// adapters wait for `cancel`.
    async fn run(&self, sink: Arc<dyn InboundSink>, cancel: CancellationToken) -> Result<(), AdapterError>;

    /// Whether [`ChannelAdapter::run`] holds a connection that must exist once per channel across all
    /// processes (taken under a lease), rather than merely waiting.
    fn receives_by_connection(&self) -> bool;

    /// Sends one message (already split to [`ChannelAdapter::limits`]).
    async fn send(&self, message: &OutboundMessage) -> Result<SentMessage, SendError>;

    /// Replaces the text (and buttons) of a message the bot sent.
    async fn edit(&self, platform_message_id: &str, message: &OutboundMessage) -> Result<(), SendError>;

    /// Shows "typing…" in the chat (platforms expire it after a few seconds).
    async fn typing(&self, chat: &ChatRef) -> Result<(), SendError>;

    /// Acknowledges a button press (stops the client's spinner), optionally with a short notice.
    async fn answer_interaction(&self, press: &ButtonPress, text: Option<&str>) -> Result<(), SendError>;

    /// Verifies and parses a webhook request for this channel; `None` when the adapter takes no
    /// webhooks.
    fn webhook(&self, request: WebhookRequest<'_>) -> Option<Result<WebhookBatch, WebhookError>>;

    /// Answers a webhook subscription handshake (WhatsApp's `hub.mode`/`hub.verify_token`/`hub.challenge`):
    /// the challenge to echo when the token is this channel's, `None` otherwise.
    fn subscription_challenge(&self, _mode: &str, _token: &str, _challenge: &str) -> Option<String> {
        None
    }
}
