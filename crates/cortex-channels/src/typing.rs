//! The typing indicator while a chat job runs (SPEC §8.1 table): every few seconds (Telegram 4 s,
//! Discord 8 s, by the store's clock) each chat of the channel whose message started a job that is
//! still pending, scheduled or running is shown "typing…". Slack has no typing indicator for bots and
//! WhatsApp none at all, so nothing runs for them.
//!
//! Best effort: the chats come from the store (so a job routed by another process counts too), a
//! failed call is logged and tried again on the next tick, and nothing here is ever retried as a
//! delivery.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cortex_store::{Store, StoreError};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::adapter::ChannelAdapter;
use crate::types::{ChatRef, InboundEvent, Platform};

/// Messages older than this no longer get a typing indicator, whatever their job does.
const LOOKBACK_HOURS: i64 = 2;

/// How often the indicator is renewed on `platform` (it fades after about 5 s on Telegram, 10 s on
/// Discord); `None` where bots have none.
pub fn interval(platform: Platform) -> Option<Duration> {
    match platform {
        Platform::Telegram => Some(Duration::from_secs(4)),
        Platform::Discord => Some(Duration::from_secs(8)),
        Platform::Slack | Platform::WhatsApp => None,
    }
}

/// Shows "typing…" once in every chat of the channel with a job in progress; returns how many chats.
pub async fn tick(store: &Store, channel_id: Uuid, adapter: &dyn ChannelAdapter) -> Result<usize, StoreError> {
    let since = store.clock().now() - chrono::Duration::hours(LOOKBACK_HOURS);
    let mut chats: Vec<ChatRef> = Vec::new();
    let mut seen = BTreeSet::new();
    for event in store.inbound_with_jobs_in_progress(channel_id, since).await? {
        let Ok(event) = serde_json::from_value::<InboundEvent>(event) else { continue };
        let chat = event.chat().clone();
        if seen.insert((chat.chat_id.clone(), chat.thread_id.clone())) {
            chats.push(chat);
        }
    }
    for chat in &chats {
        if let Err(err) = adapter.typing(chat).await {
            tracing::debug!(%channel_id, error = %err, "typing indicator failed");
        }
    }
    Ok(chats.len())
}

/// Renews the indicator until `cancel` fires (returns at once on platforms without one).
pub async fn run(store: Store, channel_id: Uuid, adapter: Arc<dyn ChannelAdapter>, cancel: CancellationToken) {
    let Some(every) = interval(adapter.platform()) else { return };
    let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::seconds(4));
    loop {
        // The next renewal is due `every` after this one started, however long the calls took.
        let next = store.clock().now() + every;
        if let Err(err) = tick(&store, channel_id, adapter.as_ref()).await {
            tracing::debug!(%channel_id, error = %err, "looking up chats with jobs in progress failed");
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = store.clock().sleep_until(next) => {}
        }
    }
}
