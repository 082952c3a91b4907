//! Discord gateway dispatches we read (`MESSAGE_CREATE`, `INTERACTION_CREATE`), typed leniently (every
//! field we do not strictly need is optional, unknown fields are ignored), and their normalisation.

use serde::Deserialize;
use uuid::Uuid;

use crate::types::{AttachmentRef, ButtonPress, ChatKind, ChatRef, Inbound, InboundEvent, Sender};

/// `MESSAGE_CREATE` types that are user messages: DEFAULT and REPLY.
const USER_MESSAGE_TYPES: [i64; 2] = [0, 19];
/// `INTERACTION_CREATE` type of a button press.
const MESSAGE_COMPONENT: i64 = 3;

#[derive(Debug, Deserialize)]
pub(crate) struct User {
    pub id: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub global_name: Option<String>,
    #[serde(default)]
    pub bot: bool,
}

impl User {
    pub fn display_name(&self) -> String {
        self.global_name.clone().or_else(|| self.username.clone()).unwrap_or_else(|| self.id.clone())
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Attachment {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub filename: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Reference {
    #[serde(default)]
    pub message_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Referenced {
    #[serde(default)]
    pub author: Option<User>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Message {
    pub id: String,
    pub channel_id: String,
    #[serde(default)]
    pub guild_id: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<i64>,
    #[serde(default)]
    pub author: Option<User>,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub mentions: Vec<User>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    #[serde(default)]
    pub message_reference: Option<Reference>,
    #[serde(default)]
    pub referenced_message: Option<Box<Referenced>>,
    #[serde(default)]
    pub webhook_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Member {
    #[serde(default)]
    pub user: Option<User>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ComponentData {
    #[serde(default)]
    pub custom_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct MessageId {
    pub id: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Interaction {
    pub id: String,
    pub token: String,
    #[serde(rename = "type")]
    pub kind: i64,
    #[serde(default)]
    pub channel_id: Option<String>,
    #[serde(default)]
    pub guild_id: Option<String>,
    #[serde(default)]
    pub member: Option<Member>,
    #[serde(default)]
    pub user: Option<User>,
    #[serde(default)]
    pub message: Option<MessageId>,
    #[serde(default)]
    pub data: Option<ComponentData>,
}

fn chat(channel_id: &str, guild_id: Option<&String>) -> ChatRef {
    // A Discord thread is a channel of its own: replying to its channel id answers in the thread.
    let kind = if guild_id.is_some() { ChatKind::Group } else { ChatKind::Direct };
    ChatRef { chat_id: channel_id.to_owned(), thread_id: None, kind }
}

impl Message {
    /// The normalised message, or `None` for bots, webhooks, system messages and empty ones.
    pub fn into_event(self, channel_id: Uuid, bot_id: Option<&str>) -> Option<InboundEvent> {
        let author = self.author?;
        if author.bot || self.webhook_id.is_some() || !USER_MESSAGE_TYPES.contains(&self.kind.unwrap_or(0)) {
            return None;
        }
        let mut text = self.content.unwrap_or_default();
        let mentioned = bot_id.is_some_and(|id| self.mentions.iter().any(|user| user.id == id));
        if let Some(id) = bot_id {
            // `<@id>` / `<@!id>` addressing the bot is not part of what the user asks.
            text = text.replace(&format!("<@{id}>"), "").replace(&format!("<@!{id}>"), "").trim().to_owned();
        }
        let attachments: Vec<AttachmentRef> = self
            .attachments
            .into_iter()
            .filter_map(|file| {
                let url = file.url?;
                let kind = AttachmentRef::kind_of(file.content_type.as_deref()).into();
                Some(AttachmentRef {
                    kind,
                    mime: file.content_type,
                    size: file.size,
                    name: file.filename,
                    platform_file_ref: url,
                })
            })
            .collect();
        if text.is_empty() && attachments.is_empty() {
            return None;
        }
        let chat = chat(&self.channel_id, self.guild_id.as_ref());
        let replied_to_me = self
            .referenced_message
            .as_ref()
            .and_then(|referenced| referenced.author.as_ref())
            .is_some_and(|replied| Some(replied.id.as_str()) == bot_id);
        Some(InboundEvent::Message(Inbound {
            channel_id,
            platform_message_id: self.id,
            sender: Sender { platform_user_id: author.id.clone(), display_name: author.display_name() },
            is_mention: chat.kind == ChatKind::Direct || mentioned || replied_to_me,
            chat,
            text,
            attachments,
            reply_to: self.message_reference.and_then(|reference| reference.message_id),
        }))
    }
}

impl Interaction {
    /// A button press, or `None` for other interaction types. The id keeps the interaction token
    /// (`ix:<id>:<token>`), which answering the press needs.
    pub fn into_event(self, channel_id: Uuid) -> Option<InboundEvent> {
        if self.kind != MESSAGE_COMPONENT {
            return None;
        }
        let user = self.member.and_then(|member| member.user).or(self.user)?;
        Some(InboundEvent::Interaction(ButtonPress {
            channel_id,
            platform_interaction_id: format!("ix:{}:{}", self.id, self.token),
            chat: chat(self.channel_id.as_deref()?, self.guild_id.as_ref()),
            sender: Sender { platform_user_id: user.id.clone(), display_name: user.display_name() },
            message_id: self.message.map(|message| message.id),
            data: self.data.and_then(|data| data.custom_id).unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn message(value: Value) -> Option<InboundEvent> {
        serde_json::from_value::<Message>(value).unwrap().into_event(Uuid::nil(), Some("99"))
    }

    #[test]
    fn guild_messages_know_whether_the_bot_was_addressed_and_lose_the_mention() {
        let base = json!({"id": "5", "channel_id": "10", "guild_id": "1", "type": 0, "content": "hello all",
                          "author": {"id": "7", "username": "ada"}});
        let Some(InboundEvent::Message(plain)) = message(base.clone()) else { panic!() };
        assert_eq!((plain.chat.kind, plain.is_mention), (ChatKind::Group, false));
        assert_eq!(plain.sender.display_name, "ada");
        let mut mentioned = base.clone();
        mentioned["content"] = json!("<@99> what is up");
        mentioned["mentions"] = json!([{"id": "99", "bot": true}]);
        let Some(InboundEvent::Message(mentioned)) = message(mentioned) else { panic!() };
        assert_eq!((mentioned.text.as_str(), mentioned.is_mention), ("what is up", true));
        let mut reply = base;
        reply["type"] = json!(19);
        reply["message_reference"] = json!({"message_id": "3"});
        reply["referenced_message"] = json!({"id": "3", "author": {"id": "99", "bot": true}});
        let Some(InboundEvent::Message(reply)) = message(reply) else { panic!() };
        assert_eq!((reply.is_mention, reply.reply_to.as_deref()), (true, Some("3")));
    }

    #[test]
    fn bots_webhooks_system_messages_and_empty_ones_are_ignored() {
        let author = json!({"id": "7"});
        assert!(
            message(json!({"id": "1", "channel_id": "2", "author": {"id": "8", "bot": true}, "content": "x"}))
                .is_none()
        );
        assert!(
            message(json!({"id": "1", "channel_id": "2", "author": author, "content": "x", "webhook_id": "3"}))
                .is_none()
        );
        assert!(message(json!({"id": "1", "channel_id": "2", "author": author, "content": "x", "type": 7})).is_none());
        assert!(message(json!({"id": "1", "channel_id": "2", "author": author, "content": ""})).is_none());
        let Some(InboundEvent::Message(dm)) =
            message(json!({"id": "1", "channel_id": "2", "author": author, "content": "hi"}))
        else {
            panic!()
        };
        assert_eq!((dm.chat.kind, dm.is_mention), (ChatKind::Direct, true));
    }

    #[test]
    fn button_presses_keep_the_interaction_token() {
        let press: Interaction = serde_json::from_value(json!({
            "id": "11", "token": "tok", "type": 3, "channel_id": "2", "guild_id": "1",
            "member": {"user": {"id": "7", "global_name": "Ada"}}, "message": {"id": "40"},
            "data": {"custom_id": "apr:a:x", "component_type": 2}}))
        .unwrap();
        let Some(InboundEvent::Interaction(press)) = press.into_event(Uuid::nil()) else { panic!() };
        assert_eq!(press.platform_interaction_id, "ix:11:tok");
        assert_eq!((press.data.as_str(), press.message_id.as_deref()), ("apr:a:x", Some("40")));
        assert_eq!(press.sender.display_name, "Ada");
    }
}
