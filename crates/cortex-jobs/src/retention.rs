//! Retention sweeps (SPEC Appendix B "Retention"): the policy over the store's deletes.
//!
//! One process of the cluster sweeps at a time: [`Sweeper::sweep`] runs only while its caller holds the
//! `retention` lease, renewed between batches, so a process that dies mid-sweep hands over after
//! [`LEASE_TTL`]. A sweep works in batches of [`RetentionPolicy::batch_size`] rows, one short transaction
//! each, yielding between them, so claims and turns interleave with it (on SQLite they share the single
//! writer; on PostgreSQL the swept rows are never ones a claim locks). Each step runs until a batch comes
//! back short. Delta compaction walks ended jobs in order of completion, a batch of jobs at a time, and
//! goes on from where the sweeper's previous batch stopped ([`Sweeper`]): a pass costs what ended since
//! the last one, not what is kept.
//!
//! Order: compact deltas, then the audit side (approvals, audit log), then the job side (events of ended
//! jobs, the jobs themselves, loose events). Approvals go before jobs because a job stays as long as an
//! approval refers to it.

use std::future::Future;
use std::time::Duration;

use cortex_core::Timestamp;
use cortex_store::retention::CompactionMark;
use cortex_store::{Result, Store};
use uuid::Uuid;

/// Name of the lease that makes one process the sweeper.
pub const RETENTION_LEASE: &str = "retention";
/// How long the lease outlives its last renewal (a dead sweeper's successor waits at most this long).
pub const LEASE_TTL: Duration = Duration::from_secs(15 * 60);

/// What is kept and for how long.
#[derive(Debug, Clone)]
pub struct RetentionPolicy {
    /// Ended jobs with their events, steps and tool calls, events without a job, and session buffers
    /// (`CORTEX_RETENTION_DAYS`, 30 days); `None` keeps them forever.
    pub keep: Option<Duration>,
    /// Approvals with their audit chain, and the audit log (`CORTEX_AUDIT_RETENTION_DAYS`, 365 days);
    /// `None` keeps them forever.
    pub keep_audit: Option<Duration>,
    /// How long after its job ended an `llm.delta` event goes (15 min): the final `llm.message` holds
    /// the whole text, and the delay lets a reader that is still replaying the stream finish it.
    pub delta_grace: Duration,
    /// Driving rows per transaction (500): rows deleted, or for delta compaction ended jobs looked at.
    pub batch_size: i64,
}

impl RetentionPolicy {
    /// The documented defaults (30 days, 365 days).
    pub fn with_days(days: u32, audit_days: u32) -> RetentionPolicy {
        let keep = |days: u32| (days > 0).then(|| Duration::from_secs(u64::from(days) * 24 * 3600));
        RetentionPolicy {
            keep: keep(days),
            keep_audit: keep(audit_days),
            delta_grace: Duration::from_secs(15 * 60),
            batch_size: 500,
        }
    }
}

/// Rows one sweep removed, per kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    pub deltas: u64,
    pub approvals: u64,
    pub audit_entries: u64,
    pub job_events: u64,
    pub jobs: u64,
    pub loose_events: u64,
}

impl RetentionReport {
    pub fn is_empty(&self) -> bool {
        *self == RetentionReport::default()
    }
}

/// One process's sweeper: who it is for the lease, and how far its delta compaction has got.
#[derive(Debug, Clone)]
pub struct Sweeper {
    holder: Uuid,
    /// The last ended job whose deltas this sweeper compacted; the next batch starts after it. Kept in
    /// memory: a new leader (or a restart) walks the jobs still kept once, then goes on from its mark.
    compacted: Option<CompactionMark>,
}

impl Sweeper {
    /// A sweeper that holds (or will take) the lease as `holder`.
    pub fn new(holder: Uuid) -> Sweeper {
        Sweeper { holder, compacted: None }
    }

    /// The id this sweeper takes the lease as.
    pub fn holder(&self) -> Uuid {
        self.holder
    }

    /// Runs one sweep when this sweeper holds (or takes) the retention lease; `None` when another
    /// process holds it. A sweep that loses the lease midway stops and reports what it did.
    pub async fn sweep(&mut self, store: &Store, policy: &RetentionPolicy) -> Result<Option<RetentionReport>> {
        if !renew(store, self.holder).await? {
            return Ok(None);
        }
        let now = store.clock().now();
        let before = |keep: Duration| now - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        let mut sweep = Sweep {
            store,
            holder: self.holder,
            batch: policy.batch_size.max(1),
            report: RetentionReport::default(),
            lease_lost: false,
        };
        sweep.compact_deltas(&mut self.compacted, before(policy.delta_grace)).await?;
        if let Some(cutoff) = policy.keep_audit.map(before) {
            sweep
                .step("approvals", |report| &mut report.approvals, |limit| store.delete_old_approvals(cutoff, limit))
                .await?;
            sweep
                .step(
                    "audit_entries",
                    |report| &mut report.audit_entries,
                    |limit| store.delete_old_audit_entries(cutoff, limit),
                )
                .await?;
        }
        if let Some(cutoff) = policy.keep.map(before) {
            sweep
                .step(
                    "job_events",
                    |report| &mut report.job_events,
                    |limit| store.delete_events_of_ended_jobs(cutoff, limit),
                )
                .await?;
            sweep.step("jobs", |report| &mut report.jobs, |limit| store.delete_ended_jobs(cutoff, limit)).await?;
            sweep
                .step(
                    "loose_events",
                    |report| &mut report.loose_events,
                    |limit| store.delete_loose_events(cutoff, limit),
                )
                .await?;
        }
        Ok(Some(sweep.report))
    }
}

/// Takes or renews the lease.
async fn renew(store: &Store, holder: Uuid) -> Result<bool> {
    store.acquire_lease(RETENTION_LEASE, holder, chrono::Duration::from_std(LEASE_TTL).unwrap_or_default()).await
}

/// A sweep in progress.
struct Sweep<'a> {
    store: &'a Store,
    holder: Uuid,
    batch: i64,
    report: RetentionReport,
    /// Another process took the lease over: the remaining steps are its job now.
    lease_lost: bool,
}

impl Sweep<'_> {
    /// Compacts the deltas of jobs that ended before `cutoff`, a batch of jobs at a time in order of
    /// completion, starting after `mark` and moving it on with every batch.
    async fn compact_deltas(&mut self, mark: &mut Option<CompactionMark>, cutoff: Timestamp) -> Result<()> {
        while !self.lease_lost {
            let batch = self.store.compact_deltas(*mark, cutoff, self.batch).await?;
            self.report.deltas += batch.deleted;
            metrics::counter!("cortex_retention_deleted_total", "kind" => "deltas").increment(batch.deleted);
            if batch.next.is_some() {
                *mark = batch.next;
            }
            if batch.jobs < self.batch as u64 {
                return Ok(());
            }
            self.yield_and_renew("deltas").await?;
        }
        Ok(())
    }

    /// Runs `delete` in batches until one comes back short, counting into `field`; does nothing once the
    /// lease is lost.
    async fn step<F, Fut>(
        &mut self,
        kind: &'static str,
        field: impl Fn(&mut RetentionReport) -> &mut u64,
        delete: F,
    ) -> Result<()>
    where
        F: Fn(i64) -> Fut,
        Fut: Future<Output = Result<u64>>,
    {
        while !self.lease_lost {
            let deleted = delete(self.batch).await?;
            *field(&mut self.report) += deleted;
            metrics::counter!("cortex_retention_deleted_total", "kind" => kind).increment(deleted);
            if deleted < self.batch as u64 {
                return Ok(());
            }
            self.yield_and_renew(kind).await?;
        }
        Ok(())
    }

    /// Between two batches: lets claims and turns in, then renews the lease (or notes it lost).
    async fn yield_and_renew(&mut self, kind: &'static str) -> Result<()> {
        tokio::task::yield_now().await;
        if !renew(self.store, self.holder).await? {
            tracing::warn!(kind, "retention lease lost mid-sweep; another process continues");
            self.lease_lost = true;
        }
        Ok(())
    }
}
