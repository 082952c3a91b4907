//! The store-backed [`InboundSink`]: events go into the `inbound_message` dedupe log (committed before
//! `deliver` returns), cursors into `channel_cursor`, and liveness into an in-memory clock reading the
//! supervisor watches.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use async_trait::async_trait;
use cortex_store::Store;
use cortex_store::channels::NewInbound;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::adapter::{InboundSink, SinkError};
use crate::types::InboundEvent;

/// Records one channel's inbound events in the store.
pub struct StoreSink {
    store: Store,
    channel_id: Uuid,
    /// Woken when a new (not duplicate) event was recorded, so the router picks it up at once.
    recorded: Arc<Notify>,
    /// Unix ms of the last sign of life from the platform; 0 before the first.
    last_alive_ms: AtomicI64,
    /// Signs of life so far: the supervisor's watchdog sees the platform go quiet by this not moving
    /// (independent of the store's clock, which tests may hold still).
    signs_of_life: AtomicU64,
}

impl StoreSink {
    /// A sink for `channel_id` that wakes `recorded` after each new event.
    pub fn new(store: Store, channel_id: Uuid, recorded: Arc<Notify>) -> Self {
        Self { store, channel_id, recorded, last_alive_ms: AtomicI64::new(0), signs_of_life: AtomicU64::new(0) }
    }

    /// How many signs of life the platform gave so far.
    pub fn signs_of_life(&self) -> u64 {
        self.signs_of_life.load(Ordering::Relaxed)
    }

    /// When the platform was last heard from (by the store's clock), if ever.
    pub fn last_alive(&self) -> Option<cortex_core::Timestamp> {
        match self.last_alive_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => chrono::DateTime::from_timestamp_millis(ms),
        }
    }
}

fn sink_error(err: impl std::fmt::Display) -> SinkError {
    SinkError(err.to_string())
}

#[async_trait]
impl InboundSink for StoreSink {
    async fn deliver(&self, event: InboundEvent) -> Result<(), SinkError> {
        let new = NewInbound {
            channel_id: self.channel_id,
            platform_message_id: event.dedupe_key().to_owned(),
            chat_id: event.chat().chat_id.clone(),
            event: serde_json::to_value(&event).map_err(sink_error)?,
        };
        let (_, created) = self.store.record_inbound(&new).await.map_err(sink_error)?;
        if created {
            self.recorded.notify_one();
        }
        Ok(())
    }

    async fn load_cursor(&self) -> Result<Option<String>, SinkError> {
        self.store.channel_cursor(self.channel_id).await.map_err(sink_error)
    }

    async fn save_cursor(&self, cursor: &str) -> Result<(), SinkError> {
        self.store.save_channel_cursor(self.channel_id, cursor).await.map_err(sink_error)
    }

    fn alive(&self) {
        self.last_alive_ms.store(self.store.clock().now().timestamp_millis(), Ordering::Relaxed);
        self.signs_of_life.fetch_add(1, Ordering::Relaxed);
    }
}
