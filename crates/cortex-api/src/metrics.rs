//! The Prometheus recorder and the database-derived gauges. One recorder per process: the `metrics`
//! macros write to a global recorder.

use std::sync::OnceLock;
use std::time::Duration;

use cortex_core::Timestamp;
use cortex_store::Store;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder on first use and returns its handle.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; metrics then go there instead.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

/// How often [`keep_drained`] folds the histograms' pending samples into their summaries.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds every histogram's pending samples into its summary each [`UPKEEP_EVERY`] until `shutdown`.
///
/// The recorder keeps each sample it is given (one per HTTP request, job and model call) until it is
/// folded, and only a scrape of `/metrics` or this upkeep folds them: `build_recorder` does not start
/// the exporter's own upkeep task. Without it, a server that nobody scrapes grows by every request it
/// ever served. Idle, it costs one timer wake-up per period.
pub async fn keep_drained(handle: PrometheusHandle, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(UPKEEP_EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => handle.run_upkeep(),
        }
    }
}

/// Gauges read from the database (jobs per state, pending approvals, quarantined agents). `/metrics` is
/// open without credentials, so however often it is scraped they are recounted at most once per
/// [`REFRESH_EVERY`] (by the store's clock); scrapes in between show the last counts.
#[derive(Debug, Default)]
pub struct StateGauges {
    refreshed_at: tokio::sync::Mutex<Option<Timestamp>>,
    /// Agents last shown as quarantined: a released one is set back to 0, not left at 1.
    quarantined: std::sync::Mutex<Vec<String>>,
}

/// Shortest time between two recounts.
pub const REFRESH_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

impl StateGauges {
    /// Recounts when the last count is older than [`REFRESH_EVERY`] and no other scrape is recounting;
    /// returns whether this call queried the database.
    pub async fn refresh_if_due(&self, store: &Store) -> bool {
        let Ok(mut refreshed_at) = self.refreshed_at.try_lock() else { return false };
        let now = store.clock().now();
        if refreshed_at.is_some_and(|last| now - last < REFRESH_EVERY) {
            return false;
        }
        *refreshed_at = Some(now);
        match store.count_jobs_by_status().await {
            Ok(counts) => {
                for status in cortex_core::job::JobStatus::ALL {
                    let count = counts.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
                    metrics::gauge!("cortex_jobs_in_state", "status" => status.as_str()).set(count as f64);
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot count jobs for /metrics"),
        }
        match store.count_pending_approvals().await {
            Ok(pending) => metrics::gauge!("cortex_approvals_pending").set(pending as f64),
            Err(err) => tracing::warn!(error = %err, "cannot count pending approvals for /metrics"),
        }
        match store.quarantined_agents().await {
            Ok(now_quarantined) => {
                if let Ok(mut shown) = self.quarantined.lock() {
                    for agent in shown.iter().filter(|agent| !now_quarantined.contains(agent)) {
                        metrics::gauge!("cortex_agent_quarantined", "agent" => agent.clone()).set(0.0);
                    }
                    for agent in &now_quarantined {
                        metrics::gauge!("cortex_agent_quarantined", "agent" => agent.clone()).set(1.0);
                    }
                    *shown = now_quarantined;
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot list quarantined agents for /metrics"),
        }
        true
    }
}
