//! Cross-process wake-ups. SQLite mode broadcasts in-process after commit; PostgreSQL mode sends
//! `NOTIFY cortex` inside the transaction (delivered at commit) and one listener per process forwards
//! it to the same in-process channel. The committing process also broadcasts its own notifications
//! in-process right after the commit (an idle local worker or a waiting chat request wakes without the
//! round trip through the server), so each payload carries its notifier's origin and the listener drops
//! the ones its own notifier sent. Notifications are hints: receivers always re-read the database, so a
//! lost or duplicated notification only costs latency.
//!
//! On PostgreSQL a transaction's notifications travel packed ([`pack`]): one `NOTIFY` payload holding
//! the origin and a JSON array of as many notifications as fit PostgreSQL's payload limit, not one
//! `NOTIFY` per notification (a batch of 16 job completions announces 16 event streams). A transaction
//! with events sends them in the statement that inserts the events, before their seqs are back on this
//! side, so its payloads carry the events' seqs relative to a base the statement fills in
//! ([`pack_relative`]). The listener ([`unpack`]) also reads the forms of earlier versions: a bare array,
//! or a single notification object with or without an origin.
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
    Event {
        seq: i64,
        agent_id: Uuid,
        job_id: Option<Uuid>,
        /// The transaction changed the job's state (it emitted a `job.state`, `job.completed` or
        /// `job.failed` event of the job): a task waiting for the job's outcome re-reads the job only
        /// then. Absent in payloads of earlier versions, which count as a change.
        #[serde(rename = "s", default = "a_change")]
        state_changed: bool,
    },
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

impl Notification {
    /// This notification with an `Event`'s seq counted from `base` (see [`pack_relative`]); others as they are.
    pub(crate) fn event_from(self, base: i64) -> Notification {
        match self {
            Notification::Event { seq, agent_id, job_id, state_changed } => {
                Notification::Event { seq: base + seq, agent_id, job_id, state_changed }
            }
            other => other,
        }
    }
}

/// What a [`Notification::Event`] without `state_changed` means: maybe a change.
fn a_change() -> bool {
    true
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

/// Bytes a packed payload may take: PostgreSQL refuses `NOTIFY` payloads of 8,000 bytes or more.
const MAX_PAYLOAD: usize = 7_900;

/// The `NOTIFY` payloads announcing `notifications`, in order: `{"o": origin, "n": [...]}` objects of
/// consecutive notifications, each under PostgreSQL's payload limit (a notification too large for any
/// array goes alone).
pub(crate) fn pack(origin: u64, notifications: &[Notification]) -> serde_json::Result<Vec<String>> {
    let open = format!("{{\"o\":{origin},\"n\":[");
    Ok(chunks(notifications, 0, &open)?.into_iter().map(|chunk| open.clone() + &chunk).collect())
}

/// Bytes the SQL side may put before a [`pack_relative`] tail: `{"o":` and `,"b":` with two 20-digit numbers.
const RELATIVE_HEAD: usize = 5 + 20 + 5 + 20;

/// The `NOTIFY` payloads of a transaction whose event sequence numbers are not known yet (PostgreSQL
/// numbers a transaction's events from its transaction id, read in the statement that inserts them and
/// sends these): `{"o": origin, "b": base, "r": [...]}` objects whose `Event` seqs count from `base`.
/// Returns each payload's tail `,"r":[...]}`; the statement puts `{"o":origin,"b":base` before it
/// (see [`relative_head`]). Old versions cannot read this form and drop it with a warning (notifications
/// are hints).
pub(crate) fn pack_relative(notifications: &[Notification]) -> serde_json::Result<Vec<String>> {
    let open = ",\"r\":[";
    Ok(chunks(notifications, RELATIVE_HEAD, open)?.into_iter().map(|chunk| open.to_owned() + &chunk).collect())
}

/// What goes before the base of a [`pack_relative`] payload.
pub(crate) fn relative_head(origin: u64) -> String {
    format!("{{\"o\":{origin},\"b\":")
}

/// `notifications` serialised and split into runs that fit one payload after `reserved + open.len()`
/// bytes of head, each run closed with `]}`.
fn chunks(notifications: &[Notification], reserved: usize, open: &str) -> serde_json::Result<Vec<String>> {
    let budget = MAX_PAYLOAD - reserved - open.len();
    let mut runs = Vec::new();
    let mut current = String::new();
    for notification in notifications {
        let one = serde_json::to_string(notification)?;
        if !current.is_empty() && current.len() + 1 + one.len() + 2 > budget {
            current.push_str("]}");
            runs.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(',');
        }
        current.push_str(&one);
    }
    if !current.is_empty() {
        current.push_str("]}");
        runs.push(current);
    }
    Ok(runs)
}

/// What one `NOTIFY` payload carried: this version's packed objects (with event seqs relative to a base
/// or not), an earlier version's bare array, or an earlier version's single notification (with or without
/// its origin).
#[derive(Deserialize)]
#[serde(untagged)]
enum Payload {
    Relative {
        o: u64,
        b: i64,
        r: Vec<Notification>,
    },
    Packed {
        o: u64,
        n: Vec<Notification>,
    },
    Bare(Vec<Notification>),
    Single {
        #[serde(default)]
        o: u64,
        #[serde(flatten)]
        notification: Notification,
    },
}

/// The origin (0: unknown, an earlier version) and the notifications of one `NOTIFY` payload (see
/// [`pack`]).
pub(crate) fn unpack(payload: &str) -> serde_json::Result<(u64, Vec<Notification>)> {
    Ok(match serde_json::from_str(payload)? {
        Payload::Relative { o, b, r } => (o, r.into_iter().map(|notification| notification.event_from(b)).collect()),
        Payload::Packed { o, n } => (o, n),
        Payload::Bare(notifications) => (0, notifications),
        Payload::Single { o, notification } => (o, vec![notification]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_notifications_arrive_in_order_within_the_payload_limit() {
        let agent_id = Uuid::nil();
        let notifications: Vec<Notification> = (0..200)
            .map(|seq| Notification::Event {
                seq,
                agent_id,
                job_id: Some(Uuid::from_u128(seq as u128)),
                state_changed: seq % 2 == 0,
            })
            .chain([Notification::JobsReady])
            .collect();
        let payloads = pack(7, &notifications).unwrap();
        assert!(payloads.len() > 1 && payloads.len() < 10, "{} payloads", payloads.len());
        assert!(payloads.iter().all(|payload| payload.len() < MAX_PAYLOAD));
        let mut unpacked = Vec::new();
        for payload in &payloads {
            let (origin, notifications) = unpack(payload).unwrap();
            assert_eq!(origin, 7);
            unpacked.extend(notifications);
        }
        assert_eq!(unpacked, notifications);
        assert_eq!(pack(7, &[]).unwrap(), Vec::<String>::new());

        // The relative form: the statement puts the head and the base before each tail.
        let base = i64::MAX >> 12;
        let tails = pack_relative(&notifications).unwrap();
        assert!(tails.len() > 1, "{} payloads", tails.len());
        let mut unpacked = Vec::new();
        for tail in &tails {
            let payload = format!("{}{}{tail}", relative_head(u64::MAX), base);
            assert!(payload.len() < MAX_PAYLOAD, "{} bytes", payload.len());
            let (origin, notifications) = unpack(&payload).unwrap();
            assert_eq!(origin, u64::MAX);
            unpacked.extend(notifications);
        }
        let absolute: Vec<Notification> = notifications.iter().cloned().map(|n| n.event_from(base)).collect();
        assert_eq!(unpacked, absolute, "event seqs count from the base, other notifications are as sent");
        assert!(matches!(absolute[3], Notification::Event { seq, .. } if seq == base + 3));
        assert_eq!(unpack(r#"{"k":"jobs_ready"}"#).unwrap(), (0, vec![Notification::JobsReady]), "single");
        assert_eq!(unpack(r#"{"o":9,"k":"jobs_ready"}"#).unwrap(), (9, vec![Notification::JobsReady]));
        assert_eq!(unpack(r#"[{"k":"jobs_ready"}]"#).unwrap(), (0, vec![Notification::JobsReady]), "bare");
        let earlier =
            r#"{"o":9,"n":[{"k":"event","seq":3,"agent_id":"00000000-0000-0000-0000-000000000000","job_id":null}]}"#;
        let event = Notification::Event { seq: 3, agent_id, job_id: None, state_changed: true };
        assert_eq!(unpack(earlier).unwrap(), (9, vec![event]), "an earlier version's event may be a state change");
    }
}
