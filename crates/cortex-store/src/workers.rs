//! Worker liveness and singleton leases (SPEC §4.5, §16.2).
//!
//! Each process keeps one `worker` row fresh (one write per process, however many jobs it runs). A
//! worker whose heartbeat is older than the reaper's threshold is dead; its running jobs are recovered.
//! Leases make singleton duties (reaper, sweepers) run in one process at a time.

use cortex_core::Timestamp;
use uuid::Uuid;

use crate::engine::{read, write};
use crate::rows::{ms, time};
use crate::{Result, Store, Tx};

/// A worker process as registered.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkerRow {
    pub id: Uuid,
    pub name: String,
    pub pid: i64,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub stopped_at: Option<i64>,
}

impl WorkerRow {
    pub fn heartbeat(&self) -> Timestamp {
        time(self.heartbeat_at)
    }
}

impl Store {
    /// Workers that have not stopped and have not been declared dead.
    pub async fn live_workers(&self) -> Result<Vec<WorkerRow>> {
        Ok(read!(self, |conn| {
            sqlx::query_as(
                "SELECT id, name, pid, started_at, heartbeat_at, stopped_at FROM worker WHERE stopped_at IS NULL",
            )
            .fetch_all(conn)
            .await?
        }))
    }

    /// Registers this process's worker.
    pub async fn register_worker(&self, id: Uuid, name: &str) -> Result<()> {
        let now = ms(self.now());
        let mut tx = self.begin().await?;
        write!(tx, |conn| {
            // Idempotent: a registration whose commit acknowledgement was lost is simply sent again.
            sqlx::query(
                "INSERT INTO worker (id, name, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $4) \
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, stopped_at = NULL",
            )
            .bind(id)
            .bind(name)
            .bind(i64::from(std::process::id()))
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        tx.commit().await
    }

    /// Refreshes the heartbeat; `false` means this worker was declared dead and must stop working.
    pub async fn heartbeat_worker(&self, id: Uuid) -> Result<bool> {
        let now = ms(self.now());
        let mut tx = self.begin().await?;
        let updated = write!(tx, |conn| {
            sqlx::query("UPDATE worker SET heartbeat_at = $2 WHERE id = $1 AND stopped_at IS NULL")
                .bind(id)
                .bind(now)
                .execute(conn)
                .await?
                .rows_affected()
        });
        tx.commit().await?;
        Ok(updated == 1)
    }

    /// Takes or renews the named lease for `ttl`; `true` when `holder` holds it afterwards.
    pub async fn acquire_lease(&self, name: &str, holder: Uuid, ttl: chrono::Duration) -> Result<bool> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let held: Option<Uuid> = write!(tx, |conn| {
            sqlx::query_scalar(
                "INSERT INTO lease (name, holder, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                 WHERE lease.holder = excluded.holder OR lease.expires_at < $4 RETURNING holder",
            )
            .bind(name)
            .bind(holder)
            .bind(ms(now + ttl))
            .bind(ms(now))
            .fetch_optional(conn)
            .await?
        });
        tx.commit().await?;
        Ok(held == Some(holder))
    }

    /// Gives a lease up early (shutdown), so another process can take over at once.
    pub async fn release_lease(&self, name: &str, holder: Uuid) -> Result<()> {
        let mut tx = self.begin().await?;
        write!(tx, |conn| {
            sqlx::query("DELETE FROM lease WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(holder)
                .execute(conn)
                .await?
                .rows_affected()
        });
        tx.commit().await
    }
}

impl Tx {
    /// Marks workers whose heartbeat is older than `stale_before` as stopped and returns them.
    pub async fn declare_dead_workers(&mut self, stale_before: Timestamp) -> Result<Vec<WorkerRow>> {
        let now = ms(self.now());
        Ok(write!(self, |conn| {
            sqlx::query_as(
                "UPDATE worker SET stopped_at = $2 WHERE stopped_at IS NULL AND heartbeat_at < $1 \
                 RETURNING id, name, pid, started_at, heartbeat_at, stopped_at",
            )
            .bind(ms(stale_before))
            .bind(now)
            .fetch_all(conn)
            .await?
        }))
    }

    /// Makes a worker that was declared dead live again (it has abandoned the jobs it held).
    pub async fn revive_worker(&mut self, id: Uuid) -> Result<()> {
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query("UPDATE worker SET stopped_at = NULL, heartbeat_at = $2 WHERE id = $1")
                .bind(id)
                .bind(now)
                .execute(conn)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// Marks a worker stopped (graceful shutdown).
    pub async fn stop_worker(&mut self, id: Uuid) -> Result<()> {
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query("UPDATE worker SET stopped_at = $2 WHERE id = $1 AND stopped_at IS NULL")
                .bind(id)
                .bind(now)
                .execute(conn)
                .await?
                .rows_affected()
        });
        Ok(())
    }
}
