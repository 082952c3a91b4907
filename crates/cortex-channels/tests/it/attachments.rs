//! Attachments arrive as references (SPEC §8.1): a Telegram photo and document and a WhatsApp document
//! are normalised to `{kind, name, mime, size, platform_file_ref}` and reach the agent's context as a
//! note naming each one — nothing is downloaded.

use cortex_channels::adapter::{ChannelAdapter, InboundSink, WebhookRequest};
use cortex_channels::router::Router;
use cortex_channels::telegram::{TelegramAdapter, TelegramConfig, TelegramMode};
use cortex_channels::types::Platform;
use cortex_channels::whatsapp::{WhatsAppAdapter, WhatsAppConfig};
use cortex_core::agent::AccessMode;
use cortex_store::Store;
use cortex_store::channel_access::NewBinding;
use cortex_testkit::fake_whatsapp::{hub_signature, whatsapp_webhook};
use cortex_testkit::{TestStore, both_engines};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::json;
use uuid::Uuid;

use crate::support::{agent, channel, init, sink};

/// Records what the webhook carried, routes it to an open agent and returns the user message the
/// agent reads.
async fn user_message_after(
    store: &Store,
    channel_id: Uuid,
    adapter: &dyn ChannelAdapter,
    headers: &HeaderMap,
    body: &[u8],
) -> String {
    let agent_id = agent(store, "Reader", AccessMode::Open).await;
    let mut tx = store.begin().await.unwrap();
    let chat_id = if adapter.platform() == Platform::Telegram { "42" } else { "491701234567" };
    tx.upsert_binding(&NewBinding {
        agent_id,
        channel_type: adapter.platform().as_str().into(),
        channel_id: None,
        chat_id: chat_id.into(),
        respond_to: None,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let batch = adapter.webhook(WebhookRequest { headers, body }).unwrap().unwrap();
    let (sink, _) = sink(store, channel_id);
    for event in batch.events {
        sink.deliver(event).await.unwrap();
    }
    let channel = store.channel(channel_id).await.unwrap();
    assert_eq!(Router::new(store.clone()).route_pending(&channel, adapter).await.unwrap(), 1);
    let session = store.list_sessions(agent_id, None, 10).await.unwrap().items.remove(0);
    let messages = store.list_messages(session.id, 0, 10).await.unwrap();
    assert_eq!(messages.len(), 1, "{messages:?}");
    messages[0].content.clone()
}

both_engines!(telegram_photos_and_documents_reach_the_agent_as_references, |t: TestStore| async move {
    init();
    let channel_id = channel(&t.store, "telegram").await;
    let adapter = TelegramAdapter::new(
        reqwest::Client::new(),
        TelegramConfig {
            channel_id,
            api_base: "http://127.0.0.1:9".into(),
            token: "1:t".into(),
            mode: TelegramMode::Webhook { url: None, secret: None },
        },
    );
    let update = json!({"update_id": 5, "message": {
        "message_id": 9, "date": 1_790_000_000, "chat": {"id": 42, "type": "private"},
        "from": {"id": 42, "is_bot": false, "first_name": "Ada"}, "caption": "what is this?",
        "photo": [{"file_id": "small", "file_size": 100}, {"file_id": "AgADbig", "file_size": 52_000}],
        "document": {"file_id": "BQADdoc", "file_name": "report.pdf", "mime_type": "application/pdf", "file_size": 12_345},
    }});
    let text =
        user_message_after(&t.store, channel_id, &adapter, &HeaderMap::new(), &serde_json::to_vec(&update).unwrap())
            .await;
    assert!(text.starts_with("what is this?\n\n[The user attached 2 file(s), not downloaded:"), "{text}");
    assert!(text.contains("- image, 52000 bytes (ref: AgADbig)"), "{text}");
    assert!(text.contains("- file, \"report.pdf\", application/pdf, 12345 bytes (ref: BQADdoc)"), "{text}");
});

both_engines!(whatsapp_documents_reach_the_agent_as_references, |t: TestStore| async move {
    init();
    let channel_id = channel(&t.store, "whatsapp").await;
    let adapter = WhatsAppAdapter::new(
        reqwest::Client::new(),
        WhatsAppConfig {
            channel_id,
            api_base: "http://127.0.0.1:9".into(),
            phone_number_id: "1555".into(),
            access_token: "wa-token".into(),
            app_secret: "app-secret".into(),
            verify_token: "verify".into(),
        },
    );
    let body = whatsapp_webhook(
        "1555",
        "491701234567",
        "wamid.DOC1",
        json!({"type": "document", "document": {"id": "MEDIA77", "filename": "invoice.pdf", "mime_type": "application/pdf"}}),
    );
    let mut headers = HeaderMap::new();
    headers.insert("x-hub-signature-256", HeaderValue::from_str(&hub_signature("app-secret", &body)).unwrap());
    let text = user_message_after(&t.store, channel_id, &adapter, &headers, &body).await;
    assert_eq!(
        text,
        "[The user attached 1 file(s), not downloaded:\n- file, \"invoice.pdf\", application/pdf (ref: MEDIA77)]"
    );
});
