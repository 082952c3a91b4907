//! The Telegram adapter against the fake Bot API: identity, long polling with a persisted offset,
//! dedupe of redelivered messages, sending with HTML fallback, 429 and 5xx handling.

use std::sync::Arc;
use std::time::Duration;

use cortex_channels::adapter::{AdapterError, ChannelAdapter, InboundSink};
use cortex_channels::telegram::{TelegramAdapter, TelegramConfig, TelegramMode};
use cortex_channels::types::{ChatKind, ChatRef, OutboundMessage};
use cortex_testkit::fake_telegram::{BOT_USERNAME, Failure, FakeTelegram};
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{channel, init, sink, wait_for_inbound};

const TOKEN: &str = "123456:test-token";

fn adapter(telegram: &FakeTelegram, channel_id: Uuid, token: &str) -> Arc<TelegramAdapter> {
    init();
    Arc::new(TelegramAdapter::new(
        reqwest::Client::new(),
        TelegramConfig {
            channel_id,
            api_base: telegram.api_base().to_owned(),
            token: token.to_owned(),
            mode: TelegramMode::Polling { timeout: Duration::from_secs(1) },
        },
    ))
}

fn dm(chat: i64) -> ChatRef {
    ChatRef { chat_id: chat.to_string(), thread_id: None, kind: ChatKind::Direct }
}

#[tokio::test]
async fn verify_returns_the_bot_identity_and_refuses_a_bad_token() {
    let telegram = FakeTelegram::start(TOKEN).await;
    let me = adapter(&telegram, Uuid::nil(), TOKEN).verify().await.unwrap();
    assert_eq!(me.username.as_deref(), Some(BOT_USERNAME));
    let err = adapter(&telegram, Uuid::nil(), "123456:wrong").verify().await.unwrap_err();
    assert!(matches!(err, AdapterError::Unauthorized(_)), "{err:?}");
    assert!(!err.to_string().contains("wrong"), "the token must not leak into errors: {err}");
}

both_engines!(polling_records_updates_and_resumes_after_the_saved_offset, |t: TestStore| async move {
    let telegram = FakeTelegram::start(TOKEN).await;
    let channel_id = channel(&t.store, "telegram").await;
    let (sink, recorded) = sink(&t.store, channel_id);
    telegram.push_text(42, 42, "first");
    let last = telegram.push_text(42, 42, "second");

    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let (adapter, sink, cancel) = (adapter(&telegram, channel_id, TOKEN), sink.clone(), cancel.clone());
        async move { adapter.run(sink, cancel).await }
    });
    assert_eq!(wait_for_inbound(&t.store, channel_id, &recorded, 2).await, ["first", "second"]);
    // The offset is saved once the batch is recorded; the next poll confirms it to Telegram.
    telegram.wait_for_calls("getUpdates", 2).await;
    assert_eq!(t.store.channel_cursor(channel_id).await.unwrap(), Some((last + 1).to_string()));
    assert!(sink.last_alive().is_some());
    cancel.cancel();
    running.await.unwrap().unwrap();

    // A new process resumes after the saved offset: nothing is repeated, the next message arrives.
    telegram.push_text(42, 42, "third");
    let polls_before = telegram.calls("getUpdates").len();
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let (adapter, sink, cancel) = (adapter(&telegram, channel_id, TOKEN), sink.clone(), cancel.clone());
        async move { adapter.run(sink, cancel).await }
    });
    assert_eq!(wait_for_inbound(&t.store, channel_id, &recorded, 3).await, ["first", "second", "third"]);
    let resumed = &telegram.calls("getUpdates")[polls_before];
    assert_eq!(resumed.body["offset"], json!(last + 1));
    assert_eq!(resumed.body["allowed_updates"], json!(["message", "callback_query"]));
    cancel.cancel();
    running.await.unwrap().unwrap();
});

both_engines!(a_redelivered_message_is_recorded_once, |t: TestStore| async move {
    let telegram = FakeTelegram::start(TOKEN).await;
    let channel_id = channel(&t.store, "telegram").await;
    let (sink, recorded) = sink(&t.store, channel_id);
    let message = json!({"message_id": 5, "chat": {"id": 42, "type": "private"}, "from": {"id": 42}, "text": "once"});
    telegram.push_update(json!({"message": message}));
    telegram.push_update(json!({"message": message}));
    telegram.push_text(42, 42, "after");

    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let (adapter, sink, cancel) = (adapter(&telegram, channel_id, TOKEN), sink.clone(), cancel.clone());
        async move { adapter.run(sink, cancel).await }
    });
    assert_eq!(wait_for_inbound(&t.store, channel_id, &recorded, 2).await, ["once", "after"]);
    telegram.wait_for_calls("getUpdates", 2).await;
    assert_eq!(t.store.unrouted_inbound(channel_id, 10).await.unwrap().len(), 2);
    cancel.cancel();
    running.await.unwrap().unwrap();
});

both_engines!(polling_waits_out_a_429_and_stops_on_a_server_error, |t: TestStore| async move {
    let telegram = FakeTelegram::start(TOKEN).await;
    let channel_id = channel(&t.store, "telegram").await;
    let (sink, recorded) = sink(&t.store, channel_id);
    telegram.fail_next("getUpdates", Failure::rate_limited(1));
    telegram.push_text(42, 42, "after the limit");
    let cancel = CancellationToken::new();
    let adapter = adapter(&telegram, channel_id, TOKEN);
    let running = tokio::spawn({
        let (adapter, sink, cancel) = (adapter.clone(), sink.clone(), cancel.clone());
        async move { adapter.run(sink, cancel).await }
    });
    assert_eq!(wait_for_inbound(&t.store, channel_id, &recorded, 1).await, ["after the limit"]);
    cancel.cancel();
    running.await.unwrap().unwrap();

    // A 5xx ends the loop with an error for the supervisor to restart it; nothing was lost.
    telegram.fail_next("getUpdates", Failure::server_error());
    let sink: Arc<dyn InboundSink> = sink;
    let err = adapter.run(sink, CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, AdapterError::Unavailable(_)), "{err:?}");
});

#[tokio::test]
async fn sending_reports_platform_ids_retry_hints_and_falls_back_to_plain_text() {
    let telegram = FakeTelegram::start(TOKEN).await;
    let adapter = adapter(&telegram, Uuid::nil(), TOKEN);
    let message = OutboundMessage::text(dm(42), "**done** <see https://example.com>");

    let sent = adapter.send(&message).await.unwrap();
    assert!(!sent.platform_message_id.is_empty());
    let call = &telegram.calls("sendMessage")[0];
    assert_eq!(call.body["text"], json!("<b>done</b> &lt;see https://example.com&gt;"));
    assert_eq!(call.body["link_preview_options"], json!({"is_disabled": true}));

    telegram.fail_next("sendMessage", Failure::rate_limited(7));
    let err = adapter.send(&message).await.unwrap_err();
    assert_eq!((err.retry_after, err.permanent), (Some(Duration::from_secs(7)), false));

    telegram.fail_next("sendMessage", Failure::server_error());
    assert!(!adapter.send(&message).await.unwrap_err().permanent);

    telegram.fail_next(
        "sendMessage",
        Failure { status: 400, description: "Bad Request: chat not found".into(), retry_after: None },
    );
    assert!(adapter.send(&message).await.unwrap_err().permanent);

    telegram.fail_next("sendMessage", Failure::bad_markup());
    let before = telegram.calls("sendMessage").len();
    let again = adapter.send(&message).await.unwrap();
    assert_ne!(again.platform_message_id, sent.platform_message_id);
    let calls = telegram.calls("sendMessage");
    assert_eq!(calls.len(), before + 2);
    assert_eq!(calls[before + 1].body.get("parse_mode"), None);
    assert_eq!(calls[before + 1].body["text"], json!("**done** <see https://example.com>"));

    adapter.edit(&sent.platform_message_id, &message).await.unwrap();
    assert_eq!(telegram.calls("editMessageText")[0].body["message_id"].to_string(), sent.platform_message_id);
    adapter.typing(&dm(42)).await.unwrap();
    assert_eq!(telegram.calls("sendChatAction")[0].body["action"], json!("typing"));
}
