//! Reads behind an agent's health (SPEC §5.7): for the automatic agent breaker, the agent's health under its
//! row lock and the run of consecutive counting failures among its newest finished jobs since
//! `health_reset_at`; for `GET /agents/{id}/health`, that count and the agent's activity; for `/metrics`, the
//! quarantined agents.
//!
//! The job engine decides the trip (policy); these reads make the decision race-free: the engine locks the
//! agent row first (PostgreSQL `FOR NO KEY UPDATE`, which two breaker decisions conflict on but foreign-key
//! checks of new jobs and events do not; SQLite has one writer, so its transactions never overlap),
//! then counts. Two workers failing jobs of one agent at once therefore count one after the other, and the
//! second one sees the first one's failure (committed) and, if it tripped, the quarantine.

use cortex_core::Timestamp;
use cortex_core::agent::HealthState;
use uuid::Uuid;

use crate::engine::{TxConn, read, write};
use crate::rows::{opt_ms, opt_time, parse};
use crate::{Result, Store, StoreError, Tx};

/// The agent's newest finished jobs since a time that either completed or failed with a class that counts
/// (`permanent` failures — configuration errors, cancellation — are skipped: they neither count nor reset,
/// see `ErrorClass::counts_toward_agent_breaker`). Uses index `job_agent_completed`.
const STREAK_SQLITE: &str = "SELECT status FROM job WHERE agent_id = $1 AND completed_at > $2 \
     AND (status = 'completed' OR (status IN ('failed', 'timed_out', 'dead_letter') \
          AND json_extract(error, '$.class') <> 'permanent')) \
     ORDER BY completed_at DESC LIMIT $3";
const STREAK_POSTGRES: &str = "SELECT status FROM job WHERE agent_id = $1 AND completed_at > $2 \
     AND (status = 'completed' OR (status IN ('failed', 'timed_out', 'dead_letter') \
          AND error->>'class' <> 'permanent')) \
     ORDER BY completed_at DESC LIMIT $3";

/// The breaker-relevant state of an agent, read under its row lock.
#[derive(Debug, Clone)]
pub struct AgentHealthLock {
    pub health_state: HealthState,
    /// Start of the current breaker window (the last release); `None` counts from the beginning.
    pub health_reset_at: Option<Timestamp>,
}

/// What an agent is doing, for `GET /agents/{id}/health`.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentActivity {
    pub running_jobs: i64,
    /// Creation time of the agent's newest job.
    pub last_job_at: Option<Timestamp>,
}

/// How many of the leading statuses (newest first) are failures.
fn leading_failures(statuses: &[String]) -> u32 {
    statuses.iter().take_while(|status| status.as_str() != "completed").count() as u32
}

fn streak_sql(postgres: bool) -> &'static str {
    if postgres { STREAK_POSTGRES } else { STREAK_SQLITE }
}

impl Store {
    /// The agent's running jobs and its newest job's creation time (indexes `job_live`, `job_agent`).
    pub async fn agent_activity(&self, agent_id: Uuid) -> Result<AgentActivity> {
        let (running_jobs, last_job_at): (i64, Option<i64>) = read!(self, |conn| {
            sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM job WHERE agent_id = $1 AND status = 'running'), \
                 (SELECT MAX(created_at) FROM job WHERE agent_id = $1)",
            )
            .bind(agent_id)
            .fetch_one(conn)
            .await?
        });
        Ok(AgentActivity { running_jobs, last_job_at: opt_time(last_job_at) })
    }

    /// Slugs of the quarantined agents, for the gauge `cortex_agent_quarantined{agent}` (agents are few: no
    /// index).
    pub async fn quarantined_agents(&self) -> Result<Vec<String>> {
        Ok(read!(self, |conn| {
            sqlx::query_scalar("SELECT slug FROM agent WHERE health_state = 'quarantined' ORDER BY slug")
                .fetch_all(conn)
                .await?
        }))
    }

    /// Consecutive counting failures of the agent since `since`, at most `limit` (for `GET /agents/{id}/health`).
    pub async fn agent_failure_streak(&self, agent_id: Uuid, since: Option<Timestamp>, limit: u32) -> Result<u32> {
        let sql = streak_sql(self.is_postgres());
        let statuses: Vec<String> = read!(self, |conn| {
            sqlx::query_scalar(sql)
                .bind(agent_id)
                .bind(opt_ms(since).unwrap_or(i64::MIN))
                .bind(i64::from(limit))
                .fetch_all(conn)
                .await?
        });
        Ok(leading_failures(&statuses))
    }
}

impl Tx {
    /// Reads the agent's health and breaker window, locking its row until commit on PostgreSQL (SQLite's
    /// single writer already serialises transactions).
    pub async fn lock_agent_health(&mut self, agent_id: Uuid) -> Result<AgentHealthLock> {
        let row: Option<(String, Option<i64>)> = match &mut self.conn {
            TxConn::Sqlite(conn) => {
                sqlx::query_as("SELECT health_state, health_reset_at FROM agent WHERE id = $1")
                    .bind(agent_id)
                    .fetch_optional(&mut **conn)
                    .await?
            }
            TxConn::Postgres(conn) => {
                sqlx::query_as("SELECT health_state, health_reset_at FROM agent WHERE id = $1 FOR NO KEY UPDATE")
                    .bind(agent_id)
                    .fetch_optional(&mut **conn)
                    .await?
            }
        };
        let (health_state, health_reset_at) = row.ok_or(StoreError::NotFound { entity: "agent" })?;
        Ok(AgentHealthLock {
            health_state: parse("agent.health_state", &health_state)?,
            health_reset_at: opt_time(health_reset_at),
        })
    }

    /// [`Store::agent_failure_streak`] inside this transaction: it sees the failure this transaction just
    /// recorded and, on PostgreSQL, every failure committed before the agent row lock was granted.
    pub async fn agent_failure_streak(&mut self, agent_id: Uuid, since: Option<Timestamp>, limit: u32) -> Result<u32> {
        let sql = streak_sql(self.store.is_postgres());
        let statuses: Vec<String> = write!(self, |conn| {
            sqlx::query_scalar(sql)
                .bind(agent_id)
                .bind(opt_ms(since).unwrap_or(i64::MIN))
                .bind(i64::from(limit))
                .fetch_all(conn)
                .await?
        });
        Ok(leading_failures(&statuses))
    }
}
