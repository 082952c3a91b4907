//! Memory extraction bookkeeping (SPEC §9.2): which messages of a session are already extracted, and the
//! one `memory_extract` job that is queued or running for it.
//!
//! Extraction is event-driven, so an idle agent costs nothing: every message appended to a session and
//! every close re-plans that session's extraction job in the same transaction.
//!
//! - The session has unextracted messages and no live extraction job → a job is queued
//!   (`kind: memory_extract`, priority −10, no `session_id` on the job so it never holds up the chat).
//! - It runs **now** when [`ExtractionPolicy::every_messages`] messages are waiting or the session is
//!   closed, otherwise when the session has been quiet for [`ExtractionPolicy::idle`]: each new message
//!   moves a not-yet-started job's `run_at` to `last activity + idle`.
//! - While the job runs, triggers coalesce into it; when it finishes ([`Tx::finish_extraction`]) it
//!   advances `extracted_through_seq` and re-plans the session for whatever arrived meanwhile.
//!
//! Agents whose `memory` switches say not to extract (`enabled: false` or `auto_extract: false`, SPEC §9.2)
//! get no job: their sessions' messages just stay unextracted.
//!
//! The policy is off unless the process enables it ([`Store::enable_memory_extraction`]; the binary does),
//! so library tests that write sessions see no extra jobs.

use std::time::Duration;

use cortex_core::Timestamp;
use cortex_core::agent::MemorySettings;
use cortex_core::job::{JobKind, JobStatus};
use serde_json::json;
use uuid::Uuid;

use crate::engine::{read, write};
use crate::jobs::NewJob;
use crate::rows::{from_json, ms, time};
use crate::{Notification, Result, Store, StoreError, Tx};

/// Priority of extraction jobs (SPEC §9.2): below every chat and task job.
pub const EXTRACTION_PRIORITY: i32 = -10;
/// `created_by` of extraction jobs.
pub const EXTRACTION_CREATOR: &str = "system:memory";

/// When sessions are extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractionPolicy {
    /// Unextracted messages that make the job due at once (SPEC §9.2: 50).
    pub every_messages: i64,
    /// Quiet time after which a session's messages are extracted (SPEC §9.2: 30 min).
    pub idle: Duration,
    /// Attempts and per-attempt timeout of an extraction job.
    pub max_attempts: u32,
    pub timeout_seconds: u32,
}

impl Default for ExtractionPolicy {
    fn default() -> Self {
        Self { every_messages: 50, idle: Duration::from_secs(30 * 60), max_attempts: 3, timeout_seconds: 300 }
    }
}

/// A session's extraction progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractionState {
    pub session_id: Uuid,
    pub agent_id: Uuid,
    pub closed: bool,
    pub message_count: i64,
    /// Messages with `seq` up to this one are extracted.
    pub extracted_through_seq: i64,
    pub last_activity_at: Timestamp,
    /// The queued or running extraction job, if one was queued and has not finished.
    pub extraction_job_id: Option<Uuid>,
    /// The agent's memory switches: whether its sessions are extracted at all.
    pub memory: MemorySettings,
}

#[derive(sqlx::FromRow)]
struct StateRow {
    id: Uuid,
    agent_id: Uuid,
    status: String,
    message_count: i64,
    extracted_through_seq: i64,
    last_activity_at: i64,
    extraction_job_id: Option<Uuid>,
    memory: sqlx::types::Json<serde_json::Value>,
}

impl StateRow {
    fn into_state(self) -> Result<ExtractionState> {
        let row = self;
        Ok(ExtractionState {
            session_id: row.id,
            agent_id: row.agent_id,
            closed: row.status == "closed",
            message_count: row.message_count,
            extracted_through_seq: row.extracted_through_seq,
            last_activity_at: time(row.last_activity_at),
            extraction_job_id: row.extraction_job_id,
            memory: from_json("agent.memory", row.memory.0)?,
        })
    }
}

const STATE_SQL: &str = "SELECT s.id, s.agent_id, s.status, s.message_count, s.extracted_through_seq, \
     s.last_activity_at, s.extraction_job_id, a.memory FROM session s JOIN agent a ON a.id = s.agent_id WHERE s.id = $1";

impl Store {
    /// Turns on live extraction for this process (the first policy set wins). Returns whether this call
    /// set it.
    pub fn enable_memory_extraction(&self, policy: ExtractionPolicy) -> bool {
        self.inner.extraction.set(policy).is_ok()
    }

    /// The extraction policy in force, if extraction is on.
    pub fn memory_extraction(&self) -> Option<ExtractionPolicy> {
        self.inner.extraction.get().copied()
    }

    /// A session's extraction progress.
    pub async fn extraction_state(&self, session_id: Uuid) -> Result<ExtractionState> {
        let row: Option<StateRow> =
            read!(self, |conn| sqlx::query_as(STATE_SQL).bind(session_id).fetch_optional(conn).await?);
        row.ok_or(StoreError::NotFound { entity: "session" })?.into_state()
    }
}

impl Tx {
    /// Re-plans the session's extraction job after a message or a close (no-op while extraction is off,
    /// process-wide or for the session's agent).
    pub(crate) async fn plan_extraction(&mut self, session_id: Uuid) -> Result<()> {
        let Some(policy) = self.store.memory_extraction() else { return Ok(()) };
        let row: Option<StateRow> =
            write!(self, |conn| sqlx::query_as(STATE_SQL).bind(session_id).fetch_optional(conn).await?);
        let Some(state) = row.map(StateRow::into_state).transpose()? else { return Ok(()) };
        if !state.memory.extracts() {
            return Ok(());
        }
        let waiting = state.message_count - state.extracted_through_seq;
        if waiting <= 0 {
            return Ok(());
        }
        let now = self.now();
        let urgent = state.closed || waiting >= policy.every_messages;
        let idle = chrono::Duration::from_std(policy.idle).unwrap_or(chrono::Duration::MAX);
        let due = if urgent { now } else { state.last_activity_at.checked_add_signed(idle).unwrap_or(now) };
        if let Some(job_id) = state.extraction_job_id {
            let job: Option<(String, i64, i64)> = write!(self, |conn| {
                sqlx::query_as("SELECT status, run_at, attempt FROM job WHERE id = $1")
                    .bind(job_id)
                    .fetch_optional(conn)
                    .await?
            });
            match job {
                Some((status, run_at, attempt)) if status == JobStatus::Scheduled.as_str() && attempt == 0 => {
                    let run_at = time(run_at);
                    let wanted = if urgent {
                        run_at.min(now)
                    } else if run_at > now {
                        due
                    } else {
                        run_at
                    };
                    if wanted != run_at {
                        write!(self, |conn| {
                            sqlx::query("UPDATE job SET run_at = $2, updated_at = $3 WHERE id = $1")
                                .bind(job_id)
                                .bind(ms(wanted))
                                .bind(ms(now))
                                .execute(conn)
                                .await?
                                .rows_affected()
                        });
                        self.notify(Notification::JobsReady);
                    }
                    return Ok(());
                }
                // Running (or waiting to retry): it re-plans the session when it finishes.
                Some((status, _, _)) if !status.parse::<JobStatus>().is_ok_and(JobStatus::is_terminal) => {
                    return Ok(());
                }
                // Finished or deleted without clearing the slot (it failed for good): queue a new one.
                _ => {}
            }
        }
        let new = NewJob {
            agent_id: state.agent_id,
            session_id: None,
            kind: JobKind::MemoryExtract,
            priority: EXTRACTION_PRIORITY,
            payload: json!({"session_id": session_id}),
            max_attempts: policy.max_attempts,
            timeout_seconds: policy.timeout_seconds,
            run_at: Some(due),
            parent_job_id: None,
            delegation_depth: 0,
            idempotency_key: None,
            created_by: Some(EXTRACTION_CREATOR.to_owned()),
        };
        let (job, _) = self.insert_job(&new).await?;
        write!(self, |conn| {
            sqlx::query("UPDATE session SET extraction_job_id = $2 WHERE id = $1")
                .bind(session_id)
                .bind(job.id)
                .execute(conn)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// Records that `job_id` extracted the session's messages through `through_seq`, frees the session's
    /// job slot, marks a quiet session `idle`, and queues the next extraction for messages that arrived
    /// meanwhile.
    pub async fn finish_extraction(&mut self, session_id: Uuid, job_id: Uuid, through_seq: i64) -> Result<()> {
        let now = self.now();
        let idle_before = self
            .store
            .memory_extraction()
            .and_then(|policy| chrono::Duration::from_std(policy.idle).ok())
            .and_then(|idle| now.checked_sub_signed(idle))
            .map_or(i64::MIN, ms);
        write!(self, |conn| {
            sqlx::query(
                "UPDATE session SET \
                 extracted_through_seq = CASE WHEN extracted_through_seq < $2 THEN $2 ELSE extracted_through_seq END, \
                 extraction_job_id = CASE WHEN extraction_job_id = $3 THEN NULL ELSE extraction_job_id END, \
                 status = CASE WHEN status = 'active' AND last_activity_at <= $4 THEN 'idle' ELSE status END \
                 WHERE id = $1",
            )
            .bind(session_id)
            .bind(through_seq)
            .bind(job_id)
            .bind(idle_before)
            .execute(conn)
            .await?
            .rows_affected()
        });
        self.plan_extraction(session_id).await
    }
}
