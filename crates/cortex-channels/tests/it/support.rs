//! Shared setup: a channel row to record into, a sink over it, an adapter's receive loop on its own
//! task, a reply queued in the outbox, and condition waits with generous timeouts that report what
//! they saw.

use std::sync::Arc;
use std::time::Duration;

use cortex_channels::adapter::{AdapterError, ChannelAdapter};
use cortex_channels::router::reply_target;
use cortex_channels::sink::StoreSink;
use cortex_channels::types::ChatRef;
use cortex_store::Store;
use cortex_store::channels::ChannelWrite;
use cortex_store::outbox::NewOutbox;
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
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

/// An active agent with the given access mode.
pub async fn agent(store: &Store, name: &str, access_mode: cortex_core::agent::AccessMode) -> Uuid {
    let mut definition = cortex_testkit::agent_definition(name);
    definition.access_mode = access_mode;
    let mut tx = store.begin().await.unwrap();
    let id = tx.insert_agent(&definition).await.unwrap();
    tx.commit().await.unwrap();
    id
}

/// An adapter's receive loop on its own task.
pub struct Running {
    cancel: CancellationToken,
    task: JoinHandle<Result<(), AdapterError>>,
}

impl Running {
    pub fn start(adapter: Arc<dyn ChannelAdapter>, sink: Arc<StoreSink>) -> Running {
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let cancel = cancel.clone();
            async move { adapter.run(sink, cancel).await }
        });
        Running { cancel, task }
    }

    /// Cancels the loop; it must end cleanly.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap().unwrap();
    }

    /// Waits for the loop to end by itself (a failure the supervisor would restart).
    pub async fn ended(self) -> Result<(), AdapterError> {
        self.task.await.unwrap()
    }
}

/// Queues a reply `text` to `chat` (answering `reply_to`) in the channel's outbox; returns its id.
pub async fn queue_reply(
    store: &Store,
    channel_id: Uuid,
    chat: ChatRef,
    reply_to: &str,
    key: &str,
    text: &str,
) -> Uuid {
    let mut tx = store.begin().await.unwrap();
    let (id, _) = tx
        .enqueue_outbox(&NewOutbox {
            channel_id: Some(channel_id),
            target: reply_target(&chat, Some(reply_to)),
            payload: json!({"kind": "reply", "text": text}),
            idempotency_key: key.into(),
            job_id: None,
        })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}
