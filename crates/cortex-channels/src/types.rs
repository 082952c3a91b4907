//! Normalised messages: what every adapter turns platform payloads into, and what the router hands back
//! to send. Nothing here knows a platform's wire format.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

cortex_core::string_enum! {
    /// A chat platform (the `channel.type` column and `channel_type` on the wire).
    pub enum Platform {
        Telegram = "telegram",
        Discord = "discord",
        Slack = "slack",
        WhatsApp = "whatsapp",
    }
}

impl Platform {
    /// The platform's limits on what one message may carry (SPEC §8.1 table).
    pub fn limits(self) -> Limits {
        match self {
            // Telegram counts UTF-16 code units of the text after entity parsing.
            Platform::Telegram => Limits { max_text: 4096, max_buttons: 8, max_text_with_buttons: 4096 },
            Platform::Discord => Limits { max_text: 2000, max_buttons: 5, max_text_with_buttons: 2000 },
            // A Block Kit section holds at most 3000 characters.
            Platform::Slack => Limits { max_text: 4000, max_buttons: 5, max_text_with_buttons: 3000 },
            // The body of an interactive (reply buttons) message holds at most 1024 characters.
            Platform::WhatsApp => Limits { max_text: 4096, max_buttons: 3, max_text_with_buttons: 1024 },
        }
    }
}

/// What one outbound message may carry on a platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest text of one message, in UTF-16 code units (the strictest count any platform uses).
    pub max_text: usize,
    /// Most buttons on one message.
    pub max_buttons: usize,
    /// Longest text of a message that carries buttons (the part they go under).
    pub max_text_with_buttons: usize,
}

/// Direct (one person and the bot) or group conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatKind {
    Direct,
    Group,
}

/// A conversation on a platform, and optionally a thread inside it. Replies go to the same pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatRef {
    /// The platform's conversation id (Telegram chat id, Slack channel id, WhatsApp `wa_id`).
    pub chat_id: String,
    /// Telegram forum topic, Slack `thread_ts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    pub kind: ChatKind,
}

/// Who wrote a message, as the platform names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    pub platform_user_id: String,
    pub display_name: String,
}

/// A file the message carried, by reference (downloaded later, if at all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRef {
    /// `image`, `audio`, `voice`, `video` or `file`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The file name the sender's app gave it, when the platform says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The platform's handle for fetching it (Telegram `file_id`, WhatsApp media id, a URL).
    pub platform_file_ref: String,
}

impl AttachmentRef {
    /// The attachment kind a MIME type implies (`image`, `audio`, `video`, else `file`).
    pub fn kind_of(mime: Option<&str>) -> &'static str {
        match mime.and_then(|mime| mime.split('/').next()) {
            Some("image") => "image",
            Some("audio") => "audio",
            Some("video") => "video",
            _ => "file",
        }
    }

    /// How the agent learns of it (it is not downloaded unless a tool asks): kind, name, type, size and
    /// the platform reference, on one line.
    pub fn describe(&self) -> String {
        let mut parts = vec![self.kind.clone()];
        parts.extend(self.name.as_ref().map(|name| format!("\"{name}\"")));
        parts.extend(self.mime.clone());
        parts.extend(self.size.map(|bytes| format!("{bytes} bytes")));
        format!("{} (ref: {})", parts.join(", "), self.platform_file_ref)
    }
}

/// The note that tells the agent what a message carried besides its text (SPEC §8.1: files are
/// described by name, type and size; nothing is downloaded here). Empty for a message without any.
pub fn attachments_note(attachments: &[AttachmentRef]) -> String {
    if attachments.is_empty() {
        return String::new();
    }
    let lines: Vec<String> = attachments.iter().map(|file| format!("- {}", file.describe())).collect();
    format!("[The user attached {} file(s), not downloaded:\n{}]", attachments.len(), lines.join("\n"))
}

/// A user's message to the bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbound {
    pub channel_id: Uuid,
    /// Unique per channel; the dedupe key of the inbound log.
    pub platform_message_id: String,
    pub chat: ChatRef,
    pub sender: Sender,
    pub text: String,
    #[serde(default)]
    pub attachments: Vec<AttachmentRef>,
    /// The platform id of the message this one answers, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// The bot was mentioned or replied to (group chats answer only then, unless bound with `all`).
    #[serde(default)]
    pub is_mention: bool,
}

/// A press on a button the bot posted (approval decisions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ButtonPress {
    pub channel_id: Uuid,
    /// The platform's id of this press (Telegram callback query id); the dedupe key.
    pub platform_interaction_id: String,
    pub chat: ChatRef,
    pub sender: Sender,
    /// The message the button was on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The button's payload as the bot set it.
    pub data: String,
}

/// Everything an adapter delivers to its sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InboundEvent {
    Message(Inbound),
    Interaction(ButtonPress),
}

impl InboundEvent {
    /// The channel-unique id the dedupe log keys on.
    pub fn dedupe_key(&self) -> &str {
        match self {
            InboundEvent::Message(message) => &message.platform_message_id,
            InboundEvent::Interaction(press) => &press.platform_interaction_id,
        }
    }

    /// The conversation it came from.
    pub fn chat(&self) -> &ChatRef {
        match self {
            InboundEvent::Message(message) => &message.chat,
            InboundEvent::Interaction(press) => &press.chat,
        }
    }
}

/// A button under an outbound message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    pub label: String,
    /// Returned in [`ButtonPress::data`]; at most 64 bytes (Telegram's limit, the strictest).
    pub data: String,
}

/// One message to send. `text` is Markdown-ish agent output; each adapter renders and escapes it for
/// its platform, and callers split it to the platform's limit first ([`crate::text::split`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundMessage {
    pub chat: ChatRef,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<Button>,
    /// Off unless an operator decides otherwise: a URL an injected agent writes must not be fetched
    /// by the platform's link preview.
    #[serde(default = "yes")]
    pub disable_link_previews: bool,
}

fn yes() -> bool {
    true
}

impl OutboundMessage {
    /// A plain text message to `chat`, link previews off.
    pub fn text(chat: ChatRef, text: impl Into<String>) -> Self {
        Self { chat, text: text.into(), reply_to: None, buttons: Vec::new(), disable_link_previews: true }
    }
}

/// The platform accepted a message and gave it this id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentMessage {
    pub platform_message_id: String,
}

/// Who the bot is on its platform (`getMe`, `auth.test`, …), stored as `channel.bot_identity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotIdentity {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub name: String,
}
