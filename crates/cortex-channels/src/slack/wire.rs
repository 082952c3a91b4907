//! Slack payloads we read — Events API `event_callback` (`message`, `app_mention`), `url_verification`,
//! interactivity `block_actions` — typed leniently, and their normalisation.

use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::adapter::{WebhookBatch, WebhookError};
use crate::types::{AttachmentRef, ButtonPress, ChatKind, ChatRef, Inbound, InboundEvent, Sender};

#[derive(Debug, Deserialize)]
pub(crate) struct File {
    #[serde(default)]
    pub url_private: Option<String>,
    #[serde(default)]
    pub mimetype: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Event {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub channel_type: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub ts: Option<String>,
    #[serde(default)]
    pub thread_ts: Option<String>,
    #[serde(default)]
    pub bot_id: Option<String>,
    #[serde(default)]
    pub subtype: Option<String>,
    #[serde(default)]
    pub files: Vec<File>,
}

impl Event {
    /// The normalised message, or `None` for other events, bots, edits and other subtypes.
    pub fn into_event(self, channel_id: Uuid, bot_user: Option<&str>) -> Option<InboundEvent> {
        if !matches!(self.kind.as_str(), "message" | "app_mention") || self.bot_id.is_some() || self.subtype.is_some() {
            return None;
        }
        let (channel, user, ts) = (self.channel?, self.user?, self.ts?);
        if Some(user.as_str()) == bot_user {
            return None;
        }
        let direct = self.channel_type.as_deref() == Some("im") || channel.starts_with('D');
        let mut text = self.text.unwrap_or_default();
        let mentioned = self.kind == "app_mention" || bot_user.is_some_and(|id| text.contains(&format!("<@{id}>")));
        if let Some(id) = bot_user {
            text = text.replace(&format!("<@{id}>"), "").trim().to_owned();
        }
        let attachments: Vec<AttachmentRef> = self
            .files
            .into_iter()
            .filter_map(|file| {
                Some(AttachmentRef {
                    kind: AttachmentRef::kind_of(file.mimetype.as_deref()).into(),
                    mime: file.mimetype,
                    size: file.size,
                    name: file.name,
                    platform_file_ref: file.url_private?,
                })
            })
            .collect();
        if text.is_empty() && attachments.is_empty() {
            return None;
        }
        // In a channel the reply goes to the message's thread (started by the message if need be); in a
        // DM only when the message was in a thread.
        let thread_id =
            if direct { self.thread_ts.clone() } else { Some(self.thread_ts.clone().unwrap_or(ts.clone())) };
        let chat = ChatRef {
            chat_id: channel.clone(),
            thread_id,
            kind: if direct { ChatKind::Direct } else { ChatKind::Group },
        };
        Some(InboundEvent::Message(Inbound {
            channel_id,
            platform_message_id: format!("{channel}:{ts}"),
            sender: Sender { platform_user_id: user.clone(), display_name: user },
            is_mention: direct || mentioned,
            chat,
            text,
            attachments,
            reply_to: self.thread_ts.filter(|thread| *thread != ts),
        }))
    }
}

/// A `block_actions` interactivity payload: one press per action.
pub(crate) fn block_actions(payload: &Value, channel_id: Uuid) -> Vec<InboundEvent> {
    if payload["type"] != "block_actions" {
        return Vec::new();
    }
    let (Some(user), Some(channel)) = (payload["user"]["id"].as_str(), payload["channel"]["id"].as_str()) else {
        return Vec::new();
    };
    let message_ts = payload["container"]["message_ts"].as_str().or_else(|| payload["message"]["ts"].as_str());
    let thread = payload["message"]["thread_ts"].as_str();
    let name = payload["user"]["name"].as_str().or_else(|| payload["user"]["username"].as_str()).unwrap_or(user);
    let direct = channel.starts_with('D');
    payload["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|action| {
            let action_ts = action["action_ts"].as_str()?;
            Some(InboundEvent::Interaction(ButtonPress {
                channel_id,
                platform_interaction_id: format!("act:{channel}:{user}:{action_ts}"),
                chat: ChatRef {
                    chat_id: channel.to_owned(),
                    thread_id: thread.map(str::to_owned),
                    kind: if direct { ChatKind::Direct } else { ChatKind::Group },
                },
                sender: Sender { platform_user_id: user.to_owned(), display_name: name.to_owned() },
                message_id: message_ts.map(str::to_owned),
                data: action["action_id"].as_str().or_else(|| action["value"].as_str()).unwrap_or_default().to_owned(),
            }))
        })
        .collect()
}

/// An Events API or interactivity payload (JSON, or the form field `payload=` interactivity uses).
pub(crate) fn parse_payload(
    body: &[u8],
    channel_id: Uuid,
    bot_user: Option<&str>,
) -> Result<WebhookBatch, WebhookError> {
    let payload: Value = match serde_json::from_slice(body) {
        Ok(payload) => payload,
        Err(err) => {
            let form = url::form_urlencoded::parse(body).find(|(key, _)| key == "payload").map(|(_, value)| value);
            match form {
                Some(value) => serde_json::from_str(&value).map_err(|err| WebhookError::Malformed(err.to_string()))?,
                None => return Err(WebhookError::Malformed(err.to_string())),
            }
        }
    };
    match payload["type"].as_str() {
        Some("url_verification") => Ok(WebhookBatch {
            events: Vec::new(),
            reply: Some(payload["challenge"].as_str().unwrap_or_default().to_owned()),
        }),
        Some("event_callback") => {
            let event = serde_json::from_value::<Event>(payload["event"].clone())
                .map_err(|err| WebhookError::Malformed(err.to_string()))?;
            Ok(WebhookBatch { events: event.into_event(channel_id, bot_user).into_iter().collect(), reply: None })
        }
        Some("block_actions") => Ok(WebhookBatch { events: block_actions(&payload, channel_id), reply: None }),
        _ => Ok(WebhookBatch::default()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(value: Value) -> Option<InboundEvent> {
        serde_json::from_value::<Event>(value).unwrap().into_event(Uuid::nil(), Some("UBOT"))
    }

    #[test]
    fn channel_messages_reply_in_their_thread_and_dms_in_the_conversation() {
        let Some(InboundEvent::Message(channel)) =
            event(json!({"type": "app_mention", "channel": "C1", "user": "U1", "text": "<@UBOT> hi", "ts": "1.1"}))
        else {
            panic!()
        };
        assert_eq!((channel.text.as_str(), channel.is_mention), ("hi", true));
        assert_eq!((channel.chat.kind, channel.chat.thread_id.as_deref()), (ChatKind::Group, Some("1.1")));
        assert_eq!(channel.platform_message_id, "C1:1.1");
        let Some(InboundEvent::Message(same)) = event(
            json!({"type": "message", "channel": "C1", "user": "U1", "text": "<@UBOT> hi", "ts": "1.1", "channel_type": "channel"}),
        ) else {
            panic!()
        };
        assert_eq!((same.platform_message_id.as_str(), same.is_mention), ("C1:1.1", true), "the same message, once");
        let Some(InboundEvent::Message(dm)) = event(
            json!({"type": "message", "channel": "D1", "user": "U1", "text": "yo", "ts": "2.2", "channel_type": "im"}),
        ) else {
            panic!()
        };
        assert_eq!((dm.chat.kind, dm.chat.thread_id, dm.is_mention), (ChatKind::Direct, None, true));
        let Some(InboundEvent::Message(threaded)) = event(
            json!({"type": "message", "channel": "C1", "user": "U1", "text": "more", "ts": "3.3", "thread_ts": "1.1"}),
        ) else {
            panic!()
        };
        assert_eq!((threaded.chat.thread_id.as_deref(), threaded.reply_to.as_deref()), (Some("1.1"), Some("1.1")));
        assert!(!threaded.is_mention);
    }

    #[test]
    fn bots_subtypes_and_other_events_are_ignored() {
        assert!(
            event(json!({"type": "message", "channel": "D1", "user": "U1", "text": "x", "ts": "1", "bot_id": "B1"}))
                .is_none()
        );
        assert!(event(json!({"type": "message", "channel": "D1", "user": "U1", "text": "x", "ts": "1", "subtype": "message_changed"})).is_none());
        assert!(event(json!({"type": "reaction_added", "channel": "D1", "user": "U1", "ts": "1"})).is_none());
        assert!(event(json!({"type": "message", "channel": "D1", "user": "UBOT", "text": "x", "ts": "1"})).is_none());
    }

    #[test]
    fn block_actions_become_button_presses() {
        let payload = json!({"type": "block_actions", "user": {"id": "U1", "name": "ada"}, "channel": {"id": "C1"},
            "container": {"message_ts": "5.5"}, "message": {"ts": "5.5", "thread_ts": "1.1"},
            "actions": [{"action_id": "apr:a:x", "action_ts": "6.6"}]});
        let body = format!(
            "payload={}",
            url::form_urlencoded::byte_serialize(payload.to_string().as_bytes()).collect::<String>()
        );
        let batch = parse_payload(body.as_bytes(), Uuid::nil(), None).unwrap();
        let [InboundEvent::Interaction(press)] = batch.events.as_slice() else { panic!("{batch:?}") };
        assert_eq!((press.data.as_str(), press.message_id.as_deref()), ("apr:a:x", Some("5.5")));
        assert_eq!(press.chat.thread_id.as_deref(), Some("1.1"));
    }
}
