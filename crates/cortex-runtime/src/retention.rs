//! Retention as one process runs it (SPEC Appendix B "Retention"): on a timer, the cluster-wide database
//! sweep when this process holds the lease (`cortex_jobs::retention`), then the session buffers under this
//! process's own data directory, which no other process can reach.

use std::time::Duration;

use cortex_jobs::retention::{RETENTION_LEASE, RetentionPolicy, RetentionReport, Sweeper};
use tokio_util::sync::CancellationToken;

use crate::buffer::prune_buffers;
use crate::runtime::Runtime;

/// Time between two passes.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetentionPass {
    /// The database sweep; `None` when another process holds the lease (or retention failed, logged).
    pub database: Option<RetentionReport>,
    /// Job directories of session buffers removed.
    pub buffers: usize,
}

impl Runtime {
    /// Runs a pass at once and then every [`RETENTION_INTERVAL`] until `shutdown`, then gives the lease up
    /// so another process can take over without waiting for it to expire.
    pub async fn run_retention(&self, policy: RetentionPolicy, shutdown: CancellationToken) {
        let mut sweeper = Sweeper::new(cortex_core::new_id());
        let clock = self.store.clock().clone();
        loop {
            let pass = self.retention_pass(&mut sweeper, &policy).await;
            if pass.buffers > 0 || pass.database.as_ref().is_some_and(|report| !report.is_empty()) {
                tracing::info!(?pass, "retention pass removed old data");
            }
            tokio::select! {
                _ = clock.sleep(RETENTION_INTERVAL) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        if let Err(err) = self.store.release_lease(RETENTION_LEASE, sweeper.holder()).await {
            tracing::warn!(error = %err, "releasing the retention lease failed");
        }
    }

    /// One pass of `sweeper`: the database sweep if this process leads, then this process's buffers older
    /// than the retention period. Failures are logged; the next pass tries again.
    pub async fn retention_pass(&self, sweeper: &mut Sweeper, policy: &RetentionPolicy) -> RetentionPass {
        let database = match sweeper.sweep(&self.store, policy).await {
            Ok(report) => report,
            Err(err) => {
                tracing::warn!(error = %err, "retention sweep failed");
                None
            }
        };
        let Some(keep) = policy.keep else { return RetentionPass { database, buffers: 0 } };
        let data_dir = self.services.data_dir.clone();
        let now = std::time::SystemTime::from(self.store.clock().now());
        let buffers = match tokio::task::spawn_blocking(move || prune_buffers(&data_dir, now, keep)).await {
            Ok(Ok(removed)) => removed,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "pruning session buffers failed");
                0
            }
            Err(err) => {
                tracing::warn!(error = %err, "pruning session buffers stopped");
                0
            }
        };
        RetentionPass { database, buffers }
    }
}
