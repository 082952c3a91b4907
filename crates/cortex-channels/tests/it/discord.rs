//! The Discord adapter against the fake REST API and gateway WebSocket: identify with intents, messages
//! recorded once however often they are dispatched, a dropped socket, a zombie connection, op 7 and
//! op 9 recovered by resuming (or identifying anew) without losing or repeating a message, a restart
//! resuming from the saved cursor, and sending with split, suppressed embeds and 429 `retry_after`.

use std::sync::Arc;
use std::time::Duration;

use cortex_channels::adapter::{AdapterError, ChannelAdapter};
use cortex_channels::delivery::deliver_due;
use cortex_channels::discord::{DiscordAdapter, DiscordConfig, INTENTS};
use cortex_channels::router::Router;
use cortex_channels::types::{ChatKind, ChatRef};
use cortex_core::agent::AccessMode;
use cortex_store::Store;
use cortex_store::channel_access::NewBinding;
use cortex_store::jobs::AttemptEnd;
use cortex_testkit::fake_discord::{self, BOT_ID, BOT_USERNAME, CREATE_MESSAGE, FakeDiscord};
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;
use uuid::Uuid;

use crate::support::{Running, agent, channel, init, queue_reply, sink, wait_for_inbound};

const TOKEN: &str = "discord-bot-token";

fn adapter(discord: &FakeDiscord, channel_id: Uuid, token: &str) -> Arc<DiscordAdapter> {
    init();
    Arc::new(DiscordAdapter::new(
        reqwest::Client::new(),
        DiscordConfig { channel_id, api_base: discord.api_base().to_owned(), gateway_url: None, token: token.into() },
    ))
}

#[tokio::test]
async fn verify_returns_the_bot_identity_and_refuses_a_bad_token() {
    let discord = FakeDiscord::start(TOKEN).await;
    let me = adapter(&discord, Uuid::nil(), TOKEN).verify().await.unwrap();
    assert_eq!((me.id.as_str(), me.username.as_deref()), (BOT_ID, Some(BOT_USERNAME)));
    let err = adapter(&discord, Uuid::nil(), "wrong").verify().await.unwrap_err();
    assert!(matches!(err, AdapterError::Unauthorized(_)), "{err:?}");
    assert!(!err.to_string().contains("wrong"), "the token must not leak into errors: {err}");
    assert_eq!(discord.rest.calls(fake_discord::ME)[1].authorization.as_deref(), Some("Bot wrong"));
}

both_engines!(a_dropped_socket_resumes_without_losing_or_repeating_a_message, |t: TestStore| async move {
    let discord = FakeDiscord::start(TOKEN).await;
    let channel_id = channel(&t.store, "discord").await;
    let (sink, recorded) = sink(&t.store, channel_id);
    let running = Running::start(adapter(&discord, channel_id, TOKEN), sink.clone());

    let identify = discord.wait_for_op(2, 1).await;
    assert_eq!(identify[0].0, "gateway", "the URL came from GET /gateway/bot");
    assert_eq!(identify[0].1["d"]["intents"], json!(INTENTS));
    assert_eq!(identify[0].1["d"]["token"], json!(TOKEN));
    let first = discord.user_message("500", "42", "first", false);
    // The same message dispatched twice (a replay) is recorded once.
    discord.dispatch("MESSAGE_CREATE", first.clone());
    assert_eq!(wait_for_inbound(&t.store, channel_id, &recorded, 1).await, ["first"]);

    // The socket drops; a message sent meanwhile arrives through the resume, on the resume URL.
    discord.drop_connection();
    discord.user_message("500", "42", "while away", false);
    let resumed = discord.wait_for_op(6, 1).await;
    assert_eq!(resumed[0].0, "resume", "resumed at READY's resume_gateway_url");
    assert_eq!(resumed[0].1["d"]["session_id"], json!("session-1"));
    // At least the first dispatch; the replay of it may still have been in flight when the socket dropped
    // (then the resume replays it and it is recorded once, as checked below).
    assert!(resumed[0].1["d"]["seq"].as_i64().unwrap() >= 1, "{:?}", resumed[0].1);
    assert_eq!(wait_for_inbound(&t.store, channel_id, &recorded, 2).await, ["first", "while away"]);
    assert_eq!(discord.received(2).len(), 1, "no second identify");
    let cursor: serde_json::Value =
        serde_json::from_str(&t.store.channel_cursor(channel_id).await.unwrap().unwrap()).unwrap();
    assert_eq!(cursor["session_id"], json!("session-1"));
    running.stop().await;

    // A new process resumes from the saved cursor: the replay repeats nothing, the next message arrives.
    let running = Running::start(adapter(&discord, channel_id, TOKEN), sink.clone());
    discord.wait_for_op(6, 2).await;
    discord.user_message("500", "42", "after restart", false);
    assert_eq!(wait_for_inbound(&t.store, channel_id, &recorded, 3).await, ["first", "while away", "after restart"]);
    assert_eq!(t.store.inbound_count(channel_id).await.unwrap(), 3);
    assert!(sink.last_alive().is_some());
    running.stop().await;
});

both_engines!(zombie_connections_op7_and_invalid_sessions_recover, |t: TestStore| async move {
    let discord = FakeDiscord::start(TOKEN).await;
    discord.set_heartbeat_interval(Duration::from_millis(100));
    let channel_id = channel(&t.store, "discord").await;
    let (sink, recorded) = sink(&t.store, channel_id);
    let running = Running::start(adapter(&discord, channel_id, TOKEN), sink);
    discord.wait_for_op(2, 1).await;
    discord.wait_for_op(1, 2).await;

    // Heartbeats stop being acknowledged: the client drops the zombie and resumes.
    discord.ack_heartbeats(false);
    discord.wait_for_op(6, 1).await;
    discord.ack_heartbeats(true);
    discord.user_message("500", "42", "after the zombie", false);
    assert_eq!(wait_for_inbound(&t.store, channel_id, &recorded, 1).await, ["after the zombie"]);

    // Op 7: reconnect and resume.
    discord.request_reconnect();
    discord.wait_for_op(6, 2).await;
    discord.user_message("500", "42", "after op 7", false);
    assert_eq!(wait_for_inbound(&t.store, channel_id, &recorded, 2).await, ["after the zombie", "after op 7"]);

    // Op 9 not resumable: a new session is identified.
    discord.invalidate_session(false);
    discord.wait_for_op(2, 2).await;
    discord.user_message("500", "42", "new session", false);
    assert_eq!(wait_for_inbound(&t.store, channel_id, &recorded, 3).await.len(), 3);
    running.stop().await;
});

both_engines!(a_rejected_token_on_the_gateway_ends_the_loop_as_unauthorized, |t: TestStore| async move {
    let discord = FakeDiscord::start(TOKEN).await;
    let channel_id = channel(&t.store, "discord").await;
    let (sink, _) = sink(&t.store, channel_id);
    let running = Running::start(adapter(&discord, channel_id, TOKEN), sink);
    discord.wait_for_op(2, 1).await;
    discord.close(4004);
    let err = running.ended().await.unwrap_err();
    assert!(matches!(err, AdapterError::Unauthorized(_)), "{err:?}");
});

async fn queue(store: &Store, channel_id: Uuid, key: &str, text: &str) -> Uuid {
    let chat = ChatRef { chat_id: "500".into(), thread_id: None, kind: ChatKind::Group };
    queue_reply(store, channel_id, chat, "1234", key, text).await
}

both_engines!(long_replies_split_at_2000_and_429_retry_after_is_honoured, |t: TestStore| async move {
    let discord = FakeDiscord::start(TOKEN).await;
    let channel_id = channel(&t.store, "discord").await;
    let adapter = adapter(&discord, channel_id, TOKEN);
    let holder = cortex_core::new_id();
    let long = (0..3).map(|n| format!("Paragraph {n}: {}", "word ".repeat(300))).collect::<Vec<_>>().join("\n\n");
    let id = queue(&t.store, channel_id, "long", &long).await;
    deliver_due(&t.store, channel_id, adapter.as_ref(), holder).await.unwrap();
    let item = t.store.outbox_item(id).await.unwrap().unwrap();
    assert_eq!(item.status, "delivered", "{:?}", item.last_error);
    let sent = discord.rest.delivered(CREATE_MESSAGE);
    assert_eq!(sent.len(), 3, "three parts");
    for call in &sent {
        assert!(call.body["content"].as_str().unwrap().chars().count() <= 2000);
        assert_eq!(call.body["flags"], json!(4), "SUPPRESS_EMBEDS");
        assert_eq!(call.body["allowed_mentions"], json!({"parse": []}));
        assert_eq!(call.path, "/channels/500/messages");
    }
    assert_eq!(sent[0].body["message_reference"]["message_id"], json!("1234"));
    assert!(sent[1].body.get("message_reference").is_none());
    let ids: Vec<&str> = sent.iter().map(|call| call.response["id"].as_str().unwrap()).collect();
    assert_eq!(item.platform_message_id.as_deref(), Some(ids.join(",").as_str()));

    let id = queue(&t.store, channel_id, "limited", "short").await;
    discord.rest.fail_next(CREATE_MESSAGE, fake_discord::rate_limited(29.5));
    deliver_due(&t.store, channel_id, adapter.as_ref(), holder).await.unwrap();
    let item = t.store.outbox_item(id).await.unwrap().unwrap();
    assert_eq!(item.status, "queued");
    assert!(item.last_error.as_deref().unwrap_or_default().starts_with("rate_limited"), "{item:?}");
    assert_eq!(item.next_attempt_at, t.clock.now_plus(30), "Retry-After (30 s) wins over the 1 s backoff");
    t.clock.advance(chrono::Duration::seconds(29));
    assert_eq!(deliver_due(&t.store, channel_id, adapter.as_ref(), holder).await.unwrap(), 0, "not before it is due");
    t.clock.advance(chrono::Duration::seconds(1));
    deliver_due(&t.store, channel_id, adapter.as_ref(), holder).await.unwrap();
    assert_eq!(t.store.outbox_item(id).await.unwrap().unwrap().status, "delivered");

    let id = queue(&t.store, channel_id, "forbidden", "nope").await;
    discord.rest.fail_next(CREATE_MESSAGE, fake_discord::refused(403, 50007, "Cannot send messages to this user"));
    deliver_due(&t.store, channel_id, adapter.as_ref(), holder).await.unwrap();
    let item = t.store.outbox_item(id).await.unwrap().unwrap();
    assert_eq!(item.status, "failed");
    assert!(item.last_error.unwrap().contains("50007"));
});

both_engines!(a_message_in_gets_the_agents_reply_out_and_a_replay_makes_no_second_job, |t: TestStore| async move {
    let discord = FakeDiscord::start(TOKEN).await;
    let channel_id = channel(&t.store, "discord").await;
    let agent_id = agent(&t.store, "Helper", AccessMode::BoundChats).await;
    let mut tx = t.store.begin().await.unwrap();
    tx.upsert_binding(&NewBinding {
        agent_id,
        channel_type: "discord".into(),
        channel_id: None,
        chat_id: "500".into(),
        respond_to: Some("all".into()),
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (sink, recorded) = sink(&t.store, channel_id);
    let adapter = adapter(&discord, channel_id, TOKEN);
    let running = Running::start(adapter.clone(), sink);
    discord.wait_for_op(2, 1).await;
    let message = discord.user_message("500", "42", "what time is it?", true);
    discord.dispatch("MESSAGE_CREATE", message.clone());
    wait_for_inbound(&t.store, channel_id, &recorded, 1).await;
    // The replay after a resume is the same message again.
    discord.drop_connection();
    discord.wait_for_op(6, 1).await;
    discord.dispatch("MESSAGE_CREATE", message.clone());
    discord.user_message("500", "42", "marker", true);
    wait_for_inbound(&t.store, channel_id, &recorded, 2).await;

    let channel = t.store.channel(channel_id).await.unwrap();
    Router::new(t.store.clone()).route_pending(&channel, adapter.as_ref()).await.unwrap();
    Router::new(t.store.clone()).route_pending(&channel, adapter.as_ref()).await.unwrap();
    assert_eq!(t.store.count_active_jobs(agent_id).await.unwrap(), 2, "one job per message, not per dispatch");

    let worker = cortex_core::new_id();
    t.store.register_worker(worker, "test").await.unwrap();
    let job = t.store.claim_next(worker, false).await.unwrap().unwrap();
    assert_eq!(job.payload["reply"]["target"]["chat"]["chat_id"], json!("500"));
    let mut tx = t.store.begin().await.unwrap();
    tx.end_attempt(job.id, worker, &AttemptEnd::Completed { result: json!({"response": "It is **noon**."}) })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    deliver_due(&t.store, channel_id, adapter.as_ref(), cortex_core::new_id()).await.unwrap();
    let sent = discord.rest.delivered(CREATE_MESSAGE);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body["content"], json!("It is **noon**."), "Discord renders Markdown itself");
    assert_eq!(sent[0].body["message_reference"]["message_id"], message["id"], "answers the message");
    running.stop().await;
});
