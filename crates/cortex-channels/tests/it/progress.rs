//! Long replies shown while they stream (issue 13, point 8), against the fakes on both engines: a chat
//! job's model output arrives as `llm.delta` events (as the runtime writes them) with the store clock
//! moved between them; the channel sees one draft message and then edits at most once per store-clock
//! second (WhatsApp: finished paragraphs as messages), and the final reply, still the outbox row written
//! when the job ends, replaces the draft instead of arriving twice — also after a restart.

use std::sync::Arc;

use cortex_channels::adapter::ChannelAdapter;
use cortex_channels::delivery::deliver_due;
use cortex_channels::discord::{DiscordAdapter, DiscordConfig};
use cortex_channels::router::reply_target;
use cortex_channels::slack::{SlackAdapter, SlackConfig};
use cortex_channels::telegram::{TelegramAdapter, TelegramConfig, TelegramMode};
use cortex_channels::types::{ChatKind, ChatRef};
use cortex_channels::whatsapp::{WhatsAppAdapter, WhatsAppConfig};
use cortex_core::agent::AccessMode;
use cortex_core::event::EventType;
use cortex_core::job::JobKind;
use cortex_store::Store;
use cortex_store::events::NewEvent;
use cortex_store::jobs::{AttemptEnd, NewJob};
use cortex_testkit::fake_discord::{self, FakeDiscord};
use cortex_testkit::fake_slack::{self, FakeSlack};
use cortex_testkit::fake_telegram::FakeTelegram;
use cortex_testkit::fake_whatsapp::{self, FakeWhatsApp};
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{agent, channel, init};

/// A running chat job of a channel, whose reply goes to `chat`.
struct Streaming {
    store: Store,
    channel_id: Uuid,
    agent_id: Uuid,
    job_id: Uuid,
    worker: Uuid,
}

impl Streaming {
    async fn start(store: &Store, platform: &str, chat: &ChatRef) -> Streaming {
        let channel_id = channel(store, platform).await;
        let agent_id = agent(store, &format!("streamer-{platform}"), AccessMode::Open).await;
        let mut tx = store.begin().await.unwrap();
        let (job, _) = tx
            .insert_job(&NewJob {
                kind: JobKind::Chat,
                payload: json!({"reply": {"channel_id": channel_id, "target": reply_target(chat, Some("7"))}}),
                ..NewJob::task(agent_id, json!({}))
            })
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let worker = Uuid::now_v7();
        assert_eq!(store.claim_next(worker, false).await.unwrap().map(|job| job.id), Some(job.id));
        Streaming { store: store.clone(), channel_id, agent_id, job_id: job.id, worker }
    }

    /// Follows the channel's replies, as the supervisor does.
    async fn follow(&self, adapter: Arc<dyn ChannelAdapter>) -> Following {
        let cancel = CancellationToken::new();
        let channel = self.store.channel(self.channel_id).await.unwrap();
        let task = cortex_channels::progress::spawn(self.store.clone(), channel, adapter, cancel.clone());
        Following { cancel, task }
    }

    /// The model streamed `text` (one coalesced delta, as the runtime stores it).
    async fn delta(&self, text: &str) {
        let mut tx = self.store.begin().await.unwrap();
        tx.emit(NewEvent::new(self.agent_id, Some(self.job_id), EventType::LlmDelta, json!({"turn": 1, "text": text})));
        tx.commit().await.unwrap();
    }

    /// The job ends with `response`: its reply is queued in the same transaction.
    async fn complete(&self, response: &str) {
        let mut tx = self.store.begin().await.unwrap();
        let end = AttemptEnd::Completed { result: json!({"response": response}) };
        tx.end_attempt(self.job_id, self.worker, &end).await.unwrap();
        tx.commit().await.unwrap();
    }

    /// Delivers the queued reply as a freshly started delivery worker would.
    async fn deliver(&self, adapter: &dyn ChannelAdapter) {
        assert_eq!(deliver_due(&self.store, self.channel_id, adapter, Uuid::now_v7()).await.unwrap(), 1);
        let reply = self.store.list_outbox(self.channel_id, None, None, 10).await.unwrap();
        assert!(reply.items.iter().all(|item| item.status == "delivered"), "{:?}", reply.items);
    }
}

/// The progress task of a channel.
struct Following {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Following {
    /// Stops it once the call it is making (and its record) is done, as a process shutting down would.
    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
    }
}

fn chat(id: &str) -> ChatRef {
    ChatRef { chat_id: id.into(), thread_id: None, kind: ChatKind::Direct }
}

fn telegram_adapter(telegram: &FakeTelegram, channel_id: Uuid) -> Arc<dyn ChannelAdapter> {
    init();
    Arc::new(TelegramAdapter::new(
        reqwest::Client::new(),
        TelegramConfig {
            channel_id,
            api_base: telegram.api_base().to_owned(),
            token: "1:t".into(),
            mode: TelegramMode::Polling { timeout: std::time::Duration::from_secs(1) },
        },
    ))
}

fn texts(calls: &[cortex_testkit::fake_telegram::TelegramCall]) -> Vec<String> {
    calls.iter().map(|call| call.body["text"].as_str().unwrap_or_default().to_owned()).collect()
}

const PARA_1: &str = "The first paragraph says hello.\n\n";
const PARA_2: &str = "The second one grows";
const PARA_2_MORE: &str = " word by word.\n\n";
const PARA_3: &str = "And the last one ends it.";

both_engines!(a_streamed_telegram_reply_is_one_draft_edited_at_most_once_a_second, |t: TestStore| async move {
    let telegram = FakeTelegram::start("1:t").await;
    let job = Streaming::start(&t.store, "telegram", &chat("42")).await;
    let adapter = telegram_adapter(&telegram, job.channel_id);
    let following = job.follow(adapter.clone()).await;

    // Not enough yet: no finished paragraph and no second passed.
    job.delta("The first paragraph").await;
    // A finished paragraph: the draft goes out, answering the user's message.
    job.delta(" says hello.\n\n").await;
    let drafts = telegram.wait_for_delivered("sendMessage", 1).await;
    assert_eq!(texts(&drafts), [PARA_1.trim_end()]);
    assert_eq!(drafts[0].body["reply_parameters"]["message_id"], json!(7));
    let draft_id = drafts[0].response["message_id"].clone();

    // Two more deltas within the same second: no edit until the clock moves on, then one with the
    // text so far (the second delta too, unless it was read only after the edit started).
    job.delta(PARA_2).await;
    job.delta(PARA_2_MORE).await;
    assert!(telegram.calls("editMessageText").is_empty(), "an edit within the second of the draft");
    t.clock.advance(chrono::Duration::seconds(1));
    let edits = telegram.wait_for_delivered("editMessageText", 1).await;
    let first_edit = edits[0].body["text"].as_str().unwrap();
    assert!(first_edit.starts_with(&format!("{PARA_1}{PARA_2}")), "the edit carries the text so far: {first_edit:?}");
    assert_eq!(edits[0].body["message_id"], draft_id);
    assert_eq!(edits[0].body["link_preview_options"], json!({"is_disabled": true}));

    job.delta(PARA_3).await;
    t.clock.advance(chrono::Duration::milliseconds(500));
    assert_eq!(telegram.calls("editMessageText").len(), 1, "a second edit within the second");
    t.clock.advance(chrono::Duration::milliseconds(500));
    telegram.wait_for_delivered("editMessageText", 2).await;
    following.stop().await;

    // The job ends: the reply replaces the draft, nothing is posted twice.
    let reply = format!("{PARA_1}{PARA_2}{PARA_2_MORE}{PARA_3}");
    job.complete(&reply).await;
    job.deliver(adapter.as_ref()).await;
    let edits = telegram.wait_for_delivered("editMessageText", 3).await;
    assert_eq!(edits.len(), 3, "two progress edits in two seconds, then the final one");
    let last = &edits[2];
    assert_eq!(last.body["message_id"], draft_id);
    assert_eq!(last.body["text"].as_str().unwrap(), reply);
    assert_eq!(telegram.calls("sendMessage").len(), 1, "one message in the chat");
    let row = t.store.list_outbox(job.channel_id, None, None, 10).await.unwrap().items.remove(0);
    assert_eq!(row.platform_message_id.as_deref(), Some(draft_id.to_string().as_str()));
});

both_engines!(a_streamed_discord_reply_edits_its_draft_and_ends_with_the_reply, |t: TestStore| async move {
    init();
    let discord = FakeDiscord::start("discord-token").await;
    let job = Streaming::start(&t.store, "discord", &chat("555")).await;
    let adapter: Arc<dyn ChannelAdapter> = Arc::new(DiscordAdapter::new(
        reqwest::Client::new(),
        DiscordConfig {
            channel_id: job.channel_id,
            api_base: discord.api_base().to_owned(),
            gateway_url: None,
            token: "discord-token".into(),
        },
    ));
    let following = job.follow(adapter.clone()).await;

    job.delta(PARA_2).await;
    // No finished paragraph: the draft waits one second of store time.
    t.clock.advance(chrono::Duration::seconds(1));
    let drafts = discord.rest.wait_for_delivered(fake_discord::CREATE_MESSAGE, 1).await;
    assert_eq!(drafts[0].body["content"].as_str(), Some(PARA_2));
    let draft_id = drafts[0].response["id"].as_str().unwrap().to_owned();
    job.delta(PARA_2_MORE).await;
    t.clock.advance(chrono::Duration::seconds(1));
    let edits = discord.rest.wait_for_delivered(fake_discord::EDIT_MESSAGE, 1).await;
    assert!(edits[0].path.ends_with(&draft_id), "{}", edits[0].path);
    following.stop().await;

    let reply = format!("{PARA_2}{PARA_2_MORE}{PARA_3}");
    job.complete(&reply).await;
    job.deliver(adapter.as_ref()).await;
    let edits = discord.rest.wait_for_delivered(fake_discord::EDIT_MESSAGE, 2).await;
    assert_eq!(edits.len(), 2);
    assert_eq!(edits[1].body["content"].as_str(), Some(reply.as_str()));
    assert!(edits[1].path.ends_with(&draft_id));
    assert_eq!(discord.rest.calls(fake_discord::CREATE_MESSAGE).len(), 1, "one message in the channel");
});

both_engines!(a_streamed_slack_reply_is_updated_in_place, |t: TestStore| async move {
    init();
    let slack = FakeSlack::start("xoxb-test", "xapp-test").await;
    let job = Streaming::start(&t.store, "slack", &chat("C100")).await;
    let adapter: Arc<dyn ChannelAdapter> = Arc::new(SlackAdapter::new(
        reqwest::Client::new(),
        SlackConfig {
            channel_id: job.channel_id,
            api_base: slack.api_base().to_owned(),
            bot_token: "xoxb-test".into(),
            app_token: Some("xapp-test".into()),
            signing_secret: None,
        },
    ));
    let following = job.follow(adapter.clone()).await;

    job.delta(PARA_1).await;
    let drafts = slack.api.wait_for_delivered(fake_slack::POST_MESSAGE, 1).await;
    let draft_ts = drafts[0].response["ts"].clone();
    job.delta(PARA_2).await;
    t.clock.advance(chrono::Duration::seconds(1));
    let updates = slack.api.wait_for_delivered(fake_slack::UPDATE, 1).await;
    assert_eq!(updates[0].body["ts"], draft_ts);
    following.stop().await;

    let reply = format!("{PARA_1}{PARA_2}{PARA_2_MORE}{PARA_3}");
    job.complete(&reply).await;
    job.deliver(adapter.as_ref()).await;
    let updates = slack.api.delivered(fake_slack::UPDATE);
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[1].body["ts"], draft_ts);
    assert_eq!(updates[1].body["text"].as_str(), Some(reply.as_str()));
    assert_eq!(slack.api.calls(fake_slack::POST_MESSAGE).len(), 1, "one message in the thread");
});

both_engines!(whatsapp_gets_finished_paragraphs_in_order_and_the_rest_once, |t: TestStore| async move {
    init();
    let whatsapp = FakeWhatsApp::start("wa-token", "1555").await;
    let job = Streaming::start(&t.store, "whatsapp", &chat("4915550001")).await;
    let adapter: Arc<dyn ChannelAdapter> = Arc::new(WhatsAppAdapter::new(
        reqwest::Client::new(),
        WhatsAppConfig {
            channel_id: job.channel_id,
            api_base: whatsapp.api_base().to_owned(),
            phone_number_id: "1555".into(),
            access_token: "wa-token".into(),
            app_secret: "app-secret".into(),
            verify_token: "verify".into(),
        },
    ));
    let following = job.follow(adapter.clone()).await;
    let sent_texts = || {
        whatsapp
            .api
            .calls(fake_whatsapp::SEND_MESSAGE)
            .iter()
            .map(|call| call.body["text"]["body"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };

    job.delta(PARA_1).await;
    whatsapp.api.wait_for_delivered(fake_whatsapp::SEND_MESSAGE, 1).await;
    job.delta(PARA_2).await;
    t.clock.advance(chrono::Duration::seconds(1));
    job.delta(PARA_2_MORE).await;
    whatsapp.api.wait_for_delivered(fake_whatsapp::SEND_MESSAGE, 2).await;
    job.delta(PARA_3).await;
    following.stop().await;

    let reply = format!("{PARA_1}{PARA_2}{PARA_2_MORE}{PARA_3}");
    job.complete(&reply).await;
    job.deliver(adapter.as_ref()).await;
    let texts = sent_texts();
    assert_eq!(
        texts,
        [PARA_1.trim(), format!("{PARA_2}{PARA_2_MORE}").trim(), PARA_3],
        "paragraphs in order, each once"
    );
    let joined: String = texts.join("\n\n");
    assert_eq!(joined, reply);
});

both_engines!(the_draft_survives_a_restart_and_the_long_reply_replaces_it, |t: TestStore| async move {
    let telegram = FakeTelegram::start("1:t").await;
    let job = Streaming::start(&t.store, "telegram", &chat("43")).await;
    let adapter = telegram_adapter(&telegram, job.channel_id);
    let following = job.follow(adapter.clone()).await;
    job.delta(PARA_1).await;
    let drafts = telegram.wait_for_delivered("sendMessage", 1).await;
    let draft_id = drafts[0].response["message_id"].clone();
    // The process stops: its progress task and all it held in memory are gone.
    following.stop().await;

    // A reply too long for one message, delivered by a worker that never saw the draft.
    let long = (0..3).map(|n| format!("Paragraph {n}: {}", "word ".repeat(700).trim_end())).collect::<Vec<_>>();
    let reply = format!("{PARA_1}{}", long.join("\n\n"));
    job.complete(&reply).await;
    let fresh = telegram_adapter(&telegram, job.channel_id);
    job.deliver(fresh.as_ref()).await;

    let edits = telegram.delivered("editMessageText");
    assert_eq!(edits.len(), 1, "the first part replaces the draft");
    assert_eq!(edits[0].body["message_id"], draft_id);
    let sent = telegram.delivered("sendMessage");
    assert!(sent.len() >= 2, "the rest follows as new messages: {}", sent.len());
    let mut all = vec![edits[0].body["text"].as_str().unwrap().to_owned()];
    all.extend(texts(&sent[1..]));
    assert_eq!(all.join(" ").split_whitespace().collect::<Vec<_>>(), reply.split_whitespace().collect::<Vec<_>>());
    assert!(sent[1..].iter().all(|call| call.body.get("reply_parameters").is_none()));
});
