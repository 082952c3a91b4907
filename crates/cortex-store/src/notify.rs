//! Cross-process wake-ups. SQLite mode broadcasts in-process after commit; PostgreSQL mode sends
//! `NOTIFY cortex` inside the transaction (delivered at commit) and one listener per process forwards
//! it to the same in-process channel. The committing process also broadcasts its own notifications
//! in-process right after the commit (an idle local worker or a waiting chat request wakes without the
//! round trip through the server), so each payload carries its notifier's origin and the listener drops
//! the ones its own notifier sent. Notifications are hints: receivers always re-read the database, so a
//! lost or duplicated notification only costs latency.

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

/// The PostgreSQL channel every process listens on.
pub const PG_CHANNEL: &str = "cortex";

/// Something changed that a waiting task may care about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Notification {
    /// A job may have become claimable.
    JobsReady,
    /// Events up to `seq` were appended for this agent (and job).
    Event { seq: i64, agent_id: Uuid, job_id: Option<Uuid> },
    /// An operator asked to cancel a running job.
    CancelRequested { job_id: Uuid },
    /// Steering was queued for a running job.
    Steered { job_id: Uuid },
    /// A channel's outbox has a new message to deliver.
    Outbox { channel_id: Uuid },
    /// A chat job started from a message of `channel_id` began (`running`) or stopped running: the
    /// channel's typing indicator for `chat` (the job's reply chat, as stored) starts or stops (SPEC §8.1).
    ChatJob { channel_id: Uuid, job_id: Uuid, running: bool, chat: serde_json::Value },
    /// A channel was created, changed or deleted: supervisors reload it (hot reload, SPEC §8.9).
    ChannelChanged { channel_id: Uuid },
    /// A credential's value or status was written: every process rebuilds its secret set before its next
    /// use (the runtime reads no credential row while nothing changed).
    Credentials,
    /// A transaction that wrote the agent's memory records committed with change sequence `seq` (see
    /// [`crate::memory`]); also published in-process on PostgreSQL, so the writer's own indexes see it at
    /// once.
    Memory { agent_id: Uuid, seq: i64 },
    /// Notifications may have been missed (listener reconnected, receiver lagged): re-read everything.
    Resync,
}

/// A notification as sent with `NOTIFY`: the sending notifier's origin beside the notification's own
/// fields. A payload without `o` (an older process) is never this process's own.
/// Sent as `Envelope<&Notification>`, read as `Envelope<Notification>`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Envelope<N> {
    #[serde(default)]
    pub(crate) o: u64,
    #[serde(flatten)]
    pub(crate) notification: N,
}

/// The in-process fan-out every subscriber reads from.
#[derive(Debug, Clone)]
pub struct Notifier {
    sender: broadcast::Sender<Notification>,
    /// Random, never 0: tells this notifier's `NOTIFY` payloads from other processes'.
    origin: u64,
}

impl Notifier {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(4096);
        Self { sender, origin: rand::random::<u64>().max(1) }
    }

    /// The origin stamped on this notifier's `NOTIFY` payloads.
    pub(crate) fn origin(&self) -> u64 {
        self.origin
    }

    pub fn publish(&self, notification: Notification) {
        // No receiver is fine: nobody is waiting.
        let _ = self.sender.send(notification);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.sender.subscribe()
    }
}

impl Default for Notifier {
    fn default() -> Self {
        Self::new()
    }
}
