//! The typing indicator is renewed while a chat's job is in progress, on the store's clock, and stops
//! when the job ends.

use std::sync::Arc;

use cortex_channels::adapter::{ChannelAdapter, InboundSink};
use cortex_channels::router::Router;
use cortex_channels::telegram::{TelegramAdapter, TelegramConfig, TelegramMode};
use cortex_channels::types::{ChatKind, ChatRef, Inbound, InboundEvent, Sender};
use cortex_channels::typing;
use cortex_core::agent::AccessMode;
use cortex_store::channel_access::NewBinding;
use cortex_store::jobs::AttemptEnd;
use cortex_testkit::fake_telegram::FakeTelegram;
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::{agent, channel, init, sink};

both_engines!(typing_is_renewed_while_the_job_runs_and_stops_when_it_ends, |t: TestStore| async move {
    init();
    let telegram = FakeTelegram::start("1:t").await;
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
    let mut tx = t.store.begin().await.unwrap();
    let binding = NewBinding {
        agent_id,
        channel_type: "telegram".into(),
        channel_id: None,
        chat_id: "42".into(),
        respond_to: None,
    };
    tx.upsert_binding(&binding).await.unwrap();
    tx.commit().await.unwrap();
    let chat = ChatRef { chat_id: "42".into(), thread_id: None, kind: ChatKind::Direct };
    let (sink, _) = sink(&t.store, channel_id);
    sink.deliver(InboundEvent::Message(Inbound {
        channel_id,
        platform_message_id: "m1".into(),
        chat,
        sender: Sender { platform_user_id: "42".into(), display_name: "Ada".into() },
        text: "think hard".into(),
        attachments: vec![],
        reply_to: None,
        is_mention: true,
    }))
    .await
    .unwrap();
    let channel = t.store.channel(channel_id).await.unwrap();
    Router::new(t.store.clone()).route_pending(&channel, adapter.as_ref()).await.unwrap();
    telegram.wait_for_calls("sendChatAction", 1).await;

    // Renewed every 4 s of the store's clock while the job is pending or running.
    let cancel = CancellationToken::new();
    let running = tokio::spawn(typing::run(t.store.clone(), channel_id, adapter.clone(), cancel.clone()));
    telegram.wait_for_calls("sendChatAction", 2).await;
    t.clock.advance(chrono::Duration::seconds(4));
    let calls = telegram.wait_for_calls("sendChatAction", 3).await;
    assert_eq!(calls[2].body, json!({"chat_id": 42, "action": "typing"}));
    cancel.cancel();
    running.await.unwrap();

    let worker = cortex_core::new_id();
    t.store.register_worker(worker, "test").await.unwrap();
    let job = t.store.claim_next(worker, false).await.unwrap().unwrap();
    assert_eq!(typing::tick(&t.store, channel_id, adapter.as_ref()).await.unwrap(), 1, "running");
    let mut tx = t.store.begin().await.unwrap();
    tx.end_attempt(job.id, worker, &AttemptEnd::Completed { result: json!({"response": "done"}) }).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(typing::tick(&t.store, channel_id, adapter.as_ref()).await.unwrap(), 0, "the job ended");
    assert_eq!(telegram.calls("sendChatAction").len(), 4);
    assert_eq!(typing::interval(cortex_channels::types::Platform::Slack), None, "Slack bots have no indicator");
});
