//! Shared setup: a channel row to record into, a sink over it, and condition waits with generous
//! timeouts that report what they saw.

use std::sync::Arc;
use std::time::Duration;

use cortex_channels::sink::StoreSink;
use cortex_store::Store;
use cortex_store::channels::ChannelWrite;
use serde_json::json;
use tokio::sync::Notify;
use uuid::Uuid;

pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Creates a channel row of `platform` and returns its id.
pub async fn channel(store: &Store, platform: &str) -> Uuid {
    let id = cortex_core::new_id();
    let mut tx = store.begin().await.unwrap();
    tx.insert_channel(&ChannelWrite {
        id,
        channel_type: platform.into(),
        name: format!("{platform}-{id}"),
        config: json!({}),
        secrets_enc: None,
        secret_keys: vec![],
        source: "api".into(),
        enabled: true,
        inbound_policy: "open".into(),
        default_agent_id: None,
        bot_identity: None,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    id
}

/// A sink recording into `channel_id`, and the notifier it wakes per new event.
pub fn sink(store: &Store, channel_id: Uuid) -> (Arc<StoreSink>, Arc<Notify>) {
    let recorded = Arc::new(Notify::new());
    (Arc::new(StoreSink::new(store.clone(), channel_id, recorded.clone())), recorded)
}

/// Waits until the channel has recorded `count` inbound rows awaiting routing; returns their texts.
pub async fn wait_for_inbound(store: &Store, channel_id: Uuid, recorded: &Notify, count: usize) -> Vec<String> {
    let texts = || async {
        store
            .unrouted_inbound(channel_id, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|row| row.event["text"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let notified = recorded.notified();
            let seen = texts().await;
            if seen.len() >= count {
                return seen;
            }
            notified.await;
        }
    })
    .await;
    match waited {
        Ok(seen) => seen,
        Err(_) => panic!("timed out waiting for {count} inbound rows; have {:?}", texts().await),
    }
}
