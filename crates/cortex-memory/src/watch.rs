//! When an in-process cache of an agent's memory is current: shared by the embedded vector index
//! (`embedded.rs`) and the keyword index (`keyword.rs`).
//!
//! A cache covers the agent's memory change sequence up to some number (see `cortex_store::memory`) and
//! catches up exactly with the rows of a higher sequence. Every committed memory write notifies its agent
//! and sequence (in-process at once for this process's writes; through `LISTEN` from other PostgreSQL
//! processes), so a cache that covers the latest sequence heard of reads nothing to know it is current. A
//! `Resync` (listener reconnected) or a lagging subscription may have lost notifications: every cache then
//! checks the store once ([`ChangeWatch::committed`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use cortex_store::{Notification, Store, StoreError};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::TryRecvError;
use uuid::Uuid;

/// What a cache of one agent covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Coverage {
    /// The agent's change sequence it covers (-1: nothing yet).
    pub seq: i64,
    /// The resync generation it was last checked against the store in; `None` until its first catch-up.
    pub checked: Option<u64>,
}

impl Coverage {
    /// Nothing covered, never checked.
    pub fn empty() -> Self {
        Self { seq: -1, checked: None }
    }

    /// A cache loaded from a blob covering `seq`, not yet checked against the store.
    pub fn loaded(seq: i64) -> Self {
        Self { seq, checked: None }
    }
}

/// The agent's committed sequence, read before catching up, and the resync generation it was read in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Committed {
    pub seq: i64,
    pub generation: u64,
}

impl Committed {
    /// The coverage of a cache that applied every row above its old sequence read after this.
    pub fn covered(self, old: Coverage) -> Coverage {
        Coverage { seq: old.seq.max(self.seq), checked: Some(self.generation) }
    }
}

/// The subscription to the store's notifications and what it learnt from them.
struct Changes {
    receiver: Receiver<Notification>,
    /// Per agent, the highest change sequence notified.
    latest: HashMap<Uuid, i64>,
    /// Bumped on every `Resync` or lag: each cache then checks the store once.
    resyncs: u64,
}

impl Changes {
    /// Takes every pending notification.
    fn drain(&mut self) {
        loop {
            match self.receiver.try_recv() {
                Ok(Notification::Memory { agent_id, seq }) => {
                    let latest = self.latest.entry(agent_id).or_insert(seq);
                    *latest = (*latest).max(seq);
                }
                Ok(Notification::Resync) | Err(TryRecvError::Lagged(_)) => self.resyncs += 1,
                Ok(_) => {}
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
    }
}

/// One cache's view of the store's memory writes.
pub(crate) struct ChangeWatch {
    store: Store,
    /// Subscribed at the first check (a cache that is never searched holds no listener).
    changes: Mutex<Option<Changes>>,
    sequence_checks: AtomicU64,
}

impl ChangeWatch {
    pub fn new(store: Store) -> Self {
        Self { store, changes: Mutex::new(None), sequence_checks: AtomicU64::new(0) }
    }

    /// Agents' current sequences read from the store so far.
    pub fn sequence_checks(&self) -> u64 {
        self.sequence_checks.load(Ordering::Relaxed)
    }

    /// Drains the notifications (subscribing first if needed); the highest sequence heard of for the
    /// agent and the resync generation.
    fn heard(&self, agent_id: Uuid) -> (Option<i64>, u64) {
        let mut changes = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        let changes = changes.get_or_insert_with(|| Changes {
            receiver: self.store.subscribe(),
            latest: HashMap::new(),
            resyncs: 0,
        });
        changes.drain();
        (changes.latest.get(&agent_id).copied(), changes.resyncs)
    }

    /// Whether a cache of the agent with this coverage is known current without asking the store.
    pub fn is_current(&self, agent_id: Uuid, coverage: Coverage) -> bool {
        let (latest, resyncs) = self.heard(agent_id);
        coverage.checked == Some(resyncs) && latest.is_none_or(|latest| latest <= coverage.seq)
    }

    /// The agent's committed sequence. The generation is taken before the store is read (a write
    /// notified later is caught up by a later check) and the sequence before the rows: every write up to
    /// it has committed, so rows read next include them all (and maybe later ones, whose sequences are
    /// then covered too).
    pub async fn committed(&self, agent_id: Uuid) -> Result<Committed, StoreError> {
        let (_, generation) = self.heard(agent_id);
        let seq = self.store.memory_change_seq(agent_id).await?;
        self.sequence_checks.fetch_add(1, Ordering::Relaxed);
        Ok(Committed { seq, generation })
    }
}
