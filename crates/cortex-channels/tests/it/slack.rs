//! The Slack adapter against the fake Web API and Socket Mode: identity, envelopes recorded then
//! acknowledged, `disconnect` and dropped sockets recovered with redelivered envelopes recorded once, a
//! message in → the agent's reply out in the thread, and sending with split, `unfurl_links: false` and
//! 429 `Retry-After`.

use std::sync::Arc;

use cortex_channels::adapter::{AdapterError, ChannelAdapter};
use cortex_channels::delivery::deliver_due;
use cortex_channels::router::Router;
use cortex_channels::slack::{SlackAdapter, SlackConfig};
use cortex_channels::types::{ChatKind, ChatRef};
use cortex_core::agent::AccessMode;
use cortex_store::channel_access::NewBinding;
use cortex_store::jobs::AttemptEnd;
use cortex_testkit::fake_slack::{self, BOT_USER_ID, CONNECTIONS_OPEN, FakeSlack, POST_MESSAGE};
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;
use uuid::Uuid;

use crate::support::{Running, agent, channel, init, queue_reply, sink, wait_for_inbound};

const BOT: &str = "xoxb-test";
const APP: &str = "xapp-test";

fn adapter(slack: &FakeSlack, channel_id: Uuid, bot_token: &str) -> Arc<SlackAdapter> {
    init();
    Arc::new(SlackAdapter::new(
        reqwest::Client::new(),
        SlackConfig {
            channel_id,
            api_base: slack.api_base().to_owned(),
            bot_token: bot_token.into(),
            app_token: Some(APP.into()),
            signing_secret: None,
        },
    ))
}

#[tokio::test]
async fn verify_returns_the_bot_identity_and_refuses_a_bad_token() {
    let slack = FakeSlack::start(BOT, APP).await;
    let me = adapter(&slack, Uuid::nil(), BOT).verify().await.unwrap();
    assert_eq!(me.id, BOT_USER_ID);
    let err = adapter(&slack, Uuid::nil(), "xoxb-wrong").verify().await.unwrap_err();
    assert!(matches!(err, AdapterError::Unauthorized(_)), "{err:?}");
    assert!(!err.to_string().contains("xoxb-wrong"), "{err}");
}

both_engines!(envelopes_are_acked_once_recorded_and_survive_disconnects_and_drops, |t: TestStore| async move {
    let slack = FakeSlack::start(BOT, APP).await;
    let channel_id = channel(&t.store, "slack").await;
    let (sink, recorded) = sink(&t.store, channel_id);
    let running = Running::start(adapter(&slack, channel_id, BOT), sink.clone());
    slack.wait_for_connections(1).await;
    assert_eq!(slack.api.calls(CONNECTIONS_OPEN)[0].authorization.as_deref(), Some("Bearer xapp-test"));

    let event = slack.user_message("D1", "U1", "first", None);
    let envelope = slack.push_event(event.clone());
    assert_eq!(wait_for_inbound(&t.store, channel_id, &recorded, 1).await, ["first"]);
    slack.wait_for_ack(&envelope).await;

    // Slack refreshes the connection: a new one is opened; an event sent meanwhile is delivered on it.
    slack.disconnect();
    slack.wait_for_connections(2).await;
    assert_eq!(slack.api.calls(CONNECTIONS_OPEN).len(), 2);
    slack.user_message("D1", "U1", "second", None);
    assert_eq!(wait_for_inbound(&t.store, channel_id, &recorded, 2).await, ["first", "second"]);

    // The socket drops; what was sent before the reconnect is redelivered and recorded once.
    slack.drop_connection();
    let retried = slack.push_event(event);
    slack.user_message("D1", "U1", "third", None);
    slack.wait_for_connections(3).await;
    assert_eq!(wait_for_inbound(&t.store, channel_id, &recorded, 3).await, ["first", "second", "third"]);
    slack.wait_for_ack(&retried).await;
    assert_eq!(t.store.inbound_count(channel_id).await.unwrap(), 3, "the redelivered event is recorded once");
    assert!(sink.last_alive().is_some());
    running.stop().await;
});

async fn queue(store: &cortex_store::Store, channel_id: Uuid, key: &str, text: &str) -> Uuid {
    let chat = ChatRef { chat_id: "C1".into(), thread_id: Some("1790000000.000001".into()), kind: ChatKind::Group };
    queue_reply(store, channel_id, chat, "C1:1790000000.000001", key, text).await
}

both_engines!(long_replies_split_in_the_thread_and_429_retry_after_is_honoured, |t: TestStore| async move {
    let slack = FakeSlack::start(BOT, APP).await;
    let channel_id = channel(&t.store, "slack").await;
    let adapter = adapter(&slack, channel_id, BOT);
    let holder = cortex_core::new_id();
    let long = (0..2).map(|n| format!("Paragraph {n}: {}", "word ".repeat(700))).collect::<Vec<_>>().join("\n\n");
    let id = queue(&t.store, channel_id, "long", &long).await;
    deliver_due(&t.store, channel_id, adapter.as_ref(), holder).await.unwrap();
    let item = t.store.outbox_item(id).await.unwrap().unwrap();
    assert_eq!(item.status, "delivered", "{:?}", item.last_error);
    let sent = slack.api.delivered(POST_MESSAGE);
    assert_eq!(sent.len(), 2, "two parts");
    for call in &sent {
        assert!(call.body["text"].as_str().unwrap().chars().count() <= 4000);
        assert_eq!((call.body["unfurl_links"].clone(), call.body["channel"].clone()), (json!(false), json!("C1")));
        assert_eq!(call.body["thread_ts"], json!("1790000000.000001"), "replies stay in the thread");
        assert_eq!(call.authorization.as_deref(), Some("Bearer xoxb-test"));
    }
    let ids: Vec<&str> = sent.iter().map(|call| call.response["ts"].as_str().unwrap()).collect();
    assert_eq!(item.platform_message_id.as_deref(), Some(ids.join(",").as_str()));

    let id = queue(&t.store, channel_id, "limited", "short").await;
    slack.api.fail_next(POST_MESSAGE, fake_slack::rate_limited(20));
    deliver_due(&t.store, channel_id, adapter.as_ref(), holder).await.unwrap();
    let item = t.store.outbox_item(id).await.unwrap().unwrap();
    assert_eq!(item.status, "queued");
    assert_eq!(item.next_attempt_at, t.clock.now_plus(20), "Retry-After wins over the 1 s backoff");
    t.clock.advance(chrono::Duration::seconds(19));
    assert_eq!(deliver_due(&t.store, channel_id, adapter.as_ref(), holder).await.unwrap(), 0, "not before it is due");
    t.clock.advance(chrono::Duration::seconds(1));
    deliver_due(&t.store, channel_id, adapter.as_ref(), holder).await.unwrap();
    assert_eq!(t.store.outbox_item(id).await.unwrap().unwrap().status, "delivered");

    let id = queue(&t.store, channel_id, "gone", "nope").await;
    slack.api.fail_next(POST_MESSAGE, fake_slack::error("channel_not_found"));
    deliver_due(&t.store, channel_id, adapter.as_ref(), holder).await.unwrap();
    let item = t.store.outbox_item(id).await.unwrap().unwrap();
    assert_eq!(item.status, "failed");
    assert!(item.last_error.unwrap().contains("channel_not_found"));
});

both_engines!(a_mention_in_a_channel_gets_the_agents_reply_in_its_thread_once, |t: TestStore| async move {
    let slack = FakeSlack::start(BOT, APP).await;
    let channel_id = channel(&t.store, "slack").await;
    let agent_id = agent(&t.store, "Helper", AccessMode::BoundChats).await;
    let mut tx = t.store.begin().await.unwrap();
    tx.upsert_binding(&NewBinding {
        agent_id,
        channel_type: "slack".into(),
        channel_id: None,
        chat_id: "C1".into(),
        respond_to: None,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (sink, recorded) = sink(&t.store, channel_id);
    let adapter = adapter(&slack, channel_id, BOT);
    let running = Running::start(adapter.clone(), sink);
    slack.wait_for_connections(1).await;
    // Slack sends both `message` and `app_mention` for a mention: one message, one job.
    let message = slack.user_message("C1", "U1", &format!("<@{BOT_USER_ID}> summarise"), None);
    let mut mention = message.clone();
    mention["type"] = json!("app_mention");
    slack.push_event(mention);
    wait_for_inbound(&t.store, channel_id, &recorded, 1).await;
    slack.user_message("C1", "U2", "unrelated chatter", None);
    wait_for_inbound(&t.store, channel_id, &recorded, 2).await;

    let channel = t.store.channel(channel_id).await.unwrap();
    Router::new(t.store.clone()).route_pending(&channel, adapter.as_ref()).await.unwrap();
    assert_eq!(t.store.count_active_jobs(agent_id).await.unwrap(), 1, "one job; chatter without a mention is ignored");
    let worker = cortex_core::new_id();
    t.store.register_worker(worker, "test").await.unwrap();
    let job = t.store.claim_next(worker, false).await.unwrap().unwrap();
    assert_eq!(job.payload["reply"]["target"]["chat"]["thread_id"], message["ts"]);
    let mut tx = t.store.begin().await.unwrap();
    tx.end_attempt(job.id, worker, &AttemptEnd::Completed { result: json!({"response": "**Summary**: <none>"}) })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    deliver_due(&t.store, channel_id, adapter.as_ref(), cortex_core::new_id()).await.unwrap();
    let sent = slack.api.delivered(POST_MESSAGE);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body["text"], json!("*Summary*: &lt;none&gt;"));
    assert_eq!(sent[0].body["thread_ts"], message["ts"], "answered in the message's thread");
    running.stop().await;
});
