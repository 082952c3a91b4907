//! Jobs: the table is the queue (SPEC §4).
//!
//! Every status change is a guarded `UPDATE … WHERE status = <expected>` that also appends a `job.state`
//! event in the same transaction; a database trigger refuses any pair outside
//! [`cortex_core::job::TRANSITIONS`]. This module makes transitions atomic and ordered; the job engine
//! (`cortex-jobs`) decides which transition to make.
//!
//! Session ordering: a job created while its session has unfinished work starts `pending`. Every
//! transaction that changes a job of a session re-checks that session at commit and promotes the oldest
//! waiting job when nothing else holds it, so no code path can forget to.

use std::collections::{HashMap, HashSet};

use cortex_core::Timestamp;
use cortex_core::checkpoint::SealedCheckpoint;
use cortex_core::event::EventType;
use cortex_core::job::{JobError, JobKind, JobStatus};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use uuid::Uuid;

use crate::engine::{TxConn, read, write};
use crate::events::NewEvent;
use crate::notify::Notification;
use crate::page::{Cursor, Page};
use crate::rows::{ms, opt_ms, opt_time, parse, time};
use crate::{Result, Store, StoreError, Tx};

macro_rules! job_columns {
    () => {
        "id, agent_id, session_id, kind, status, priority, payload, result, error, attempt, max_attempts, timeout_seconds, \
         run_at, resume, cancel_requested, claimed_by, heartbeat_at, started_at, attempt_started_at, attempt_elapsed_ms, \
         completed_at, checkpoint, checkpoint_crc, tokens_in, tokens_out, cost_usd, llm_calls, tool_calls, parent_job_id, \
         delegation_depth, approval_id, idempotency_key, created_by, created_at, updated_at"
    };
}

/// Rows per multi-row `INSERT` of [`Tx::insert_jobs`]: 14 parameters each stays under both engines'
/// bind limits.
const JOBS_PER_STATEMENT: usize = 1000;

/// Sorts claimed jobs the way claims pick them (SPEC §4.3): priority, then `run_at`, then id.
fn in_claim_order(jobs: &mut [Job]) {
    jobs.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.run_at.cmp(&b.run_at)).then(a.id.cmp(&b.id)));
}

/// A stored job.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub session_id: Option<Uuid>,
    pub kind: JobKind,
    pub status: JobStatus,
    pub priority: i32,
    pub payload: Value,
    pub result: Option<Value>,
    pub error: Option<JobError>,
    /// Number of attempts started; resumes after a park, approval or release do not count.
    pub attempt: u32,
    pub max_attempts: u32,
    pub timeout_seconds: u32,
    pub run_at: Timestamp,
    /// The next claim continues the current attempt instead of starting a new one.
    pub resume: bool,
    pub cancel_requested: bool,
    pub claimed_by: Option<Uuid>,
    pub heartbeat_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub attempt_started_at: Option<Timestamp>,
    /// Running time of the current attempt before its latest claim (time parked or waiting excluded).
    pub attempt_elapsed_ms: i64,
    pub completed_at: Option<Timestamp>,
    pub checkpoint: Option<String>,
    pub checkpoint_crc: Option<u32>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    pub llm_calls: i64,
    pub tool_calls: i64,
    pub parent_job_id: Option<Uuid>,
    pub delegation_depth: i32,
    pub approval_id: Option<Uuid>,
    pub idempotency_key: Option<String>,
    pub created_by: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Job {
    /// Milliseconds this attempt may still run.
    pub fn remaining_ms(&self) -> i64 {
        i64::from(self.timeout_seconds) * 1000 - self.attempt_elapsed_ms
    }

    /// The prompt of task-like jobs.
    pub fn prompt(&self) -> Option<&str> {
        self.payload.get("prompt").and_then(Value::as_str)
    }

    /// The job's input comes from someone who is not an operator (e.g. a non-owner chat user, set by
    /// whoever relays the message as `payload.untrusted_input`): the runtime frames it as data and gates
    /// risky tools behind a human for the whole turn (SPEC §17.6).
    pub fn untrusted_input(&self) -> bool {
        self.payload.get("untrusted_input").and_then(Value::as_bool).unwrap_or(false)
    }

    /// The job was started by someone with `read` access only (a chat user's `read` grant, set by the
    /// router as `payload.access`): the runtime refuses every tool call above p3 or with side effects
    /// (SPEC §8.8).
    pub fn read_only_access(&self) -> bool {
        self.payload.get("access").and_then(Value::as_str) == Some("read")
    }
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: Uuid,
    agent_id: Uuid,
    session_id: Option<Uuid>,
    kind: String,
    status: String,
    priority: i64,
    payload: Json<Value>,
    result: Option<Json<Value>>,
    error: Option<Json<Value>>,
    attempt: i64,
    max_attempts: i64,
    timeout_seconds: i64,
    run_at: i64,
    resume: bool,
    cancel_requested: bool,
    claimed_by: Option<Uuid>,
    heartbeat_at: Option<i64>,
    started_at: Option<i64>,
    attempt_started_at: Option<i64>,
    attempt_elapsed_ms: i64,
    completed_at: Option<i64>,
    checkpoint: Option<String>,
    checkpoint_crc: Option<i64>,
    tokens_in: i64,
    tokens_out: i64,
    cost_usd: f64,
    llm_calls: i64,
    tool_calls: i64,
    parent_job_id: Option<Uuid>,
    delegation_depth: i64,
    approval_id: Option<Uuid>,
    idempotency_key: Option<String>,
    created_by: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl JobRow {
    fn into_job(self) -> Result<Job> {
        let error = match self.error {
            Some(json) => Some(crate::rows::from_json("job.error", json.0)?),
            None => None,
        };
        Ok(Job {
            id: self.id,
            agent_id: self.agent_id,
            session_id: self.session_id,
            kind: parse("job.kind", &self.kind)?,
            status: parse("job.status", &self.status)?,
            priority: self.priority as i32,
            payload: self.payload.0,
            result: self.result.map(|json| json.0),
            error,
            attempt: self.attempt as u32,
            max_attempts: self.max_attempts as u32,
            timeout_seconds: self.timeout_seconds as u32,
            run_at: time(self.run_at),
            resume: self.resume,
            cancel_requested: self.cancel_requested,
            claimed_by: self.claimed_by,
            heartbeat_at: opt_time(self.heartbeat_at),
            started_at: opt_time(self.started_at),
            attempt_started_at: opt_time(self.attempt_started_at),
            attempt_elapsed_ms: self.attempt_elapsed_ms,
            completed_at: opt_time(self.completed_at),
            checkpoint: self.checkpoint,
            checkpoint_crc: self.checkpoint_crc.map(|crc| crc as u32),
            tokens_in: self.tokens_in,
            tokens_out: self.tokens_out,
            cost_usd: self.cost_usd,
            llm_calls: self.llm_calls,
            tool_calls: self.tool_calls,
            parent_job_id: self.parent_job_id,
            delegation_depth: self.delegation_depth as i32,
            approval_id: self.approval_id,
            idempotency_key: self.idempotency_key,
            created_by: self.created_by,
            created_at: time(self.created_at),
            updated_at: time(self.updated_at),
        })
    }
}

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub agent_id: Uuid,
    pub session_id: Option<Uuid>,
    pub kind: JobKind,
    pub priority: i32,
    pub payload: Value,
    pub max_attempts: u32,
    pub timeout_seconds: u32,
    /// Not claimable before this time; `None` means now.
    pub run_at: Option<Timestamp>,
    pub parent_job_id: Option<Uuid>,
    pub delegation_depth: i32,
    /// A retried request with the same key returns the existing job instead of creating another; the
    /// same key with a different request is refused.
    pub idempotency_key: Option<IdempotencyKey>,
    pub created_by: Option<String>,
}

impl NewJob {
    /// A task for `agent_id` with `payload` and the defaults of `POST /agents/{id}/jobs` (SPEC §4): priority
    /// 0, 3 attempts, 300 s, due now, no parent, no key. Callers change fields with struct update syntax.
    pub fn task(agent_id: Uuid, payload: Value) -> Self {
        Self {
            agent_id,
            session_id: None,
            kind: JobKind::Task,
            priority: 0,
            payload,
            max_attempts: 3,
            timeout_seconds: 300,
            run_at: None,
            parent_job_id: None,
            delegation_depth: 0,
            idempotency_key: None,
            created_by: None,
        }
    }
}

/// The job [`Tx::insert_jobs`] stores for `new` (no session, no key) under `id` at `now`: scheduled,
/// no attempt, nothing spent; what the database would return for the row.
fn scheduled_job(id: Uuid, new: &NewJob, now: i64) -> Job {
    Job {
        id,
        agent_id: new.agent_id,
        session_id: None,
        kind: new.kind,
        status: JobStatus::Scheduled,
        priority: new.priority,
        payload: new.payload.clone(),
        result: None,
        error: None,
        attempt: 0,
        max_attempts: new.max_attempts,
        timeout_seconds: new.timeout_seconds,
        run_at: time(new.run_at.map_or(now, ms)),
        resume: false,
        cancel_requested: false,
        claimed_by: None,
        heartbeat_at: None,
        started_at: None,
        attempt_started_at: None,
        attempt_elapsed_ms: 0,
        completed_at: None,
        checkpoint: None,
        checkpoint_crc: None,
        tokens_in: 0,
        tokens_out: 0,
        cost_usd: 0.0,
        llm_calls: 0,
        tool_calls: 0,
        parent_job_id: new.parent_job_id,
        delegation_depth: new.delegation_depth,
        approval_id: None,
        idempotency_key: None,
        created_by: new.created_by.clone(),
        created_at: time(now),
        updated_at: time(now),
    }
}

/// An idempotency key with the fingerprint of the request that used it (stored beside the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    /// SHA-256 (hex) of the request's canonical JSON.
    pub request_hash: String,
}

impl IdempotencyKey {
    /// The key for `request`, a JSON description of everything that makes the request what it is (the
    /// route and the body), fingerprinted in canonical form so field order does not matter.
    pub fn for_request(key: impl Into<String>, request: &Value) -> IdempotencyKey {
        let canonical = cortex_core::checkpoint::canonical_json(request);
        IdempotencyKey { key: key.into(), request_hash: hex::encode(Sha256::digest(canonical.as_bytes())) }
    }
}

/// Filters for [`Store::list_jobs`].
#[derive(Debug, Default, Clone)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub agent_id: Option<Uuid>,
    pub kind: Option<JobKind>,
    pub session_id: Option<Uuid>,
}

/// How a running attempt ended.
#[derive(Debug, Clone)]
pub enum AttemptEnd {
    Completed { result: Value },
    Failed { error: JobError },
    TimedOut { error: JobError },
}

/// Where a running job goes when it stops without ending its attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suspend {
    /// Graceful shutdown: back to the queue for any worker (SPEC §4.10).
    Release,
    /// Waiting for sub-agent jobs (SPEC §5.9).
    Park,
    /// Waiting for a human decision (SPEC §7.2).
    AwaitApproval,
}

impl Store {
    pub async fn get_job(&self, id: Uuid) -> Result<Job> {
        let row: Option<JobRow> = read!(self, |conn| {
            sqlx::query_as(concat!("SELECT ", job_columns!(), " FROM job WHERE id = $1"))
                .bind(id)
                .fetch_optional(conn)
                .await?
        });
        row.ok_or(StoreError::NotFound { entity: "job" })?.into_job()
    }

    /// Jobs newest first.
    pub async fn list_jobs(&self, filter: &JobFilter, cursor: Option<Cursor>, limit: usize) -> Result<Page<Job>> {
        let rows: Vec<JobRow> = read!(self, |conn| {
            let mut query = sqlx::QueryBuilder::new(concat!("SELECT ", job_columns!(), " FROM job WHERE 1 = 1"));
            if let Some(status) = filter.status {
                query.push(" AND status = ").push_bind(status.as_str());
            }
            if let Some(agent_id) = filter.agent_id {
                query.push(" AND agent_id = ").push_bind(agent_id);
            }
            if let Some(kind) = filter.kind {
                query.push(" AND kind = ").push_bind(kind.as_str());
            }
            if let Some(session_id) = filter.session_id {
                query.push(" AND session_id = ").push_bind(session_id);
            }
            if let Some(cursor) = cursor {
                query.push(" AND id < ").push_bind(cursor.0);
            }
            query.push(" ORDER BY id DESC LIMIT ").push_bind(limit as i64 + 1);
            query.build_query_as().fetch_all(conn).await?
        });
        let jobs = rows.into_iter().map(JobRow::into_job).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(jobs, limit, |job| job.id))
    }

    /// Number of jobs per status, for the `cortex_jobs_in_state` gauge.
    pub async fn count_jobs_by_status(&self) -> Result<Vec<(JobStatus, i64)>> {
        let rows: Vec<(String, i64)> = read!(self, |conn| {
            sqlx::query_as("SELECT status, COUNT(*) FROM job GROUP BY status").fetch_all(conn).await?
        });
        rows.into_iter().map(|(status, count)| Ok((parse("job.status", &status)?, count))).collect()
    }

    /// Running jobs owned by `worker_id` (the reaper's view of a dead worker).
    pub async fn running_jobs_of_worker(&self, worker_id: Uuid) -> Result<Vec<Job>> {
        let rows: Vec<JobRow> = read!(self, |conn| {
            sqlx::query_as(concat!("SELECT ", job_columns!(), " FROM job WHERE claimed_by = $1 AND status = 'running'"))
                .bind(worker_id)
                .fetch_all(conn)
                .await?
        });
        rows.into_iter().map(JobRow::into_job).collect()
    }

    /// Claims the best eligible job for `worker_id` (SPEC §4.3); see [`Store::claim_batch`].
    pub async fn claim_next(&self, worker_id: Uuid, ignore_quarantine: bool) -> Result<Option<Job>> {
        Ok(self.claim_batch(worker_id, 1, ignore_quarantine).await?.pop())
    }

    /// Claims up to `limit` jobs for `worker_id` in one transaction (SPEC §4.3): highest priority, then
    /// oldest `run_at`, then id, skipping agents that are inactive, quarantined (unless
    /// `ignore_quarantine`) or at their concurrency limit, and jobs whose session is busy; at most one job
    /// per session and no more jobs of an agent than it has free slots. Returns the jobs in claim order;
    /// fewer than `limit` (but at least one when anything was claimable) when the best candidates
    /// belonged to agents with fewer free slots, so callers with slots left simply claim again.
    pub async fn claim_batch(&self, worker_id: Uuid, limit: usize, ignore_quarantine: bool) -> Result<Vec<Job>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        if self.is_postgres() {
            self.claim_batch_postgres(worker_id, limit, ignore_quarantine).await
        } else {
            self.claim_batch_sqlite(worker_id, limit, ignore_quarantine).await
        }
    }

    /// SQLite: a read on the reader pool first skips the writer entirely when nothing is due, so idle
    /// claimers never queue behind running jobs' writes (a job that becomes due later sends a wake-up);
    /// then one claim statement ([`Tx::claim_jobs`]).
    async fn claim_batch_sqlite(&self, worker_id: Uuid, limit: usize, ignore_quarantine: bool) -> Result<Vec<Job>> {
        let due_by = ms(self.clock().now());
        let anything_due: bool = read!(self, |conn| {
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM job WHERE status = 'scheduled' AND run_at <= $1)")
                .bind(due_by)
                .fetch_one(conn)
                .await?
        });
        if !anything_due {
            return Ok(Vec::new());
        }
        let mut tx = self.begin().await?;
        let jobs = tx.claim_jobs(worker_id, limit, ignore_quarantine).await?;
        if !jobs.is_empty() {
            tx.commit().await?;
        }
        Ok(jobs)
    }

    /// PostgreSQL: claim rounds ([`Tx::claim_jobs`]), each in its own transaction. A round that admits
    /// nothing (every candidate's agent filled up or its session became busy meanwhile) is retried
    /// without those agents and jobs.
    async fn claim_batch_postgres(&self, worker_id: Uuid, limit: usize, ignore_quarantine: bool) -> Result<Vec<Job>> {
        let mut skip = ClaimSkips::default();
        for _ in 0..16 {
            let mut tx = self.begin().await?;
            match tx.claim_round_postgres(worker_id, limit, ignore_quarantine, &mut skip).await? {
                None => return Ok(Vec::new()),
                Some(jobs) if jobs.is_empty() => continue,
                Some(jobs) => {
                    tx.commit().await?;
                    return Ok(jobs);
                }
            }
        }
        Ok(Vec::new())
    }

    /// Running jobs whose owner is no longer alive (declared dead, stopped, or never registered).
    pub async fn orphaned_running_jobs(&self) -> Result<Vec<Job>> {
        let rows: Vec<JobRow> = read!(self, |conn| {
            sqlx::query_as(concat!(
                "SELECT ",
                job_columns!(),
                " FROM job WHERE status = 'running' AND NOT EXISTS \
                 (SELECT 1 FROM worker w WHERE w.id = job.claimed_by AND w.stopped_at IS NULL)"
            ))
            .fetch_all(conn)
            .await?
        });
        rows.into_iter().map(JobRow::into_job).collect()
    }

    /// Refreshes PostgreSQL's statistics of `job` when many rows changed since the last analysis, so the
    /// claim query keeps its index plan even where autovacuum is off or slow. Returns whether it ran.
    pub async fn refresh_job_statistics(&self) -> Result<bool> {
        let crate::engine::Engine::Postgres { pool, .. } = &self.inner.engine else { return Ok(false) };
        // A fifth of the table (and at least 1,000 rows): a bulk load of waiting jobs is far more, while
        // a busy queue's steady churn no longer pays a full `ANALYZE` every reaper round (at ≈ 3,000
        // jobs/s it was a third of the database's active samples; docs/PERFORMANCE.md section 12).
        let changed: Option<(i64, i64)> = sqlx::query_as(
            "SELECT n_mod_since_analyze, n_live_tup FROM pg_stat_user_tables WHERE relname = 'job' AND schemaname = current_schema()",
        )
        .fetch_optional(pool)
        .await?;
        let (changed, live) = changed.unwrap_or_default();
        if changed < (live / 5).max(1000) {
            return Ok(false);
        }
        sqlx::query("ANALYZE job").execute(pool).await?;
        Ok(true)
    }

    /// The earliest `run_at` among claimable-by-time jobs in the future, so workers can sleep until then.
    pub async fn next_run_at(&self) -> Result<Option<Timestamp>> {
        let next: Option<i64> = read!(self, |conn| {
            sqlx::query_scalar("SELECT MIN(run_at) FROM job WHERE status IN ('scheduled', 'retrying')")
                .fetch_one(conn)
                .await?
        });
        Ok(next.map(time))
    }
}

/// Agents and jobs an earlier PostgreSQL claim round of the same claim found full or busy.
#[derive(Default)]
struct ClaimSkips {
    full_agents: Vec<Uuid>,
    busy_jobs: Vec<Uuid>,
}

/// SQLite's batch completion ([`Tx::complete_attempts`]): `$1` is a JSON array of `[id in hex, result
/// as JSON text]` pairs, each job found by its primary key (the unary `+` keeps SQLite from walking the
/// worker's jobs through `job_claimed_by` and reading the list again for each of them).
const SQLITE_COMPLETE_BATCH: &str = concat!(
    "UPDATE job SET status = 'completed', result = done.job_result, error = NULL, completed_at = $2, \
     claimed_by = NULL, attempt_elapsed_ms = attempt_elapsed_ms + ($2 - COALESCE(attempt_started_at, $2)), \
     cancel_requested = FALSE, updated_at = $2 \
     FROM (SELECT unhex(value ->> 0) AS job_id, value ->> 1 AS job_result FROM json_each($1)) AS done \
     WHERE job.id = done.job_id AND +job.status = 'running' AND +job.claimed_by = $3 \
       AND NOT EXISTS (SELECT 1 FROM budget_reservation r WHERE r.job_id = job.id) RETURNING ",
    job_columns!()
);

/// SQLite's claim ([`Tx::claim_jobs`]): `$1` worker, `$2` now, `$3` ignore quarantine, `$4` limit.
const SQLITE_CLAIM: &str = concat!(
    "WITH candidate AS (SELECT j.id, j.agent_id, j.session_id, j.priority, j.run_at, \
       a.max_concurrent_jobs - (SELECT COUNT(*) FROM job r WHERE r.agent_id = j.agent_id AND r.status = 'running') AS free \
       FROM job j INDEXED BY job_claim JOIN agent a ON a.id = j.agent_id \
       WHERE j.status = 'scheduled' AND j.run_at <= $2 AND a.status = 'active' \
         AND ($3 OR a.health_state <> 'quarantined') \
         AND (SELECT COUNT(*) FROM job r WHERE r.agent_id = j.agent_id AND r.status = 'running') < a.max_concurrent_jobs \
         AND (j.session_id IS NULL OR NOT EXISTS (SELECT 1 FROM job o WHERE o.session_id = j.session_id AND o.id <> j.id \
              AND (o.status IN ('running', 'waiting_for_approval') OR (o.status = 'pending' AND o.resume)))) \
       ORDER BY j.priority DESC, j.run_at, j.id LIMIT $4), \
     ranked AS (SELECT id, free, \
       ROW_NUMBER() OVER (PARTITION BY agent_id ORDER BY priority DESC, run_at, id) AS in_agent, \
       ROW_NUMBER() OVER (PARTITION BY COALESCE(session_id, id) ORDER BY priority DESC, run_at, id) AS in_session \
       FROM candidate) \
     UPDATE job SET status = 'running', claimed_by = $1, heartbeat_at = $2, attempt_started_at = $2, \
     started_at = COALESCE(started_at, $2), attempt = attempt + CASE WHEN resume THEN 0 ELSE 1 END, \
     attempt_elapsed_ms = CASE WHEN resume THEN attempt_elapsed_ms ELSE 0 END, resume = FALSE, updated_at = $2 \
     WHERE id IN (SELECT id FROM ranked WHERE in_agent <= free AND in_session = 1) \
     RETURNING ",
    job_columns!()
);

/// PostgreSQL's count of free slots of the agents `$1` (after their claim locks were taken).
macro_rules! free_slots {
    () => {
        "SELECT a.id, a.max_concurrent_jobs - (SELECT COUNT(*) FROM job r WHERE r.agent_id = a.id AND r.status = 'running') \
         FROM agent a WHERE a.id = ANY($1)"
    };
}
const FREE_SLOTS: &str = free_slots!();
/// [`FREE_SLOTS`] and the sessions of `$2` that are busy (a `NULL` count).
const FREE_SLOTS_AND_BUSY_SESSIONS: &str = concat!(
    free_slots!(),
    " UNION ALL SELECT DISTINCT o.session_id, NULL::bigint FROM job o WHERE o.session_id = ANY($2) \
     AND (o.status IN ('running', 'waiting_for_approval') OR (o.status = 'pending' AND o.resume))"
);

impl Tx {
    /// Claims up to `limit` jobs for `worker_id` in this transaction (SPEC §4.3), with the rules of
    /// [`Store::claim_batch`] but a single round: on PostgreSQL, when every candidate's agent filled up or
    /// its session became busy meanwhile it claims nothing (the caller's claim loop tries again). Lets a
    /// worker commit the completions of its finished jobs and the claims for their slots in one
    /// transaction (one commit, one WAL flush, for both).
    pub async fn claim_jobs(&mut self, worker_id: Uuid, limit: usize, ignore_quarantine: bool) -> Result<Vec<Job>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        if self.store.is_postgres() {
            let round =
                self.claim_round_postgres(worker_id, limit, ignore_quarantine, &mut ClaimSkips::default()).await?;
            return Ok(round.unwrap_or_default());
        }
        // SQLite has a single writer connection, so one statement is atomic against every other claimer:
        // the best `limit` eligible candidates, ranked within their agent (admitted while the agent has
        // free slots) and their session (only the first). The candidates are read in claim order from
        // `job_claim`, the index of waiting jobs only; without statistics SQLite would rather look them up
        // through `job_live` and sort them all, so the index is named.
        let now = ms(self.now());
        let rows: Vec<JobRow> = write!(self, |conn| {
            sqlx::query_as(SQLITE_CLAIM)
                .bind(worker_id)
                .bind(now)
                .bind(ignore_quarantine)
                .bind(limit as i64)
                .fetch_all(conn)
                .await?
        });
        let mut jobs = rows.into_iter().map(JobRow::into_job).collect::<Result<Vec<_>>>()?;
        in_claim_order(&mut jobs);
        for job in &jobs {
            self.emit_state(job, JobStatus::Scheduled, None);
        }
        Ok(jobs)
    }

    /// One PostgreSQL claim round in this transaction: `SKIP LOCKED` picks up to `limit` candidates
    /// without blocking other claimers and, in the same statement, takes advisory locks on their agents
    /// (in id order, so two claimers never wait on each other in a cycle); the next statement's count
    /// of running jobs and its session checks are then exact across processes. One `UPDATE … WHERE id =
    /// ANY` claims the admitted ones and their events go in one multi-row insert at commit. `None` when
    /// there was no candidate; an empty list when candidates were found but none admitted (recorded in
    /// `skip`).
    async fn claim_round_postgres(
        &mut self,
        worker_id: Uuid,
        limit: usize,
        ignore_quarantine: bool,
        skip: &mut ClaimSkips,
    ) -> Result<Option<Vec<Job>>> {
        let now = ms(self.now());
        let TxConn::Postgres(conn) = &mut self.conn else { unreachable!("postgres store has postgres transactions") };
        // The agents that may not start a job are worked out once, from the running jobs (few), and
        // excluded with one hashed look-up: a per-candidate count of the agent's running jobs made the
        // planner scan and count for every scheduled row (466 ms per claim with 18,000 waiting). The same
        // statement then locks the candidates' agents, in id order (`locked` is read by the result, so it
        // runs, over `candidate` sorted by agent, before the first row is returned).
        let candidates: Vec<(Uuid, Uuid, Option<Uuid>)> = sqlx::query_as(
            "WITH running AS MATERIALIZED (SELECT agent_id, COUNT(*) AS n FROM job WHERE status = 'running' GROUP BY agent_id), \
             closed AS MATERIALIZED (SELECT a.id FROM agent a LEFT JOIN running r ON r.agent_id = a.id \
               WHERE a.status <> 'active' OR (NOT $2 AND a.health_state = 'quarantined') \
                 OR COALESCE(r.n, 0) >= a.max_concurrent_jobs), \
             candidate AS MATERIALIZED (SELECT j.id, j.agent_id, j.session_id, j.priority, j.run_at FROM job j \
               WHERE j.status = 'scheduled' AND j.run_at <= $1 \
                 AND NOT (j.agent_id = ANY($3)) AND NOT (j.id = ANY($4)) \
                 AND j.agent_id NOT IN (SELECT id FROM closed) \
               ORDER BY j.priority DESC, j.run_at, j.id LIMIT $5 FOR UPDATE OF j SKIP LOCKED), \
             locked AS MATERIALIZED (SELECT COUNT(pg_advisory_xact_lock(hashtextextended(agent_id::text, 7))) AS n \
               FROM (SELECT DISTINCT agent_id FROM candidate ORDER BY agent_id) AS agents) \
             SELECT c.id, c.agent_id, c.session_id FROM candidate c, locked \
             ORDER BY c.priority DESC, c.run_at, c.id",
        )
        .bind(now)
        .bind(ignore_quarantine)
        .bind(&skip.full_agents)
        .bind(&skip.busy_jobs)
        .bind(limit as i64)
        .fetch_all(&mut **conn)
        .await?;
        if candidates.is_empty() {
            return Ok(None);
        }
        let mut agents: Vec<Uuid> = candidates.iter().map(|(_, agent_id, _)| *agent_id).collect();
        agents.sort_unstable();
        agents.dedup();
        let sessions: Vec<Uuid> = candidates.iter().filter_map(|(_, _, session_id)| *session_id).collect();
        // A new statement, so a new snapshot, taken after the locks: it sees every claim committed by
        // whoever held them before. Rows with a free count are the agents; the others are the
        // candidates' sessions that are busy (that half only when a candidate has a session: with an
        // empty list it still cost a quarter of a millisecond per claim).
        let slots: Vec<(Uuid, Option<i64>)> = if sessions.is_empty() {
            sqlx::query_as(FREE_SLOTS).bind(&agents).fetch_all(&mut **conn).await?
        } else {
            sqlx::query_as(FREE_SLOTS_AND_BUSY_SESSIONS).bind(&agents).bind(&sessions).fetch_all(&mut **conn).await?
        };
        let mut free: HashMap<Uuid, i64> = HashMap::with_capacity(agents.len());
        let mut taken_sessions: Vec<Uuid> = Vec::new();
        for (id, slots) in slots {
            match slots {
                Some(slots) => {
                    free.insert(id, slots);
                }
                None => taken_sessions.push(id),
            }
        }
        let mut admitted: Vec<Uuid> = Vec::with_capacity(candidates.len());
        for (job_id, agent_id, session_id) in candidates {
            let slots = free.entry(agent_id).or_insert(0);
            if *slots <= 0 {
                if !skip.full_agents.contains(&agent_id) {
                    skip.full_agents.push(agent_id);
                }
                continue;
            }
            if let Some(session_id) = session_id {
                if taken_sessions.contains(&session_id) {
                    skip.busy_jobs.push(job_id);
                    continue;
                }
                taken_sessions.push(session_id);
            }
            *slots -= 1;
            admitted.push(job_id);
        }
        if admitted.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let rows: Vec<JobRow> = sqlx::query_as(concat!(
            "UPDATE job SET status = 'running', claimed_by = $1, heartbeat_at = $2, attempt_started_at = $2, \
             started_at = COALESCE(started_at, $2), attempt = attempt + CASE WHEN resume THEN 0 ELSE 1 END, \
             attempt_elapsed_ms = CASE WHEN resume THEN attempt_elapsed_ms ELSE 0 END, resume = FALSE, updated_at = $2 \
             WHERE id = ANY($3) RETURNING ",
            job_columns!()
        ))
        .bind(worker_id)
        .bind(now)
        .bind(&admitted)
        .fetch_all(&mut **conn)
        .await?;
        let mut jobs = rows.into_iter().map(JobRow::into_job).collect::<Result<Vec<_>>>()?;
        in_claim_order(&mut jobs);
        for job in &jobs {
            self.emit_state(job, JobStatus::Scheduled, None);
        }
        Ok(Some(jobs))
    }

    /// Creates a job in one transaction with whatever else the caller writes. Returns the job and
    /// whether it was created now (`false`: an earlier request with the same idempotency key made it).
    ///
    /// A job of a session first locks the session row, so concurrent jobs of one session are created one
    /// after the other: each sees the ones before it (and starts `pending` behind them), and ids — hence
    /// the order the session's jobs run in — follow the order of the messages written with them.
    pub async fn insert_job(&mut self, new: &NewJob) -> Result<(Job, bool)> {
        // A session this transaction created is invisible to others until commit and has no jobs yet.
        let existing_session = new.session_id.filter(|id| !self.created_sessions.contains(id));
        if let Some(session_id) = existing_session {
            self.lock_session(session_id).await?;
        }
        if let Some(key) = &new.idempotency_key
            && let Some(existing) = self.job_with_key(new, key).await?
        {
            return Ok((existing, false));
        }
        let id = cortex_core::new_id();
        let now = self.now();
        let session_busy: bool = match existing_session {
            Some(session_id) => write!(self, |conn| {
                sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM job WHERE session_id = $1 \
                     AND status IN ('pending', 'scheduled', 'running', 'waiting_for_approval', 'retrying'))",
                )
                .bind(session_id)
                .fetch_one(conn)
                .await?
            }),
            None => false,
        };
        let status = if session_busy { JobStatus::Pending } else { JobStatus::Scheduled };
        let run_at = new.run_at.unwrap_or(now);
        let row: Option<JobRow> = write!(self, |conn| {
            sqlx::query_as(concat!(
                "INSERT INTO job (id, agent_id, session_id, kind, status, priority, payload, max_attempts, timeout_seconds, run_at, \
                 parent_job_id, delegation_depth, idempotency_key, idempotency_hash, created_by, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16) \
                 ON CONFLICT (agent_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING ",
                job_columns!()
            ))
            .bind(id)
            .bind(new.agent_id)
            .bind(new.session_id)
            .bind(new.kind.as_str())
            .bind(status.as_str())
            .bind(i64::from(new.priority))
            .bind(Json(&new.payload))
            .bind(i64::from(new.max_attempts))
            .bind(i64::from(new.timeout_seconds))
            .bind(ms(run_at))
            .bind(new.parent_job_id)
            .bind(i64::from(new.delegation_depth))
            .bind(new.idempotency_key.as_ref().map(|key| key.key.as_str()))
            .bind(new.idempotency_key.as_ref().map(|key| key.request_hash.as_str()))
            .bind(new.created_by.as_deref())
            .bind(ms(now))
            .fetch_optional(conn)
            .await?
        });
        let Some(row) = row else {
            // A concurrent request with the same key committed first (the insert waited for it).
            let key = new.idempotency_key.as_ref().ok_or(StoreError::StaleState { entity: "job" })?;
            let existing = self.job_with_key(new, key).await?.ok_or(StoreError::StaleState { entity: "job" })?;
            return Ok((existing, false));
        };
        let job = row.into_job()?;
        self.emit(NewEvent {
            session_id: job.session_id,
            ..NewEvent::new(
                job.agent_id,
                Some(job.id),
                EventType::JobState,
                json!({"from": null, "to": status, "attempt": 0}),
            )
        });
        if status == JobStatus::Scheduled {
            self.notify(Notification::JobsReady);
        }
        Ok((job, true))
    }

    /// Creates many jobs at once: jobs without a session or idempotency key (a bulk load) go in together,
    /// the others one by one through [`Tx::insert_job`] (they need their session lock and key look-up).
    /// Returns the jobs in the order given, each with whether it was created now.
    ///
    /// Bulk jobs are written by [`Tx::insert_plain_jobs`] (PostgreSQL: one statement for all of them) and
    /// each gets its `job.state` event like a single insert. Their ids are new to everyone, so no reader
    /// can be waiting on one of them: the events announce themselves with one notification per agent
    /// instead of one per job (see [`crate::events::flush`]).
    pub async fn insert_jobs(&mut self, jobs: &[NewJob]) -> Result<Vec<(Job, bool)>> {
        let mut created: Vec<Option<(Job, bool)>> = vec![None; jobs.len()];
        let mut plain: Vec<(usize, Uuid)> = Vec::with_capacity(jobs.len());
        for (index, new) in jobs.iter().enumerate() {
            if new.session_id.is_some() || new.idempotency_key.is_some() {
                created[index] = Some(self.insert_job(new).await?);
            } else {
                plain.push((index, cortex_core::new_id()));
            }
        }
        if plain.is_empty() {
            return created.into_iter().map(|job| job.ok_or(StoreError::StaleState { entity: "job" })).collect();
        }
        let now = ms(self.now());
        self.insert_plain_jobs(jobs, &plain, now).await?;
        let state = json!({"from": null, "to": JobStatus::Scheduled, "attempt": 0});
        self.bulk_jobs.reserve(plain.len());
        for (index, id) in &plain {
            let job = scheduled_job(*id, &jobs[*index], now);
            self.emit(NewEvent::new(job.agent_id, Some(job.id), EventType::JobState, state.clone()));
            self.bulk_jobs.insert(job.id);
            created[*index] = Some((job, true));
        }
        self.notify(Notification::JobsReady);
        created.into_iter().map(|job| job.ok_or(StoreError::StaleState { entity: "job" })).collect()
    }

    /// Inserts `jobs[index]` as a `scheduled` job with id `id` for every `(index, id)` of `plain` (jobs
    /// without a session or key), created at `now`. PostgreSQL: one `INSERT … SELECT FROM unnest(…)` of
    /// typed arrays, whatever the count (one statement to plan, thirteen parameters). SQLite: multi-row
    /// `INSERT … VALUES` of [`JOBS_PER_STATEMENT`] rows, the same prepared statement for every full batch.
    /// Nothing is read back: every column of a new job follows from its `NewJob` ([`scheduled_job`]), and
    /// reading 5,000 rows back cost SQLite about as much as writing them (each row is copied value by value
    /// and sent across to the caller's task; docs/PERFORMANCE.md section 18).
    async fn insert_plain_jobs(&mut self, jobs: &[NewJob], plain: &[(usize, Uuid)], now: i64) -> Result<()> {
        let scheduled = JobStatus::Scheduled.as_str();
        match &mut self.conn {
            TxConn::Postgres(conn) => {
                let count = plain.len();
                let mut ids = Vec::with_capacity(count);
                let mut agent_ids = Vec::with_capacity(count);
                let mut kinds = Vec::with_capacity(count);
                let mut priorities = Vec::with_capacity(count);
                let mut payloads = Vec::with_capacity(count);
                let mut max_attempts = Vec::with_capacity(count);
                let mut timeouts = Vec::with_capacity(count);
                let mut run_ats = Vec::with_capacity(count);
                let mut parents = Vec::with_capacity(count);
                let mut depths = Vec::with_capacity(count);
                let mut created_by = Vec::with_capacity(count);
                for (index, id) in plain {
                    let new = &jobs[*index];
                    ids.push(*id);
                    agent_ids.push(new.agent_id);
                    kinds.push(new.kind.as_str());
                    priorities.push(i64::from(new.priority));
                    payloads.push(Json(&new.payload));
                    max_attempts.push(i64::from(new.max_attempts));
                    timeouts.push(i64::from(new.timeout_seconds));
                    run_ats.push(new.run_at.map_or(now, ms));
                    parents.push(new.parent_job_id);
                    depths.push(i64::from(new.delegation_depth));
                    created_by.push(new.created_by.as_deref());
                }
                sqlx::query(
                    "INSERT INTO job (id, agent_id, kind, status, priority, payload, max_attempts, timeout_seconds, run_at, \
                     parent_job_id, delegation_depth, created_by, created_at, updated_at) \
                     SELECT id, agent_id, kind, $12, priority, payload, max_attempts, timeout_seconds, run_at, \
                     parent_job_id, delegation_depth, created_by, $13, $13 \
                     FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::jsonb[], $6::bigint[], $7::bigint[], \
                     $8::bigint[], $9::uuid[], $10::bigint[], $11::text[]) \
                     AS t(id, agent_id, kind, priority, payload, max_attempts, timeout_seconds, run_at, parent_job_id, \
                     delegation_depth, created_by)",
                )
                .bind(ids)
                .bind(agent_ids)
                .bind(kinds)
                .bind(priorities)
                .bind(payloads)
                .bind(max_attempts)
                .bind(timeouts)
                .bind(run_ats)
                .bind(parents)
                .bind(depths)
                .bind(created_by)
                .bind(scheduled)
                .bind(now)
                .execute(&mut **conn)
                .await?;
            }
            TxConn::Sqlite(conn) => {
                for batch in plain.chunks(JOBS_PER_STATEMENT) {
                    let mut query = sqlx::QueryBuilder::new(
                        "INSERT INTO job (id, agent_id, kind, status, priority, payload, max_attempts, timeout_seconds, run_at, \
                         parent_job_id, delegation_depth, created_by, created_at, updated_at) ",
                    );
                    query.push_values(batch, |mut row, (index, id)| {
                        let new = &jobs[*index];
                        row.push_bind(*id)
                            .push_bind(new.agent_id)
                            .push_bind(new.kind.as_str())
                            .push_bind(scheduled)
                            .push_bind(i64::from(new.priority))
                            .push_bind(Json(&new.payload))
                            .push_bind(i64::from(new.max_attempts))
                            .push_bind(i64::from(new.timeout_seconds))
                            .push_bind(new.run_at.map_or(now, ms))
                            .push_bind(new.parent_job_id)
                            .push_bind(i64::from(new.delegation_depth))
                            .push_bind(new.created_by.as_deref())
                            .push_bind(now)
                            .push_bind(now);
                    });
                    query.build().execute(&mut **conn).await?;
                }
            }
        }
        Ok(())
    }

    /// The agent's job created with `key`, if any; `IdempotencyConflict` when it was created by another
    /// request (a different fingerprint, or a job of another kind for keys stored before fingerprints).
    async fn job_with_key(&mut self, new: &NewJob, key: &IdempotencyKey) -> Result<Option<Job>> {
        let row: Option<(JobRow, Option<String>)> = write!(self, |conn| {
            let found: Option<(Uuid, Option<String>)> =
                sqlx::query_as("SELECT id, idempotency_hash FROM job WHERE agent_id = $1 AND idempotency_key = $2")
                    .bind(new.agent_id)
                    .bind(&key.key)
                    .fetch_optional(&mut *conn)
                    .await?;
            match found {
                Some((id, hash)) => {
                    let row: JobRow = sqlx::query_as(concat!("SELECT ", job_columns!(), " FROM job WHERE id = $1"))
                        .bind(id)
                        .fetch_one(&mut *conn)
                        .await?;
                    Some((row, hash))
                }
                None => None,
            }
        });
        let Some((row, hash)) = row else { return Ok(None) };
        let job = row.into_job()?;
        let same_request = hash.as_ref().map_or(job.kind == new.kind, |hash| *hash == key.request_hash);
        if !same_request {
            return Err(StoreError::IdempotencyConflict { key: key.key.clone() });
        }
        Ok(Some(job))
    }

    /// Holds the session row until commit (PostgreSQL; SQLite transactions are serialised anyway).
    async fn lock_session(&mut self, session_id: Uuid) -> Result<()> {
        if let TxConn::Postgres(conn) = &mut self.conn {
            sqlx::query("SELECT id FROM session WHERE id = $1 FOR UPDATE")
                .bind(session_id)
                .fetch_optional(&mut **conn)
                .await?;
        }
        Ok(())
    }

    /// Reads a job inside the transaction (PostgreSQL: locks the row until commit).
    pub async fn lock_job(&mut self, id: Uuid) -> Result<Job> {
        let row: Option<JobRow> = match &mut self.conn {
            TxConn::Sqlite(conn) => {
                sqlx::query_as(concat!("SELECT ", job_columns!(), " FROM job WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&mut **conn)
                    .await?
            }
            TxConn::Postgres(conn) => {
                sqlx::query_as(concat!("SELECT ", job_columns!(), " FROM job WHERE id = $1 FOR UPDATE"))
                    .bind(id)
                    .fetch_optional(&mut **conn)
                    .await?
            }
        };
        row.ok_or(StoreError::NotFound { entity: "job" })?.into_job()
    }

    /// Ends the running attempt owned by `worker_id`. Fails with `StaleState` when the worker no longer
    /// owns the job (it was reaped or cancelled meanwhile), so a late writer can never overwrite. Budget
    /// reservations the attempt left open (a call cut off by cancel, timeout or a dead worker) are released
    /// in the same transaction.
    pub async fn end_attempt(&mut self, job_id: Uuid, worker_id: Uuid, end: &AttemptEnd) -> Result<Job> {
        self.release_open_reservations(&[job_id]).await?;
        let now = ms(self.now());
        let (status, result, error) = match end {
            AttemptEnd::Completed { result } => (JobStatus::Completed, Some(Json(result.clone())), None),
            AttemptEnd::Failed { error } => (JobStatus::Failed, None, Some(crate::rows::to_json(error))),
            AttemptEnd::TimedOut { error } => (JobStatus::TimedOut, None, Some(crate::rows::to_json(error))),
        };
        let row: Option<JobRow> = write!(self, |conn| {
            sqlx::query_as(concat!(
                "UPDATE job SET status = $3, result = $4, error = $5, completed_at = $6, claimed_by = NULL, \
                 attempt_elapsed_ms = attempt_elapsed_ms + ($6 - COALESCE(attempt_started_at, $6)), cancel_requested = FALSE, \
                 updated_at = $6 WHERE id = $1 AND status = 'running' AND claimed_by = $2 RETURNING ",
                job_columns!()
            ))
            .bind(job_id)
            .bind(worker_id)
            .bind(status.as_str())
            .bind(result)
            .bind(error)
            .bind(now)
            .fetch_optional(conn)
            .await?
        });
        let job = row.ok_or(StoreError::StaleState { entity: "job" })?.into_job()?;
        self.emit_state(&job, JobStatus::Running, job.error.as_ref());
        // A running slot of the agent is free: jobs held back by its concurrency limit may go now.
        self.notify(Notification::JobsReady);
        if job.status == JobStatus::Completed {
            // A chat-platform message's answer leaves through the outbox, committed with the completion.
            self.queue_channel_reply(&job).await?;
        }
        Ok(job)
    }

    /// Ends several running attempts of `worker_id` as completed, each with its result, in this
    /// transaction: what [`Tx::end_attempt`] does for one, with the same guard, events and notification.
    /// The whole batch is one guarded `UPDATE … FROM` over the list on either engine, instead of two
    /// statements per job (on SQLite every statement is a hand-off to the connection's thread and back);
    /// only jobs holding an open budget reservation (a call that ended without settling, rare) cost two
    /// more: their release, then their own `UPDATE`. Fails with `StaleState` when any of the jobs is no
    /// longer this worker's (the caller drops the transaction and completes them one by one). Returns the
    /// jobs in `done` order.
    pub async fn complete_attempts(&mut self, worker_id: Uuid, done: &[(Uuid, Value)]) -> Result<Vec<Job>> {
        let ids: Vec<Uuid> = done.iter().map(|(job_id, _)| *job_id).collect();
        let now = ms(self.now());
        let mut rows = self.complete_unreserved(worker_id, done, now).await?;
        if rows.len() < done.len() {
            // Left out: jobs no longer this worker's, and jobs holding an open reservation (a call that
            // ended without settling). Release those first, so this transaction locks ledger rows before
            // their job rows (the order a late settlement uses), then end them.
            let ended: HashSet<Uuid> = rows.iter().map(|row| row.id).collect();
            let rest: Vec<(Uuid, Value)> = done.iter().filter(|(job_id, _)| !ended.contains(job_id)).cloned().collect();
            let rest_ids: Vec<Uuid> = rest.iter().map(|(job_id, _)| *job_id).collect();
            self.release_open_reservations(&rest_ids).await?;
            rows.extend(self.complete_unreserved(worker_id, &rest, now).await?);
        }
        if rows.len() != done.len() {
            return Err(StoreError::StaleState { entity: "job" });
        }
        let mut by_id: HashMap<Uuid, Job> =
            rows.into_iter().map(|row| row.into_job().map(|job| (job.id, job))).collect::<Result<_>>()?;
        let mut jobs = Vec::with_capacity(done.len());
        for job_id in &ids {
            let job = by_id.remove(job_id).ok_or(StoreError::StaleState { entity: "job" })?;
            self.emit_state(&job, JobStatus::Running, None);
            self.queue_channel_reply(&job).await?;
            jobs.push(job);
        }
        self.notify(Notification::JobsReady);
        Ok(jobs)
    }

    /// One guarded `UPDATE` ending the attempts of `done` that are still this worker's `running` jobs and
    /// hold no open budget reservation; returns the rows it ended.
    async fn complete_unreserved(&mut self, worker_id: Uuid, done: &[(Uuid, Value)], now: i64) -> Result<Vec<JobRow>> {
        Ok(match &mut self.conn {
            TxConn::Postgres(conn) => {
                let ids: Vec<Uuid> = done.iter().map(|(job_id, _)| *job_id).collect();
                let results: Vec<Json<&Value>> = done.iter().map(|(_, result)| Json(result)).collect();
                sqlx::query_as(concat!(
                    "UPDATE job SET status = 'completed', result = done.job_result, error = NULL, completed_at = $3, \
                     claimed_by = NULL, attempt_elapsed_ms = attempt_elapsed_ms + ($3 - COALESCE(attempt_started_at, $3)), \
                     cancel_requested = FALSE, updated_at = $3 FROM unnest($1::uuid[], $2::jsonb[]) AS done(job_id, job_result) \
                     WHERE job.id = done.job_id AND job.status = 'running' AND job.claimed_by = $4 \
                       AND NOT EXISTS (SELECT 1 FROM budget_reservation r WHERE r.job_id = job.id) RETURNING ",
                    job_columns!()
                ))
                .bind(&ids)
                .bind(&results)
                .bind(now)
                .bind(worker_id)
                .fetch_all(&mut **conn)
                .await?
            }
            TxConn::Sqlite(conn) => {
                // One JSON array of `[id in hex, result as JSON text]` pairs: the text is stored as given.
                let pairs: Vec<Value> = done
                    .iter()
                    .map(|(job_id, result)| json!([job_id.simple().to_string(), result.to_string()]))
                    .collect();
                sqlx::query_as(SQLITE_COMPLETE_BATCH)
                    .bind(Value::from(pairs).to_string())
                    .bind(now)
                    .bind(worker_id)
                    .fetch_all(&mut **conn)
                    .await?
            }
        })
    }

    /// Suspends a running job without ending its attempt; the next claim resumes it. Like
    /// [`Tx::end_attempt`] it releases reservations left open (a call aborted at shutdown).
    pub async fn suspend(
        &mut self,
        job_id: Uuid,
        worker_id: Uuid,
        how: Suspend,
        approval_id: Option<Uuid>,
    ) -> Result<Job> {
        self.release_open_reservations(&[job_id]).await?;
        let now = ms(self.now());
        let to = match how {
            Suspend::Release => JobStatus::Scheduled,
            Suspend::Park => JobStatus::Pending,
            Suspend::AwaitApproval => JobStatus::WaitingForApproval,
        };
        let row: Option<JobRow> = write!(self, |conn| {
            sqlx::query_as(concat!(
                "UPDATE job SET status = $3, claimed_by = NULL, resume = TRUE, approval_id = COALESCE($4, approval_id), \
                 attempt_elapsed_ms = attempt_elapsed_ms + ($5 - COALESCE(attempt_started_at, $5)), run_at = $5, updated_at = $5 \
                 WHERE id = $1 AND status = 'running' AND claimed_by = $2 RETURNING ",
                job_columns!()
            ))
            .bind(job_id)
            .bind(worker_id)
            .bind(to.as_str())
            .bind(approval_id)
            .bind(now)
            .fetch_optional(conn)
            .await?
        });
        let job = row.ok_or(StoreError::StaleState { entity: "job" })?.into_job()?;
        self.emit_state(&job, JobStatus::Running, None);
        // Released (claimable again) or not, the job no longer holds one of its agent's running slots.
        self.notify(Notification::JobsReady);
        Ok(job)
    }

    /// Moves a job that is not running: `from` must match. Used for retry scheduling, dead-lettering,
    /// promotion, resumption after a decision and cancellation of queued work.
    pub async fn move_job(
        &mut self,
        job_id: Uuid,
        from: JobStatus,
        to: JobStatus,
        change: &QueuedChange,
    ) -> Result<Job> {
        let now = ms(self.now());
        let ends_work = matches!(to, JobStatus::Failed | JobStatus::TimedOut | JobStatus::DeadLetter);
        let row: Option<JobRow> = write!(self, |conn| {
            sqlx::query_as(concat!(
                "UPDATE job SET status = $3, run_at = COALESCE($4, run_at), timeout_seconds = COALESCE($5, timeout_seconds), \
                 max_attempts = COALESCE($6, max_attempts), error = CASE WHEN $7 THEN $8 ELSE error END, \
                 resume = CASE WHEN $9 THEN TRUE ELSE resume END, \
                 completed_at = CASE WHEN $10 THEN $11 WHEN $3 = 'retrying' THEN NULL ELSE completed_at END, updated_at = $11 \
                 WHERE id = $1 AND status = $2 RETURNING ",
                job_columns!()
            ))
            .bind(job_id)
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(opt_ms(change.run_at))
            .bind(change.timeout_seconds.map(i64::from))
            .bind(change.max_attempts.map(i64::from))
            .bind(change.error.is_some())
            .bind(change.error.as_ref().map(crate::rows::to_json))
            .bind(change.resume)
            .bind(ends_work)
            .bind(now)
            .fetch_optional(conn)
            .await?
        });
        let job = row.ok_or(StoreError::StaleState { entity: "job" })?.into_job()?;
        self.emit_state(&job, from, change.error.as_ref());
        // Claimers re-read the next due time on wake-up, so a new backoff deadline is seen too.
        if matches!(to, JobStatus::Scheduled | JobStatus::Retrying) {
            self.notify(Notification::JobsReady);
        }
        Ok(job)
    }

    /// Moves every `retrying` job whose backoff has elapsed to `scheduled`.
    pub async fn promote_due_retries(&mut self) -> Result<Vec<Job>> {
        let now = ms(self.now());
        let rows: Vec<JobRow> = write!(self, |conn| {
            sqlx::query_as(concat!(
                "UPDATE job SET status = 'scheduled', updated_at = $1 WHERE status = 'retrying' AND run_at <= $1 RETURNING ",
                job_columns!()
            ))
            .bind(now)
            .fetch_all(conn)
            .await?
        });
        let jobs = rows.into_iter().map(JobRow::into_job).collect::<Result<Vec<_>>>()?;
        for job in &jobs {
            self.emit_state(job, JobStatus::Retrying, None);
        }
        if !jobs.is_empty() {
            self.notify(Notification::JobsReady);
        }
        Ok(jobs)
    }

    /// Records that an operator wants a running job stopped; its worker is woken to act on it.
    pub async fn request_cancel(&mut self, job_id: Uuid) -> Result<bool> {
        let now = ms(self.now());
        let updated = write!(self, |conn| {
            sqlx::query("UPDATE job SET cancel_requested = TRUE, updated_at = $2 WHERE id = $1 AND status = 'running'")
                .bind(job_id)
                .bind(now)
                .execute(conn)
                .await?
                .rows_affected()
        });
        if updated == 1 {
            self.notify(Notification::CancelRequested { job_id });
        }
        Ok(updated == 1)
    }

    /// Stores the job's rolling checkpoint; `false` when the worker no longer owns the job.
    pub async fn save_checkpoint(
        &mut self,
        job_id: Uuid,
        worker_id: Uuid,
        checkpoint: &SealedCheckpoint,
    ) -> Result<bool> {
        let now = ms(self.now());
        let updated = write!(self, |conn| {
            sqlx::query(
                "UPDATE job SET checkpoint = $3, checkpoint_crc = $4, heartbeat_at = $5, updated_at = $5 \
                 WHERE id = $1 AND status = 'running' AND claimed_by = $2",
            )
            .bind(job_id)
            .bind(worker_id)
            .bind(&checkpoint.json)
            .bind(i64::from(checkpoint.crc))
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    /// Adds usage of one LLM or tool call to the job's totals.
    pub async fn add_job_usage(&mut self, job_id: Uuid, usage: &JobUsage) -> Result<()> {
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "UPDATE job SET tokens_in = tokens_in + $2, tokens_out = tokens_out + $3, cost_usd = cost_usd + $4, \
                 llm_calls = llm_calls + $5, tool_calls = tool_calls + $6, heartbeat_at = $7, updated_at = $7 WHERE id = $1",
            )
            .bind(job_id)
            .bind(usage.tokens_in)
            .bind(usage.tokens_out)
            .bind(usage.cost_usd)
            .bind(usage.llm_calls)
            .bind(usage.tool_calls)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Releases the job's unsettled reservations before its status changes. Done first so this
    /// transaction locks ledger rows before the job row, the order a model call's settlement uses (no
    /// deadlock with a late settlement on PostgreSQL); when the status guard then fails, the caller
    /// drops the transaction and the release with it.
    async fn release_open_reservations(&mut self, job_ids: &[Uuid]) -> Result<()> {
        let released = self.release_reservations(job_ids).await?;
        if released > 0 {
            tracing::info!(?job_ids, released, "released budget reservations of attempts that ended without settling");
        }
        Ok(())
    }

    /// Appends the `job.state` event of a transition that just happened.
    fn emit_state(&mut self, job: &Job, from: JobStatus, error: Option<&JobError>) {
        let mut payload = json!({"from": from, "to": job.status, "attempt": job.attempt});
        if let Some(error) = error {
            payload["error"] = json!({"class": error.class, "code": error.code, "message": error.message});
        }
        if job.status == JobStatus::Retrying {
            payload["run_at"] = json!(cortex_core::clock::rfc3339_millis(job.run_at));
        }
        self.emit(NewEvent {
            session_id: job.session_id,
            ..NewEvent::new(job.agent_id, Some(job.id), EventType::JobState, payload)
        });
        // A job answering a chat tells that channel when it starts or stops running (typing indicator).
        let reply = &job.payload["reply"];
        if (from == JobStatus::Running) != (job.status == JobStatus::Running)
            && let Some(channel_id) = reply["channel_id"].as_str().and_then(|id| id.parse().ok())
        {
            self.notify(Notification::ChatJob {
                channel_id,
                job_id: job.id,
                running: job.status == JobStatus::Running,
                chat: reply["target"]["chat"].clone(),
            });
        }
        // A job that now holds its session (claimed, queued, waiting) leaves nothing to promote there: only a
        // transition out of those states can free the session for its next waiting job.
        let holds_session = matches!(
            job.status,
            JobStatus::Scheduled | JobStatus::Running | JobStatus::WaitingForApproval | JobStatus::Retrying
        ) || (job.status == JobStatus::Pending && job.resume);
        if let Some(session_id) = job.session_id.filter(|_| !holds_session)
            && !self.touched_sessions.contains(&session_id)
        {
            self.touched_sessions.push(session_id);
        }
    }

    /// Queues every session that has waiting jobs but no active one for promotion at commit (repairs
    /// sessions left stuck by a crash between two writes).
    pub async fn repair_stuck_sessions(&mut self) -> Result<usize> {
        let stuck: Vec<Uuid> = write!(self, |conn| {
            sqlx::query_scalar(
                "SELECT DISTINCT p.session_id FROM job p WHERE p.status = 'pending' AND p.resume = FALSE \
                 AND p.session_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM job h WHERE h.session_id = p.session_id \
                 AND (h.status IN ('scheduled', 'running', 'waiting_for_approval', 'retrying') OR (h.status = 'pending' AND h.resume)))",
            )
            .fetch_all(conn)
            .await?
        });
        let count = stuck.len();
        for session_id in stuck {
            if !self.touched_sessions.contains(&session_id) {
                self.touched_sessions.push(session_id);
            }
        }
        Ok(count)
    }

    /// Promotes the oldest waiting job of each touched session when nothing else holds the session.
    pub(crate) async fn promote_sessions(&mut self) -> Result<()> {
        let sessions = std::mem::take(&mut self.touched_sessions);
        for session_id in sessions {
            let now = ms(self.now());
            let row: Option<JobRow> = write!(self, |conn| {
                sqlx::query_as(concat!(
                    "UPDATE job SET status = 'scheduled', updated_at = $2 \
                     WHERE id = (SELECT p.id FROM job p WHERE p.session_id = $1 AND p.status = 'pending' AND p.resume = FALSE \
                                 ORDER BY p.id LIMIT 1) \
                       AND NOT EXISTS (SELECT 1 FROM job h WHERE h.session_id = $1 \
                                 AND (h.status IN ('scheduled', 'running', 'waiting_for_approval', 'retrying') \
                                      OR (h.status = 'pending' AND h.resume))) \
                     RETURNING ",
                    job_columns!()
                ))
                .bind(session_id)
                .bind(now)
                .fetch_optional(conn)
                .await?
            });
            if let Some(row) = row {
                let job = row.into_job()?;
                let payload = json!({"from": JobStatus::Pending, "to": job.status, "attempt": job.attempt});
                self.emit(NewEvent {
                    session_id: job.session_id,
                    ..NewEvent::new(job.agent_id, Some(job.id), EventType::JobState, payload)
                });
                self.notify(Notification::JobsReady);
            }
        }
        Ok(())
    }
}

/// Optional changes made together with [`Tx::move_job`].
#[derive(Debug, Default, Clone)]
pub struct QueuedChange {
    pub run_at: Option<Timestamp>,
    pub timeout_seconds: Option<u32>,
    pub max_attempts: Option<u32>,
    pub error: Option<JobError>,
    /// The next claim continues the attempt (resumption after an approval decision).
    pub resume: bool,
}

/// Usage to add to a job.
#[derive(Debug, Default, Clone, Copy)]
pub struct JobUsage {
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    pub llm_calls: i64,
    pub tool_calls: i64,
}

#[cfg(test)]
mod tests {
    /// SQLite's claim reads the waiting jobs in claim order from `job_claim` and stops at its limit (no
    /// sort of every waiting job; the window functions after it sort only the candidates), and counts
    /// each agent's running jobs in `job_live`.
    #[tokio::test]
    async fn sqlite_claims_in_index_order() {
        let (_dir, store) = crate::engine::scratch_sqlite().await;
        let mut write = crate::engine::sqlite_writer(&store).await;
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {}", super::SQLITE_CLAIM)))
                .bind(uuid::Uuid::nil())
                .bind(0_i64)
                .bind(false)
                .bind(16_i64)
                .fetch_all(&mut *write)
                .await
                .unwrap();
        let plan: Vec<String> = plan.into_iter().map(|(_, _, _, detail)| detail).collect();
        assert!(plan.iter().any(|step| step == "SCAN j USING INDEX job_claim"), "{plan:?}");
        assert!(
            plan.iter().any(|step| step.contains("r USING COVERING INDEX job_live (status=? AND agent_id=?)")),
            "{plan:?}"
        );
        let start = plan.iter().position(|step| step == "MATERIALIZE candidate" || step == "CO-ROUTINE candidate");
        let end = plan.iter().position(|step| step == "SCAN candidate");
        let (Some(start), Some(end)) = (start, end) else { panic!("no candidate step: {plan:?}") };
        assert!(!plan[start..end].iter().any(|step| step.contains("TEMP B-TREE")), "sorted candidates: {plan:?}");
        drop(write);
        store.close().await;
    }

    /// A batch of completions on SQLite reaches each job and each open reservation through its index,
    /// never by scanning the table: the batch runs on the single writer.
    #[tokio::test]
    async fn sqlite_ends_a_batch_through_the_keys() {
        let (_dir, store) = crate::engine::scratch_sqlite().await;
        let mut write = crate::engine::sqlite_writer(&store).await;
        for (query, search) in [
            (super::SQLITE_COMPLETE_BATCH, "SEARCH job USING INDEX sqlite_autoindex_job_1 (id=?)"),
            (crate::budgets::SQLITE_RELEASE, "INDEX budget_reservation_job (job_id=?)"),
        ] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {query}")))
                    .bind("[]")
                    .bind(0_i64)
                    .bind(uuid::Uuid::nil())
                    .fetch_all(&mut *write)
                    .await
                    .unwrap();
            let plan: Vec<String> = plan.into_iter().map(|(_, _, _, detail)| detail).collect();
            assert!(plan.iter().any(|step| step.contains(search)), "{query}: {plan:?}");
            assert!(
                !plan.iter().any(|step| step.starts_with("SCAN job") || step.starts_with("SCAN budget")),
                "{plan:?}"
            );
        }
        drop(write);
        store.close().await;
    }
}
