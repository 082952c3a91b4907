//! Outbox delivery to the fake Bot API on both engines: long replies in ordered parts, `delivered` only
//! with the platform's ids, retries that honour `retry_after` and resume after the last accepted part,
//! permanent failures visible.

use cortex_channels::delivery::deliver_due;
use cortex_channels::telegram::{TelegramAdapter, TelegramConfig, TelegramMode};
use cortex_channels::types::{ChatKind, ChatRef};
use cortex_testkit::fake_telegram::{Failure, FakeTelegram};
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;

use crate::support::{channel, init, queue_reply};

fn adapter(telegram: &FakeTelegram, channel_id: uuid::Uuid) -> TelegramAdapter {
    init();
    TelegramAdapter::new(
        reqwest::Client::new(),
        TelegramConfig {
            channel_id,
            api_base: telegram.api_base().to_owned(),
            token: "1:t".into(),
            mode: TelegramMode::Polling { timeout: std::time::Duration::from_secs(1) },
        },
    )
}

async fn queue(store: &cortex_store::Store, channel_id: uuid::Uuid, key: &str, text: &str) -> uuid::Uuid {
    let chat = ChatRef { chat_id: "42".into(), thread_id: None, kind: ChatKind::Direct };
    queue_reply(store, channel_id, chat, "msg:42:9", key, text).await
}

both_engines!(a_long_reply_goes_out_in_parts_and_resumes_after_the_last_accepted_one, |t: TestStore| async move {
    let telegram = FakeTelegram::start("1:t").await;
    let channel_id = channel(&t.store, "telegram").await;
    let adapter = adapter(&telegram, channel_id);
    let holder = cortex_core::new_id();
    let long = (0..3).map(|n| format!("Paragraph {n}: {}", "word ".repeat(700))).collect::<Vec<_>>().join("\n\n");
    let id = queue(&t.store, channel_id, "long", &long).await;
    assert_eq!(deliver_due(&t.store, channel_id, &adapter, holder).await.unwrap(), 1);
    let item = t.store.outbox_item(id).await.unwrap().unwrap();
    assert_eq!(item.status, "delivered", "{:?}", item.last_error);
    let sent = telegram.delivered("sendMessage");
    assert_eq!(sent.len(), 3, "three parts");
    assert!(sent.iter().all(|call| call.body["text"].as_str().unwrap().chars().count() <= 4096));
    assert!(sent[0].body["text"].as_str().unwrap().starts_with("Paragraph 0"));
    assert_eq!(sent[0].body["reply_parameters"]["message_id"], json!(9), "the first part answers the message");
    assert!(sent[1].body.get("reply_parameters").is_none());
    let ids: Vec<String> = sent.iter().map(|call| call.response["message_id"].to_string()).collect();
    assert_eq!(item.platform_message_id.as_deref(), Some(ids.join(",").as_str()));

    // The second part fails: the first part's id is kept and only the rest is sent next time.
    let id = queue(&t.store, channel_id, "resume", &long).await;
    telegram.fail_after("sendMessage", 1, Failure::server_error());
    deliver_due(&t.store, channel_id, &adapter, holder).await.unwrap();
    let interrupted = t.store.outbox_item(id).await.unwrap().unwrap();
    assert_eq!((interrupted.status.as_str(), interrupted.attempts), ("queued", 1));
    let first_part = telegram.delivered("sendMessage")[3].response["message_id"].to_string();
    assert_eq!(interrupted.platform_message_id.as_deref(), Some(first_part.as_str()));
    t.clock.advance(chrono::Duration::seconds(1));
    deliver_due(&t.store, channel_id, &adapter, holder).await.unwrap();
    let done = t.store.outbox_item(id).await.unwrap().unwrap();
    assert_eq!(done.status, "delivered", "{done:?}");
    let delivered = telegram.delivered("sendMessage");
    assert_eq!(delivered.len(), 6, "each part delivered exactly once");
    assert!(delivered[4].body["text"].as_str().unwrap().contains("Paragraph 1"));
    assert_eq!(done.platform_message_id.as_deref().map(|ids| ids.split(',').count()), Some(3));
});

both_engines!(retries_honour_retry_after_and_permanent_failures_are_visible, |t: TestStore| async move {
    let telegram = FakeTelegram::start("1:t").await;
    let channel_id = channel(&t.store, "telegram").await;
    let adapter = adapter(&telegram, channel_id);
    let holder = cortex_core::new_id();
    let id = queue(&t.store, channel_id, "limited", "short answer").await;
    telegram.fail_next("sendMessage", Failure::rate_limited(30));
    deliver_due(&t.store, channel_id, &adapter, holder).await.unwrap();
    let item = t.store.outbox_item(id).await.unwrap().unwrap();
    assert_eq!(item.status, "queued");
    assert_eq!(item.next_attempt_at, t.clock.now_plus(30), "Retry-After wins over the 1 s backoff");
    assert!(item.last_error.as_deref().unwrap_or_default().starts_with("rate_limited"));
    t.clock.advance(chrono::Duration::seconds(29));
    assert_eq!(deliver_due(&t.store, channel_id, &adapter, holder).await.unwrap(), 0, "not before it is due");
    t.clock.advance(chrono::Duration::seconds(1));
    deliver_due(&t.store, channel_id, &adapter, holder).await.unwrap();
    assert_eq!(t.store.outbox_item(id).await.unwrap().unwrap().status, "delivered");

    let id = queue(&t.store, channel_id, "gone", "to nowhere").await;
    telegram.fail_next(
        "sendMessage",
        Failure { status: 400, description: "Bad Request: chat not found".into(), retry_after: None },
    );
    deliver_due(&t.store, channel_id, &adapter, holder).await.unwrap();
    let item = t.store.outbox_item(id).await.unwrap().unwrap();
    assert_eq!((item.status.as_str(), item.attempts), ("failed", 1));
    assert!(item.last_error.unwrap().contains("chat not found"));

    // Five transient failures in a row: failed, and visible.
    let id = queue(&t.store, channel_id, "flaky", "maybe").await;
    for attempt in 1..=5 {
        telegram.fail_next("sendMessage", Failure::server_error());
        deliver_due(&t.store, channel_id, &adapter, holder).await.unwrap();
        t.clock.advance(chrono::Duration::seconds(60));
        let item = t.store.outbox_item(id).await.unwrap().unwrap();
        assert_eq!(item.attempts, attempt);
    }
    assert_eq!(t.store.outbox_item(id).await.unwrap().unwrap().status, "failed");
});
