//! Keeping markdown records in step with their files (SPEC §9.7 triggers): a sync of every agent's
//! directory at start, then a file watcher (`notify`) on `<data_dir>/agents` that syncs an agent once its
//! files have been quiet for [`DEBOUNCE`].
//!
//! With PostgreSQL several processes may share the files; only the holder of the [`LEASE`] watches (it is
//! renewed every [`RENEW`]; a process that takes it over first syncs everything, catching up on edits made
//! while nobody watched). The API's `POST /agents/{id}/memory/sync` works in every process regardless.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::service::Memory;

/// Quiet time after the last change to an agent's files before it is synced (SPEC §9.7).
pub const DEBOUNCE: Duration = Duration::from_secs(2);
/// Name of the watcher's lease.
pub const LEASE: &str = "memory_markdown_watch";
/// How long a lease holds without renewal.
const LEASE_TTL: Duration = Duration::from_secs(60);
/// How often the lease is renewed (or tried).
const RENEW: Duration = Duration::from_secs(20);

/// The agent slug a changed path belongs to (`<agents>/<slug>/memory[/…]`).
fn slug_of(agents_dir: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(agents_dir).ok()?;
    let mut parts = relative.components().map(|part| part.as_os_str().to_str());
    let slug = parts.next()??;
    match parts.next() {
        Some(Some("memory")) | None => Some(slug.to_owned()),
        _ => None,
    }
}

fn start_watcher(agents_dir: &Path, sender: mpsc::UnboundedSender<PathBuf>) -> Option<RecommendedWatcher> {
    let handler = move |event: notify::Result<notify::Event>| match event {
        Ok(event) => {
            for path in event.paths {
                let _ = sender.send(path);
            }
        }
        Err(err) => tracing::warn!(error = %err, "markdown watcher error"),
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(err) => {
            tracing::warn!(error = %err, "cannot start the markdown watcher; use POST /agents/{{id}}/memory/sync");
            return None;
        }
    };
    if let Err(err) = watcher.watch(agents_dir, RecursiveMode::Recursive) {
        tracing::warn!(error = %err, dir = %agents_dir.display(), "cannot watch the markdown directory");
        return None;
    }
    Some(watcher)
}

impl Memory {
    /// Syncs the agent named by `slug` (unknown slugs are ignored).
    async fn sync_slug(&self, slug: &str) {
        let agent = match self.store().get_agent(slug).await {
            Ok(agent) => agent,
            Err(cortex_store::StoreError::NotFound { .. }) => return,
            Err(err) => {
                tracing::warn!(slug, error = %err, "markdown sync postponed");
                return;
            }
        };
        match self.sync_markdown(agent.id, &agent.slug).await {
            Ok(report) => {
                if report.created + report.updated + report.deleted > 0 {
                    tracing::info!(slug, ?report, "markdown memory synced");
                }
            }
            Err(err) => tracing::warn!(slug, error = %err, "markdown sync failed"),
        }
    }

    /// Syncs every agent that has a directory under `agents_dir`.
    async fn sync_all(&self, agents_dir: &Path) {
        let Ok(entries) = std::fs::read_dir(agents_dir) else { return };
        let mut slugs: Vec<String> =
            entries.flatten().filter_map(|entry| entry.file_name().to_str().map(str::to_owned)).collect();
        slugs.sort();
        for slug in slugs {
            self.sync_slug(&slug).await;
        }
    }

    /// Startup sync, then the watcher (under the lease) until `shutdown`. Returns at once when markdown
    /// sync is off (no data dir).
    pub async fn run_markdown_sync(self: Arc<Self>, holder: Uuid, shutdown: CancellationToken) {
        let Some(data_dir) = self.data_dir().map(Path::to_path_buf) else { return };
        let agents_dir = data_dir.join("agents");
        if let Err(err) = std::fs::create_dir_all(&agents_dir) {
            tracing::warn!(error = %err, dir = %agents_dir.display(), "markdown memory directory unavailable");
            return;
        }
        self.sync_all(&agents_dir).await;
        let (sender, mut events) = mpsc::unbounded_channel::<PathBuf>();
        let mut watcher: Option<RecommendedWatcher> = None;
        let mut pending: BTreeSet<String> = BTreeSet::new();
        let mut renew = tokio::time::interval(RENEW);
        let ttl = chrono::Duration::from_std(LEASE_TTL).unwrap_or_default();
        loop {
            let quiet = async {
                if pending.is_empty() {
                    std::future::pending::<()>().await;
                } else {
                    tokio::time::sleep(DEBOUNCE).await;
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = renew.tick() => {
                    let leading = match self.store().acquire_lease(LEASE, holder, ttl).await {
                        Ok(leading) => leading,
                        Err(err) => {
                            tracing::warn!(error = %err, "markdown watcher lease not renewed");
                            false
                        }
                    };
                    if leading && watcher.is_none() {
                        watcher = start_watcher(&agents_dir, sender.clone());
                        if watcher.is_some() {
                            self.sync_all(&agents_dir).await;
                        }
                    } else if !leading {
                        watcher = None;
                    }
                }
                Some(path) = events.recv() => {
                    if let Some(slug) = slug_of(&agents_dir, &path) {
                        pending.insert(slug);
                    }
                }
                () = quiet => {
                    for slug in std::mem::take(&mut pending) {
                        self.sync_slug(&slug).await;
                    }
                }
            }
        }
        drop(watcher);
        if let Err(err) = self.store().release_lease(LEASE, holder).await {
            tracing::warn!(error = %err, "releasing the markdown watcher lease failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_paths_name_their_agent() {
        let agents = Path::new("/data/agents");
        assert_eq!(slug_of(agents, Path::new("/data/agents/ana/memory/MEMORY.md")).as_deref(), Some("ana"));
        assert_eq!(slug_of(agents, Path::new("/data/agents/ana/memory")).as_deref(), Some("ana"));
        assert_eq!(slug_of(agents, Path::new("/data/agents/ana")).as_deref(), Some("ana"));
        assert_eq!(slug_of(agents, Path::new("/data/agents/ana/skills/x.md")), None);
        assert_eq!(slug_of(agents, Path::new("/data/sessions/x")), None);
    }
}
