//! The WhatsApp adapter against the fake Graph API: identity, replies with previews off and long text
//! split, the 24-hour window refusal surfaced as a failed delivery with the platform's reason, 429
//! `Retry-After`, and a message in → the agent's reply out, recorded once however often Meta retries.

use cortex_channels::adapter::{AdapterError, ChannelAdapter, InboundSink, WebhookRequest};
use cortex_channels::delivery::deliver_due;
use cortex_channels::router::{Router, reply_target};
use cortex_channels::types::{ChatKind, ChatRef};
use cortex_channels::whatsapp::{WhatsAppAdapter, WhatsAppConfig};
use cortex_core::agent::AccessMode;
use cortex_store::channel_access::NewBinding;
use cortex_store::jobs::AttemptEnd;
use cortex_store::outbox::NewOutbox;
use cortex_testkit::fake_whatsapp::{self, FakeWhatsApp, SEND_MESSAGE, hub_signature, whatsapp_text};
use cortex_testkit::{TestStore, both_engines};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::json;
use uuid::Uuid;

use crate::support::{agent, channel, init, queue_reply, sink};

fn adapter(whatsapp: &FakeWhatsApp, channel_id: Uuid, token: &str) -> WhatsAppAdapter {
    init();
    WhatsAppAdapter::new(
        reqwest::Client::new(),
        WhatsAppConfig {
            channel_id,
            api_base: whatsapp.api_base().to_owned(),
            phone_number_id: "1555".into(),
            access_token: token.into(),
            app_secret: "app-secret".into(),
            verify_token: "verify".into(),
        },
    )
}

#[tokio::test]
async fn verify_names_the_number_and_refuses_a_bad_token() {
    let whatsapp = FakeWhatsApp::start("wa-token", "1555").await;
    let me = adapter(&whatsapp, Uuid::nil(), "wa-token").verify().await.unwrap();
    assert_eq!((me.id.as_str(), me.name.as_str()), ("1555", "Cortex Test"));
    let err = adapter(&whatsapp, Uuid::nil(), "wa-wrong").verify().await.unwrap_err();
    assert!(matches!(err, AdapterError::Unauthorized(_)), "{err:?}");
    assert!(!err.to_string().contains("wa-wrong"));
}

async fn queue(store: &cortex_store::Store, channel_id: Uuid, key: &str, text: &str) -> Uuid {
    let chat = ChatRef { chat_id: "491701234567".into(), thread_id: None, kind: ChatKind::Direct };
    queue_reply(store, channel_id, chat, "wamid.IN1", key, text).await
}

both_engines!(the_24_hour_window_fails_visibly_with_the_platforms_reason_and_429_waits, |t: TestStore| async move {
    let whatsapp = FakeWhatsApp::start("wa-token", "1555").await;
    let channel_id = channel(&t.store, "whatsapp").await;
    let adapter = adapter(&whatsapp, channel_id, "wa-token");
    let holder = cortex_core::new_id();

    let long = (0..2).map(|n| format!("Paragraph {n}: {}", "word ".repeat(700))).collect::<Vec<_>>().join("\n\n");
    let id = queue(&t.store, channel_id, "long", &long).await;
    deliver_due(&t.store, channel_id, &adapter, holder).await.unwrap();
    let item = t.store.outbox_item(id).await.unwrap().unwrap();
    assert_eq!(item.status, "delivered", "{:?}", item.last_error);
    let sent = whatsapp.api.delivered(SEND_MESSAGE);
    assert_eq!(sent.len(), 2, "two parts");
    assert!(sent.iter().all(|call| call.body["text"]["body"].as_str().unwrap().chars().count() <= 4096));
    assert_eq!(sent[0].body["text"]["preview_url"], json!(false));
    assert_eq!(sent[0].body["context"]["message_id"], json!("wamid.IN1"));
    let ids: Vec<&str> = sent.iter().map(|call| call.response["messages"][0]["id"].as_str().unwrap()).collect();
    assert_eq!(item.platform_message_id.as_deref(), Some(ids.join(",").as_str()));

    let id = queue(&t.store, channel_id, "late", "are you there?").await;
    whatsapp.api.fail_next(SEND_MESSAGE, fake_whatsapp::outside_window());
    deliver_due(&t.store, channel_id, &adapter, holder).await.unwrap();
    let item = t.store.outbox_item(id).await.unwrap().unwrap();
    assert_eq!((item.status.as_str(), item.attempts), ("failed", 1), "no retry can fix it");
    let error = item.last_error.unwrap();
    assert!(error.starts_with("outside_window"), "{error}");
    assert!(error.contains("more than 24 hours have passed"), "the platform's reason is kept: {error}");

    let id = queue(&t.store, channel_id, "limited", "hi").await;
    whatsapp.api.fail_next(SEND_MESSAGE, fake_whatsapp::rate_limited(15));
    deliver_due(&t.store, channel_id, &adapter, holder).await.unwrap();
    let item = t.store.outbox_item(id).await.unwrap().unwrap();
    assert_eq!(item.status, "queued");
    assert_eq!(item.next_attempt_at, t.clock.now_plus(15));
    t.clock.advance(chrono::Duration::seconds(15));
    deliver_due(&t.store, channel_id, &adapter, holder).await.unwrap();
    assert_eq!(t.store.outbox_item(id).await.unwrap().unwrap().status, "delivered");
});

both_engines!(buttons_go_under_a_last_part_that_fits_an_interactive_body, |t: TestStore| async move {
    let whatsapp = FakeWhatsApp::start("wa-token", "1555").await;
    let channel_id = channel(&t.store, "whatsapp").await;
    let adapter = adapter(&whatsapp, channel_id, "wa-token");
    let chat = ChatRef { chat_id: "491701234567".into(), thread_id: None, kind: ChatKind::Direct };
    let mut tx = t.store.begin().await.unwrap();
    let (id, _) = tx
        .enqueue_outbox(&NewOutbox {
            channel_id: Some(channel_id),
            target: reply_target(&chat, None),
            payload: json!({"kind": "notice", "text": "word ".repeat(400),
                            "buttons": [{"label": "Approve", "data": "apr:a:1"}]}),
            idempotency_key: "buttons".into(),
            job_id: None,
        })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    deliver_due(&t.store, channel_id, &adapter, cortex_core::new_id()).await.unwrap();
    assert_eq!(t.store.outbox_item(id).await.unwrap().unwrap().status, "delivered");
    let sent = whatsapp.api.delivered(SEND_MESSAGE);
    assert_eq!(sent.len(), 2, "2000 characters do not fit one interactive body of 1024: {sent:?}");
    assert_eq!(sent[0].body["type"], json!("text"));
    let last = sent[1].body["interactive"]["body"]["text"].as_str().unwrap();
    assert!(last.chars().count() <= 1024, "{}", last.chars().count());
    assert_eq!(sent[1].body["interactive"]["action"]["buttons"][0]["reply"]["id"], json!("apr:a:1"));
});

both_engines!(a_message_in_gets_the_agents_reply_out_once_however_often_meta_retries, |t: TestStore| async move {
    let whatsapp = FakeWhatsApp::start("wa-token", "1555").await;
    let channel_id = channel(&t.store, "whatsapp").await;
    let agent_id = agent(&t.store, "Helper", AccessMode::BoundChats).await;
    let mut tx = t.store.begin().await.unwrap();
    tx.upsert_binding(&NewBinding {
        agent_id,
        channel_type: "whatsapp".into(),
        channel_id: None,
        chat_id: "491701234567".into(),
        respond_to: None,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let adapter = adapter(&whatsapp, channel_id, "wa-token");
    let (sink, _) = sink(&t.store, channel_id);
    let body = whatsapp_text("1555", "491701234567", "wamid.IN1", "what's new?");
    let mut headers = HeaderMap::new();
    headers.insert("x-hub-signature-256", HeaderValue::from_str(&hub_signature("app-secret", &body)).unwrap());
    for _ in 0..2 {
        let batch = adapter.webhook(WebhookRequest { headers: &headers, body: &body }).unwrap().unwrap();
        for event in batch.events {
            sink.deliver(event).await.unwrap();
        }
    }
    let channel = t.store.channel(channel_id).await.unwrap();
    Router::new(t.store.clone()).route_pending(&channel, &adapter).await.unwrap();
    assert_eq!(t.store.count_active_jobs(agent_id).await.unwrap(), 1, "one job for one message");

    let worker = cortex_core::new_id();
    t.store.register_worker(worker, "test").await.unwrap();
    let job = t.store.claim_next(worker, false).await.unwrap().unwrap();
    let mut tx = t.store.begin().await.unwrap();
    tx.end_attempt(job.id, worker, &AttemptEnd::Completed { result: json!({"response": "All quiet."}) }).await.unwrap();
    tx.commit().await.unwrap();
    deliver_due(&t.store, channel_id, &adapter, cortex_core::new_id()).await.unwrap();
    let sent = whatsapp.api.delivered(SEND_MESSAGE);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body["to"], json!("491701234567"));
    assert_eq!(sent[0].body["text"]["body"], json!("All quiet."));
});
