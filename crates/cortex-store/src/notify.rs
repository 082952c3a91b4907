//! Cross-process wake-ups. SQLite mode broadcasts in-process after commit; PostgreSQL mode sends
//! `NOTIFY cortex` inside the transaction (delivered at commit) and one listener per process forwards
//! it to the same in-process channel. Notifications are hints: receivers always re-read the database,
//! so a lost or duplicated notification only costs latency.
//!
//! On PostgreSQL a transaction's notifications travel packed ([`pack`]): one `NOTIFY` payload holding a
//! JSON array of as many as fit PostgreSQL's payload limit, not one `NOTIFY` per notification (a batch
//! of 16 job completions announces 16 event streams). The listener ([`unpack`]) also reads a single
//! notification object, the form of earlier versions.

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

/// The in-process fan-out every subscriber reads from.
#[derive(Debug, Clone)]
pub struct Notifier {
    sender: broadcast::Sender<Notification>,
}

impl Notifier {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(4096);
        Self { sender }
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

/// Bytes a packed payload may take: PostgreSQL refuses `NOTIFY` payloads of 8,000 bytes or more.
const MAX_PAYLOAD: usize = 7_900;

/// The `NOTIFY` payloads announcing `notifications`, in order: JSON arrays of consecutive notifications,
/// each array under PostgreSQL's payload limit (a notification too large for any array goes alone).
pub(crate) fn pack(notifications: &[Notification]) -> serde_json::Result<Vec<String>> {
    let mut payloads = Vec::new();
    let mut current = String::new();
    for notification in notifications {
        let one = serde_json::to_string(notification)?;
        if !current.is_empty() && current.len() + 1 + one.len() + 1 > MAX_PAYLOAD {
            current.push(']');
            payloads.push(std::mem::take(&mut current));
        }
        current.push(if current.is_empty() { '[' } else { ',' });
        current.push_str(&one);
    }
    if !current.is_empty() {
        current.push(']');
        payloads.push(current);
    }
    Ok(payloads)
}

/// What one `NOTIFY` payload carried: a packed array, or a single notification.
#[derive(Deserialize)]
#[serde(untagged)]
enum Payload {
    Packed(Vec<Notification>),
    Single(Notification),
}

/// The notifications of one `NOTIFY` payload (see [`pack`]).
pub(crate) fn unpack(payload: &str) -> serde_json::Result<Vec<Notification>> {
    Ok(match serde_json::from_str(payload)? {
        Payload::Packed(notifications) => notifications,
        Payload::Single(notification) => vec![notification],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_notifications_arrive_in_order_within_the_payload_limit() {
        let agent_id = Uuid::nil();
        let notifications: Vec<Notification> = (0..200)
            .map(|seq| Notification::Event { seq, agent_id, job_id: Some(Uuid::from_u128(seq as u128)) })
            .chain([Notification::JobsReady])
            .collect();
        let payloads = pack(&notifications).unwrap();
        assert!(payloads.len() > 1 && payloads.len() < 10, "{} payloads", payloads.len());
        assert!(payloads.iter().all(|payload| payload.len() < MAX_PAYLOAD));
        let unpacked: Vec<Notification> = payloads.iter().flat_map(|payload| unpack(payload).unwrap()).collect();
        assert_eq!(unpacked, notifications);
        assert_eq!(pack(&[]).unwrap(), Vec::<String>::new());
        assert_eq!(
            unpack(r#"{"k":"jobs_ready"}"#).unwrap(),
            vec![Notification::JobsReady],
            "an earlier version's form"
        );
    }
}
