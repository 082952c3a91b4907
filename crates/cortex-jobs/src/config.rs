//! Engine settings; defaults are the SPEC §19 numbers.

use std::time::Duration;

use crate::breaker::AutoQuarantine;

/// How a worker process behaves.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Human-readable worker name (host and pid by default).
    pub name: String,
    /// Jobs run at once by this process (`CORTEX_WORKER_CONCURRENCY`, default 5).
    pub concurrency: usize,
    /// Fallback poll when no notification arrives (1 s): a lost wake-up delays work, never loses it.
    pub poll_interval: Duration,
    /// Worker heartbeat period (5 s).
    pub heartbeat_interval: Duration,
    /// A worker silent for this long is dead (20 s).
    pub worker_dead_after: Duration,
    /// Reaper period (5 s).
    pub reaper_interval: Duration,
    /// Re-check of `cancel_requested` when no notification arrives (5 s).
    pub cancel_recheck: Duration,
    /// Total time allowed for a graceful shutdown (`CORTEX_SHUTDOWN_GRACE_SECONDS`, 60 s).
    pub shutdown_grace: Duration,
    /// Whether 3 consecutive failed jobs quarantine an agent (SPEC §5.7; `CORTEX_DISABLE_QUARANTINE`
    /// turns it off). Jobs of quarantined agents are never claimed either way.
    pub auto_quarantine: AutoQuarantine,
}

impl EngineConfig {
    /// The documented defaults with the given name.
    pub fn with_name(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            concurrency: 5,
            poll_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(5),
            worker_dead_after: Duration::from_secs(20),
            reaper_interval: Duration::from_secs(5),
            cancel_recheck: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(60),
            auto_quarantine: AutoQuarantine::On,
        }
    }
}
