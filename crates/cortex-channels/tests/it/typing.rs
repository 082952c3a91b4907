//! The typing indicator is renewed while a chat's job runs, on the store's clock, stops when the job
//! ends, costs nothing while no job runs, and is sent by one process only.

use std::sync::Arc;

use cortex_channels::adapter::{ChannelAdapter, InboundSink};
use cortex_channels::router::Router;
use cortex_channels::telegram::{TelegramAdapter, TelegramConfig, TelegramMode};
use cortex_channels::types::{ChatKind, ChatRef, Inbound, InboundEvent, Sender};
use cortex_channels::typing::{self, Owner};
use cortex_core::agent::AccessMode;
use cortex_store::channel_access::NewBinding;
use cortex_store::jobs::AttemptEnd;
use cortex_testkit::fake_telegram::FakeTelegram;
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{agent, channel, init, sink};

both_engines!(typing_runs_only_while_a_chat_job_runs_and_costs_nothing_when_idle, |t: TestStore| async move {
    init();
    let telegram = FakeTelegram::start("1:t").await;
    let (channel_id, adapter) = telegram_channel(&t, &telegram).await;
    let (sink, _) = sink(&t.store, channel_id);
    sink.deliver(message(channel_id, "42", "m1")).await.unwrap();
    let worker = cortex_core::new_id();
    t.store.register_worker(worker, "test").await.unwrap();

    // Idle: with no chat job running the task waits on notifications only; however far the clock moves,
    // it makes no platform call.
    let cancel = CancellationToken::new();
    let running =
        tokio::spawn(typing::run(t.store.clone(), channel_id, adapter.clone(), Owner::ReceiveLease, cancel.clone()));
    for _ in 0..5 {
        t.clock.advance(chrono::Duration::seconds(60));
        tokio::task::yield_now().await;
    }

    // Routing shows the indicator once (SPEC §8.6 step 8); the job is queued, not running: nothing more.
    let channel = t.store.channel(channel_id).await.unwrap();
    Router::new(t.store.clone()).route_pending(&channel, adapter.as_ref()).await.unwrap();
    assert_eq!(telegram.wait_for_calls("sendChatAction", 1).await.len(), 1, "no call while idle");

    // The job starts running: the indicator at once, then every 4 s of the store's clock.
    let job = t.store.claim_next(worker, false).await.unwrap().unwrap();
    let calls = telegram.wait_for_calls("sendChatAction", 2).await;
    assert_eq!(calls[1].body, json!({"chat_id": 42, "action": "typing"}));
    t.clock.advance(chrono::Duration::seconds(4));
    telegram.wait_for_calls("sendChatAction", 3).await;
    t.clock.advance(chrono::Duration::seconds(4));
    telegram.wait_for_calls("sendChatAction", 4).await;

    // The job ends; a second message, in another chat, starts a job there. Notifications arrive in
    // commit order, so once the second job's first call is seen the first job's end was too.
    let mut tx = t.store.begin().await.unwrap();
    tx.end_attempt(job.id, worker, &AttemptEnd::Completed { result: json!({"response": "done"}) }).await.unwrap();
    tx.commit().await.unwrap();
    sink.deliver(message(channel_id, "43", "m2")).await.unwrap();
    Router::new(t.store.clone()).route_pending(&channel, adapter.as_ref()).await.unwrap();
    let second = t.store.claim_next(worker, false).await.unwrap().unwrap();
    assert_ne!(second.id, job.id);
    telegram.wait_for_calls("sendChatAction", 6).await;
    // The next renewal goes to chat 43 only (chat 42, whose job ended, would come first).
    t.clock.advance(chrono::Duration::seconds(4));
    let calls = telegram.wait_for_calls("sendChatAction", 7).await;
    assert_eq!(calls[6].body, json!({"chat_id": 43, "action": "typing"}), "{:?}", calls[6]);
    cancel.cancel();
    running.await.unwrap();
    assert_eq!(typing::interval(cortex_channels::types::Platform::Slack), None, "Slack bots have no indicator");
});

both_engines!(only_the_typing_lease_holder_renews_a_webhook_channel, |t: TestStore| async move {
    init();
    let telegram = FakeTelegram::start("1:t").await;
    let (channel_id, adapter) = telegram_channel(&t, &telegram).await;
    let (sink, _) = sink(&t.store, channel_id);
    sink.deliver(message(channel_id, "42", "m1")).await.unwrap();
    let channel = t.store.channel(channel_id).await.unwrap();
    Router::new(t.store.clone()).route_pending(&channel, adapter.as_ref()).await.unwrap();
    telegram.wait_for_calls("sendChatAction", 1).await;

    // Two processes run the task; the job is already running when they start (found by one query).
    let worker = cortex_core::new_id();
    t.store.register_worker(worker, "test").await.unwrap();
    t.store.claim_next(worker, false).await.unwrap().unwrap();
    let cancel = CancellationToken::new();
    for _ in 0..2 {
        let owner = Owner::TypingLease(cortex_core::new_id());
        tokio::spawn(typing::run(t.store.clone(), channel_id, adapter.clone(), owner, cancel.clone()));
    }
    telegram.wait_for_calls("sendChatAction", 2).await;
    for round in 1..=3 {
        t.clock.advance(chrono::Duration::seconds(4));
        telegram.wait_for_calls("sendChatAction", 2 + round).await;
    }
    // Let the other task act on the last advance too, then count: one call per renewal, not two.
    t.clock.advance(chrono::Duration::seconds(4));
    let calls = telegram.wait_for_calls("sendChatAction", 6).await;
    assert_eq!(calls.len(), 6, "one process renews");
    cancel.cancel();
});

/// A Telegram channel (webhook mode, so nothing polls) on `telegram`, bound to an agent for chats 42 and 43.
async fn telegram_channel(t: &TestStore, telegram: &FakeTelegram) -> (Uuid, Arc<dyn ChannelAdapter>) {
    let channel_id = channel(&t.store, "telegram").await;
    let adapter: Arc<dyn ChannelAdapter> = Arc::new(TelegramAdapter::new(
        reqwest::Client::new(),
        TelegramConfig {
            channel_id,
            api_base: telegram.api_base().to_owned(),
            token: "1:t".into(),
            mode: TelegramMode::Webhook { url: None, secret: None },
        },
    ));
    let agent_id = agent(&t.store, "Slow", AccessMode::BoundChats).await;
    for chat in ["42", "43"] {
        let mut tx = t.store.begin().await.unwrap();
        let binding = NewBinding {
            agent_id,
            channel_type: "telegram".into(),
            channel_id: None,
            chat_id: chat.into(),
            respond_to: None,
        };
        tx.upsert_binding(&binding).await.unwrap();
        tx.commit().await.unwrap();
    }
    (channel_id, adapter)
}

/// A direct message in `chat` from the user of the same id.
fn message(channel_id: Uuid, chat: &str, id: &str) -> InboundEvent {
    InboundEvent::Message(Inbound {
        channel_id,
        platform_message_id: id.into(),
        chat: ChatRef { chat_id: chat.into(), thread_id: None, kind: ChatKind::Direct },
        sender: Sender { platform_user_id: chat.into(), display_name: "Ada".into() },
        text: "think hard".into(),
        attachments: vec![],
        reply_to: None,
        is_mention: true,
    })
}
