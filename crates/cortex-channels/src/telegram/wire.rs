//! Bot API payloads, typed leniently: every field we do not strictly need is optional, unknown fields are
//! ignored, and ids may arrive as numbers or strings. That way the same types read the real API and
//! telegram-test-api (which omits `is_bot` and `chat_instance`, and answers `null` where the real API
//! says `true`).

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use uuid::Uuid;

use crate::types::{AttachmentRef, ButtonPress, ChatKind, ChatRef, Inbound, InboundEvent, Sender};

/// Reads a number or a string as a string.
fn id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::String(text) => Ok(text),
        Value::Number(number) => Ok(number.to_string()),
        other => Err(serde::de::Error::custom(format!("expected an id, got {other}"))),
    }
}

fn opt_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(Value::Number(number)) => Ok(Some(number.to_string())),
        Some(other) => Err(serde::de::Error::custom(format!("expected an id, got {other}"))),
    }
}

/// The envelope of every Bot API answer. telegram-test-api reports errors as `{"message": …}` instead.
#[derive(Debug, Deserialize)]
pub(crate) struct Envelope {
    #[serde(default)]
    pub ok: Option<bool>,
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub error_code: Option<i64>,
    #[serde(default)]
    pub parameters: Option<Parameters>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Parameters {
    #[serde(default)]
    pub retry_after: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct User {
    #[serde(deserialize_with = "id")]
    pub id: String,
    #[serde(default)]
    pub is_bot: bool,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
}

impl User {
    pub fn display_name(&self) -> String {
        let full = [self.first_name.as_deref(), self.last_name.as_deref()]
            .into_iter()
            .flatten()
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if !full.is_empty() {
            return full;
        }
        self.username.clone().unwrap_or_else(|| self.id.clone())
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Chat {
    #[serde(deserialize_with = "id")]
    pub id: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct FileRef {
    #[serde(deserialize_with = "id")]
    pub file_id: String,
    #[serde(default)]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub file_size: Option<u64>,
    /// Documents, audio and video carry the sender's file name.
    #[serde(default)]
    pub file_name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Replied {
    #[serde(default, deserialize_with = "opt_id")]
    pub message_id: Option<String>,
    #[serde(default)]
    pub from: Option<User>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Message {
    #[serde(deserialize_with = "id")]
    pub message_id: String,
    pub chat: Chat,
    #[serde(default)]
    pub from: Option<User>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub caption: Option<String>,
    #[serde(default, deserialize_with = "opt_id")]
    pub message_thread_id: Option<String>,
    #[serde(default)]
    pub reply_to_message: Option<Replied>,
    #[serde(default)]
    pub photo: Option<Vec<FileRef>>,
    #[serde(default)]
    pub document: Option<FileRef>,
    #[serde(default)]
    pub voice: Option<FileRef>,
    #[serde(default)]
    pub audio: Option<FileRef>,
    #[serde(default)]
    pub video: Option<FileRef>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CallbackQuery {
    #[serde(deserialize_with = "id")]
    pub id: String,
    pub from: User,
    #[serde(default)]
    pub message: Option<Message>,
    #[serde(default)]
    pub data: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Update {
    pub update_id: i64,
    #[serde(default)]
    pub message: Option<Message>,
    #[serde(default)]
    pub callback_query: Option<CallbackQuery>,
}

/// What the adapter knows about itself when it normalises updates.
pub(crate) struct Me<'a> {
    pub channel_id: Uuid,
    pub id: Option<&'a str>,
    pub username: Option<&'a str>,
}

fn chat_ref(chat: &Chat, thread: Option<&String>) -> ChatRef {
    let kind = match chat.kind.as_deref() {
        Some("group" | "supergroup" | "channel") => ChatKind::Group,
        _ => ChatKind::Direct,
    };
    ChatRef { chat_id: chat.id.clone(), thread_id: thread.cloned(), kind }
}

fn attachments(message: &Message) -> Vec<AttachmentRef> {
    let mut found = Vec::new();
    // Telegram sends each photo in several sizes; the last is the largest.
    if let Some(photo) = message.photo.as_ref().and_then(|sizes| sizes.last()) {
        found.push(("image", photo));
    }
    for (kind, file) in
        [("file", &message.document), ("voice", &message.voice), ("audio", &message.audio), ("video", &message.video)]
    {
        if let Some(file) = file {
            found.push((kind, file));
        }
    }
    found
        .into_iter()
        .map(|(kind, file)| AttachmentRef {
            kind: kind.into(),
            mime: file.mime_type.clone(),
            size: file.file_size,
            name: file.file_name.clone(),
            platform_file_ref: file.file_id.clone(),
        })
        .collect()
}

impl Update {
    /// The normalised event, or `None` for what we ignore (bots, edits, service messages, other types).
    pub fn into_event(self, me: &Me<'_>) -> Option<InboundEvent> {
        if let Some(message) = self.message {
            let from = message.from.as_ref()?;
            if from.is_bot {
                return None;
            }
            let text = message.text.clone().or_else(|| message.caption.clone()).unwrap_or_default();
            let attachments = attachments(&message);
            if text.is_empty() && attachments.is_empty() {
                return None;
            }
            let chat = chat_ref(&message.chat, message.message_thread_id.as_ref());
            let replied_to_me = message
                .reply_to_message
                .as_ref()
                .and_then(|replied| replied.from.as_ref())
                .is_some_and(|author| Some(author.id.as_str()) == me.id);
            let mentioned = me.username.is_some_and(|name| text.contains(&format!("@{name}")));
            return Some(InboundEvent::Message(Inbound {
                channel_id: me.channel_id,
                platform_message_id: format!("msg:{}:{}", message.chat.id, message.message_id),
                sender: Sender { platform_user_id: from.id.clone(), display_name: from.display_name() },
                is_mention: chat.kind == ChatKind::Direct || replied_to_me || mentioned,
                chat,
                text,
                attachments,
                reply_to: message.reply_to_message.and_then(|replied| replied.message_id),
            }));
        }
        let query = self.callback_query?;
        let message = query.message?;
        Some(InboundEvent::Interaction(ButtonPress {
            channel_id: me.channel_id,
            platform_interaction_id: format!("cb:{}", query.id),
            chat: chat_ref(&message.chat, message.message_thread_id.as_ref()),
            sender: Sender { platform_user_id: query.from.id.clone(), display_name: query.from.display_name() },
            message_id: Some(message.message_id),
            data: query.data.unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn me() -> Me<'static> {
        Me { channel_id: Uuid::nil(), id: Some("99"), username: Some("cortex_bot") }
    }

    fn event(update: Value) -> Option<InboundEvent> {
        serde_json::from_value::<Update>(update).unwrap().into_event(&me())
    }

    #[test]
    fn a_direct_message_from_telegram_test_api_without_is_bot_is_read() {
        let Some(InboundEvent::Message(message)) = event(json!({
            "update_id": 3,
            "message": {"message_id": 7, "date": 1790000000000u64, "chat": {"id": 42, "type": "private"},
                        "from": {"id": 42, "first_name": "Ada"}, "text": "hello"}
        })) else {
            panic!("expected a message");
        };
        assert_eq!(message.platform_message_id, "msg:42:7");
        assert_eq!(message.chat, ChatRef { chat_id: "42".into(), thread_id: None, kind: ChatKind::Direct });
        assert_eq!(message.sender, Sender { platform_user_id: "42".into(), display_name: "Ada".into() });
        assert!(message.is_mention);
    }

    #[test]
    fn group_messages_know_whether_the_bot_was_addressed() {
        let group = |text: &str, reply_from: Option<i64>| {
            let mut message = json!({"message_id": "8", "chat": {"id": "-100", "type": "supergroup"},
                                     "from": {"id": 5, "is_bot": false, "username": "bob"}, "text": text,
                                     "message_thread_id": 12});
            if let Some(author) = reply_from {
                message["reply_to_message"] = json!({"message_id": 3, "from": {"id": author}});
            }
            match event(json!({"update_id": 1, "message": message})) {
                Some(InboundEvent::Message(message)) => message,
                other => panic!("{other:?}"),
            }
        };
        let plain = group("hi all", None);
        assert_eq!(plain.chat.kind, ChatKind::Group);
        assert_eq!(plain.chat.thread_id.as_deref(), Some("12"));
        assert!(!plain.is_mention);
        assert!(group("hey @cortex_bot", None).is_mention);
        assert!(group("yes", Some(99)).is_mention);
        assert_eq!(group("yes", Some(99)).reply_to.as_deref(), Some("3"));
        assert!(!group("yes", Some(5)).is_mention);
    }

    #[test]
    fn bots_and_empty_service_messages_are_ignored() {
        assert_eq!(
            event(
                json!({"update_id": 1, "message": {"message_id": 1, "chat": {"id": 1}, "from": {"id": 2, "is_bot": true}, "text": "x"}})
            ),
            None
        );
        assert_eq!(
            event(json!({"update_id": 1, "message": {"message_id": 1, "chat": {"id": 1}, "from": {"id": 2}}})),
            None
        );
        assert_eq!(event(json!({"update_id": 1, "edited_message": {"message_id": 1}})), None);
    }

    #[test]
    fn photos_and_button_presses_are_normalised() {
        let Some(InboundEvent::Message(message)) = event(json!({"update_id": 1, "message": {
            "message_id": 1, "chat": {"id": 1, "type": "private"}, "from": {"id": 2}, "caption": "look",
            "photo": [{"file_id": "small"}, {"file_id": "big", "file_size": 2048}]}}))
        else {
            panic!("expected a message");
        };
        assert_eq!(message.text, "look");
        assert_eq!(message.attachments[0].platform_file_ref, "big");
        assert_eq!(message.attachments[0].kind, "image");

        let Some(InboundEvent::Interaction(press)) = event(json!({"update_id": 2, "callback_query": {
            "id": "cb1", "from": {"id": 2, "first_name": "Ada"}, "data": "approve:x",
            "message": {"message_id": 40, "chat": {"id": 1, "type": "private"}}}}))
        else {
            panic!("expected a press");
        };
        assert_eq!(press.platform_interaction_id, "cb:cb1");
        assert_eq!((press.data.as_str(), press.message_id.as_deref()), ("approve:x", Some("40")));
    }
}
