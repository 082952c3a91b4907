//! The typing indicator while a chat's job runs (SPEC §8.1 table): renewed every 4 s on Telegram and
//! every 8 s on Discord (by the store's clock) in each chat with a running job that a message of the
//! channel started. Slack has no typing indicator for bots and WhatsApp none at all, so nothing runs
//! for them.
//!
//! Event-driven: a chat job that starts or stops running publishes [`Notification::ChatJob`] (the
//! store does it in the transition's transaction, so every process hears it), and this task follows
//! those. A channel with nothing running waits on notifications alone: no query, no timer, no platform
//! call. The store is read only when the task starts (a process taking the channel over finds the jobs
//! already running) and when notifications may have been missed (`Resync`, a lagged receiver).
//!
//! One process per channel sends it ([`Owner`]): for channels received over a connection, the process
//! holding the receive lease (the task lives inside that lease); for webhook channels, whichever
//! process holds the lease `typing:<channel id>`, which is only taken while a job of the channel runs.
//! Best effort: a failed call is logged and tried again at the next renewal, never retried as a delivery.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use cortex_core::Timestamp;
use cortex_store::{Notification, Store};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::adapter::ChannelAdapter;
use crate::types::{ChatRef, InboundEvent, Platform};

/// Jobs started by messages older than this are not looked up when the task starts.
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

/// Which process of several sends a channel's typing indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The task runs only while this process holds the channel's receive lease (its caller cancels it
    /// when the lease goes), so it sends without asking.
    ReceiveLease,
    /// Every process runs the task; a renewal is sent only by the holder of the lease
    /// `typing:<channel id>`, taken (as this id) when a renewal is due.
    TypingLease(Uuid),
}

/// Renews the indicator for the channel's running chat jobs until `cancel` fires (returns at once on
/// platforms without one).
pub async fn run(
    store: Store,
    channel_id: Uuid,
    adapter: Arc<dyn ChannelAdapter>,
    owner: Owner,
    cancel: CancellationToken,
) {
    let Some(every) = interval(adapter.platform()) else { return };
    let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::seconds(4));
    // Subscribe before reading, so a job starting in between is not missed.
    let mut notifications = store.subscribe();
    let mut running = load(&store, channel_id).await;
    // When the next renewal is due; `None` while nothing runs (then no timer is armed at all).
    let mut due: Option<Timestamp> = None;
    loop {
        let now = store.clock().now();
        if running.is_empty() {
            due = None;
        } else if due.is_none_or(|at| at <= now) {
            renew(&store, channel_id, adapter.as_ref(), owner, every, &running).await;
            due = Some(now + every);
        }
        let deadline = due.unwrap_or(now);
        tokio::select! {
            () = cancel.cancelled() => return,
            () = store.clock().sleep_until(deadline), if due.is_some() => {}
            received = notifications.recv() => match received {
                Ok(Notification::ChatJob { channel_id: id, job_id, running: started, chat }) if id == channel_id => {
                    if !started {
                        running.remove(&job_id);
                    } else if let Ok(chat) = serde_json::from_value::<ChatRef>(chat) {
                        // A new job shows the indicator at once.
                        if running.insert(job_id, chat).is_none() {
                            due = None;
                        }
                    }
                }
                Ok(Notification::Resync) | Err(RecvError::Lagged(_)) => running = load(&store, channel_id).await,
                Ok(_) => {}
                Err(RecvError::Closed) => {
                    cancel.cancelled().await;
                    return;
                }
            },
        }
    }
}

/// The channel's running chat jobs and their chats, as the store has them now.
async fn load(store: &Store, channel_id: Uuid) -> BTreeMap<Uuid, ChatRef> {
    let since = store.clock().now() - chrono::Duration::hours(LOOKBACK_HOURS);
    match store.running_chat_jobs(channel_id, since).await {
        Ok(rows) => rows
            .into_iter()
            .filter_map(|(job_id, event)| {
                let event = serde_json::from_value::<InboundEvent>(event).ok()?;
                Some((job_id, event.chat().clone()))
            })
            .collect(),
        Err(err) => {
            tracing::debug!(%channel_id, error = %err, "looking up running chat jobs failed");
            BTreeMap::new()
        }
    }
}

/// Shows "typing…" once in every chat with a running job, when this process is the one to.
async fn renew(
    store: &Store,
    channel_id: Uuid,
    adapter: &dyn ChannelAdapter,
    owner: Owner,
    every: chrono::Duration,
    running: &BTreeMap<Uuid, ChatRef>,
) {
    if let Owner::TypingLease(holder) = owner {
        match store.acquire_lease(&format!("typing:{channel_id}"), holder, every * 2).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(err) => {
                tracing::debug!(%channel_id, error = %err, "taking the typing lease failed");
                return;
            }
        }
    }
    let mut seen = BTreeSet::new();
    for chat in running.values() {
        if seen.insert((&chat.chat_id, &chat.thread_id))
            && let Err(err) = adapter.typing(chat).await
        {
            tracing::debug!(%channel_id, error = %err, "typing indicator failed");
        }
    }
}
