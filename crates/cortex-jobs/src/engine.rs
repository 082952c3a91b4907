//! The worker pool: claim loop, per-job supervision, heartbeats, reaper duty and graceful shutdown.
//!
//! Lifecycle of the moving parts:
//! - `stop_claiming` is cancelled when shutdown begins; the claim loop exits and no new job starts.
//! - `shutdown` (given to handlers) is cancelled at the same moment so running jobs can reach a safe
//!   point, checkpoint and return [`Outcome::Release`].
//! - `slots` bounds concurrent jobs; a permit lives as long as its job's task.
//! - `running` maps each local job to its cancellation handle; the cancel watcher and the heartbeat use
//!   it to stop jobs that were cancelled or that this worker no longer owns.
//! - `early_cancels` holds cancel requests for jobs not (yet) in `running`: a claim commits a moment
//!   before the claim loop registers the job, and a request landing in between would otherwise wait for
//!   the next periodic re-check. Registration consults it; re-checks age it out.
//! - `completions` queues completed attempts with their slots: one task commits every completion that is
//!   ready in one transaction, which also claims jobs for the slots they free (one commit, one WAL flush,
//!   for both), then acknowledges each and hands the slots on to the claimed jobs (unused ones are
//!   freed). A job's supervisor waits for that commit; its slot is never free before it.
//! - `claiming` lets one claim of this process run at a time (the claim loop's or the completion loop's):
//!   two at once could each skip a job the other holds locked as a candidate and claim a lower-priority
//!   one instead.
//! - `background` stops the heartbeat, reaper, watcher and completion loops last, after jobs are settled.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cortex_core::event::EventType;
use cortex_core::job::{ErrorClass, JobError, JobKind};
use cortex_store::events::NewEvent;
use cortex_store::jobs::{AttemptEnd, Job, Suspend};
use cortex_store::{Notification, Store, StoreError};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::config::EngineConfig;
use crate::handler::{JobContext, JobHandler, Outcome};
use crate::reaper::reap_once;
use crate::retry::settle_failure;

/// Why a job's supervisor stopped its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    OperatorCancel,
    LostOwnership,
    ShutdownAbort,
}

struct RunningJob {
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<StopReason>>>,
}

impl RunningJob {
    fn stop(&self, reason: StopReason) {
        if let Ok(mut slot) = self.reason.lock() {
            slot.get_or_insert(reason);
        }
        self.cancel.cancel();
    }
}

/// Cancel requests that arrived before their job's supervisor registered it (see the module docs).
#[derive(Default)]
struct EarlyCancels {
    generation: u64,
    requests: HashMap<Uuid, u64>,
}

impl EarlyCancels {
    /// Starts a new re-check generation, forgetting requests from before the previous one: a job
    /// claimed by this worker registers long before two re-checks pass, so older ones were for jobs of
    /// other workers.
    fn age(&mut self) {
        self.generation += 1;
        let keep_from = self.generation.saturating_sub(1);
        self.requests.retain(|_, generation| *generation >= keep_from);
    }
}

/// A completed attempt waiting for the completion loop's next transaction, with its job's slot. `answer`
/// says whether that transaction committed it (`Ok`: the slot went on to a job claimed in that
/// transaction, or was freed) or not (`Err` with the slot: the supervisor records the end on its own,
/// with retries).
struct Completion {
    job_id: Uuid,
    result: Value,
    permit: OwnedSemaphorePermit,
    answer: oneshot::Sender<Result<(), Option<OwnedSemaphorePermit>>>,
}

struct Inner {
    store: Store,
    config: EngineConfig,
    worker_id: Uuid,
    handlers: HashMap<JobKind, Arc<dyn JobHandler>>,
    running: Mutex<HashMap<Uuid, RunningJob>>,
    /// Cancel requests for jobs that were not in `running`, with the re-check generation they arrived in.
    early_cancels: Mutex<EarlyCancels>,
    /// Odd while a claim is between its query and the registration of what it claimed (see
    /// [`ClaimInFlight`]): the orphan check must not judge jobs in that window.
    claim_seq: AtomicU64,
    slots: Arc<Semaphore>,
    stop_claiming: CancellationToken,
    shutdown: CancellationToken,
    completions: mpsc::UnboundedSender<Completion>,
    /// Taken by [`JobEngine::run`] for the completion loop.
    completion_queue: Mutex<Option<mpsc::UnboundedReceiver<Completion>>>,
    /// Held by whichever loop is claiming (see the module docs).
    claiming: tokio::sync::Mutex<()>,
}

/// A worker pool bound to one store. Cheap to clone.
#[derive(Clone)]
pub struct JobEngine {
    inner: Arc<Inner>,
}

const REAPER_LEASE: &str = "reaper";
/// Longest pause between retries against an unavailable database: a blip must not idle workers for long.
const MAX_OUTAGE_BACKOFF: Duration = Duration::from_secs(1);
/// Jobs of quarantined agents are never claimed (SPEC §5.7): `CORTEX_DISABLE_QUARANTINE` turns off only the
/// automatic breaker ([`EngineConfig::auto_quarantine`]), a manual quarantine still holds the agent's jobs.
const CLAIM_QUARANTINED: bool = false;
/// Most completions committed in one transaction (bounds its size and the events it emits).
const MAX_COMPLETION_BATCH: usize = 256;

impl JobEngine {
    pub fn new(store: Store, config: EngineConfig) -> Self {
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        let (completions, completion_queue) = mpsc::unbounded_channel();
        Self {
            inner: Arc::new(Inner {
                store,
                config,
                worker_id: cortex_core::new_id(),
                handlers: HashMap::new(),
                running: Mutex::new(HashMap::new()),
                early_cancels: Mutex::new(EarlyCancels::default()),
                claim_seq: AtomicU64::new(0),
                slots,
                stop_claiming: CancellationToken::new(),
                shutdown: CancellationToken::new(),
                completions,
                completion_queue: Mutex::new(Some(completion_queue)),
                claiming: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Registers the handler of a job kind (before [`JobEngine::run`]).
    pub fn with_handler(mut self, kind: JobKind, handler: Arc<dyn JobHandler>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.handlers.insert(kind, handler);
        }
        self
    }

    pub fn worker_id(&self) -> Uuid {
        self.inner.worker_id
    }

    /// Number of jobs this process is running right now.
    pub fn running_jobs(&self) -> usize {
        self.inner.running.lock().map(|running| running.len()).unwrap_or(0)
    }

    /// Claims at most one job and runs it to its recorded end in the caller's task, with none of the
    /// background loops (claim, heartbeat, reaper, watcher): for tests and measurements that need an
    /// exact, repeatable sequence of statements (issue 17's per-turn statement budget). A completion is
    /// committed the way the completion loop commits a batch (here a batch of one). Returns the job's id,
    /// or `None` when nothing was claimable. Not for an engine that is also [`JobEngine::run`]ning.
    pub async fn run_one(&self) -> Result<Option<Uuid>, StoreError> {
        let inner = &self.inner;
        let Ok(permit) = inner.slots.clone().try_acquire_owned() else { return Ok(None) };
        let claiming = ClaimInFlight::begin(inner);
        let claimed = inner.store.claim_batch(inner.worker_id, 1, CLAIM_QUARANTINED).await?;
        let Some(job) = claimed.into_iter().next() else { return Ok(None) };
        let job_id = job.id;
        let local = register(inner, job_id);
        drop(claiming);
        let mut queue = inner.completion_queue.lock().ok().and_then(|mut queue| queue.take());
        let supervised = supervise(inner.clone(), job, local, permit);
        tokio::pin!(supervised);
        loop {
            let next = async {
                match queue.as_mut() {
                    Some(queue) => queue.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut supervised => break,
                Some(completion) = next => {
                    let committed = commit_completions(inner, std::slice::from_ref(&completion), 0).await.is_ok();
                    let Completion { permit, answer, .. } = completion;
                    let _ = answer.send(if committed { Ok(()) } else { Err(Some(permit)) });
                }
            }
        }
        if let Some(queue) = queue
            && let Ok(mut slot) = inner.completion_queue.lock()
        {
            *slot = Some(queue);
        }
        Ok(Some(job_id))
    }

    /// Runs until `shutdown` resolves, then shuts down gracefully (SPEC §4.10).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        let store = &inner.store;
        tokio::pin!(shutdown);
        // A database that drops connections while the worker starts (a restart, a fail-over) must not leave
        // a process without a job engine: start-up is retried like any other outage.
        let mut backoff = Duration::from_millis(100);
        loop {
            match start_up(&inner).await {
                Ok(()) => break,
                Err(err) if err.is_unavailable() => {
                    tracing::warn!(error = %err, "job engine start-up failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = &mut shutdown => return Ok(()),
                    }
                    backoff = (backoff * 2).min(MAX_OUTAGE_BACKOFF);
                }
                Err(err) => return Err(err),
            }
        }
        if let Err(err) = reap_once(store, inner.config.worker_dead_after, inner.config.auto_quarantine).await {
            tracing::warn!(error = %err, "initial reaper pass failed");
        }

        let background = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat_loop(inner.clone(), background.clone()));
        let reaper = tokio::spawn(reaper_loop(inner.clone(), background.clone()));
        let watcher = tokio::spawn(cancel_watcher(inner.clone(), background.clone()));
        let queue = inner.completion_queue.lock().ok().and_then(|mut queue| queue.take());
        let completer = tokio::spawn(completion_loop(inner.clone(), queue, background.clone()));
        let claimer = tokio::spawn(claim_loop(inner.clone()));
        tracing::info!(worker_id = %inner.worker_id, concurrency = inner.config.concurrency, "job engine started");

        shutdown.await;
        tracing::info!("shutting down job engine");
        inner.stop_claiming.cancel();
        inner.shutdown.cancel();
        let _ = claimer.await;
        drain(&inner).await;

        background.cancel();
        let _ = tokio::join!(heartbeat, reaper, watcher, completer);
        let mut tx = store.begin().await?;
        tx.stop_worker(inner.worker_id).await?;
        tx.commit().await?;
        if store.is_postgres() {
            store.release_lease(REAPER_LEASE, inner.worker_id).await?;
        }
        tracing::info!("job engine stopped");
        Ok(())
    }
}

/// Registers this worker (and, in embedded mode, declares every earlier worker row dead: the lock file
/// makes this the only process).
async fn start_up(inner: &Inner) -> Result<(), StoreError> {
    let store = &inner.store;
    if !store.is_postgres() {
        let mut tx = store.begin().await?;
        tx.declare_dead_workers(store.clock().now() + chrono::Duration::milliseconds(1)).await?;
        tx.commit().await?;
    }
    store.register_worker(inner.worker_id, &inner.config.name).await
}

/// Waits for running jobs to release themselves, then aborts and releases the rest.
async fn drain(inner: &Arc<Inner>) {
    let grace = inner.config.shutdown_grace.saturating_sub(Duration::from_secs(5));
    let all_slots = inner.config.concurrency.max(1) as u32;
    let everyone_done = inner.slots.clone().acquire_many_owned(all_slots);
    tokio::pin!(everyone_done);
    tokio::select! {
        _ = &mut everyone_done => return,
        _ = inner.store.clock().sleep(grace) => {}
    }
    if let Ok(running) = inner.running.lock() {
        for job in running.values() {
            job.stop(StopReason::ShutdownAbort);
        }
    }
    let _ = everyone_done.await;
}

async fn claim_loop(inner: Arc<Inner>) {
    let mut notifications = inner.store.subscribe();
    let mut error_backoff = Duration::from_millis(100);
    loop {
        let permit = tokio::select! {
            permit = inner.slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = inner.stop_claiming.cancelled() => return,
        };
        // One claim for every free slot: a busy worker claims many jobs per transaction.
        let mut permits = vec![permit];
        while let Ok(more) = inner.slots.clone().try_acquire_owned() {
            permits.push(more);
        }
        let serial = inner.claiming.lock().await;
        let attempted_at = inner.store.clock().now();
        let claiming = ClaimInFlight::begin(&inner);
        let claimed = inner.store.claim_batch(inner.worker_id, permits.len(), CLAIM_QUARANTINED).await;
        drop(serial);
        match claimed {
            Ok(jobs) if !jobs.is_empty() => {
                error_backoff = Duration::from_millis(100);
                for (job, permit) in jobs.into_iter().zip(permits) {
                    start(&inner, job, permit);
                }
                drop(claiming);
            }
            Ok(_) => {
                drop(claiming);
                drop(permits);
                // One read decides whether anything is due; the write that promotes retries runs only then,
                // so an idle claimer never competes with running jobs for the (SQLite: single) writer.
                let next = match inner.store.next_run_at().await {
                    Ok(next) => next,
                    Err(err) => {
                        tracing::warn!(error = %err, "reading the next due time failed");
                        None
                    }
                };
                let now = inner.store.clock().now();
                if next.is_some_and(|at| at <= now) {
                    match promote_due(&inner.store).await {
                        Ok(true) => continue,
                        Ok(false) => {}
                        Err(err) => tracing::warn!(error = %err, "promoting due retries failed"),
                    }
                }
                // A job that became due while the claim ran was invisible to it and sends no wake-up:
                // look again now instead of sleeping a whole poll interval.
                if next.is_some_and(|at| at > attempted_at && at <= now) {
                    continue;
                }
                wait_for_work(&inner, &mut notifications, next).await;
            }
            Err(err) => {
                drop(claiming);
                drop(permits);
                tracing::warn!(error = %err, "claim failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(error_backoff) => {}
                    _ = inner.stop_claiming.cancelled() => return,
                }
                error_backoff = (error_backoff * 2).min(MAX_OUTAGE_BACKOFF);
            }
        }
    }
}

/// Moves due retries to `scheduled`; `true` when any became claimable.
async fn promote_due(store: &Store) -> Result<bool, StoreError> {
    let mut tx = store.begin().await?;
    let promoted = tx.promote_due_retries().await?;
    tx.commit().await?;
    Ok(!promoted.is_empty())
}

/// Sleeps until a wake-up notification, the next job becoming due, the poll interval, or shutdown. A job
/// that is already due but was not claimable (its agent is at its concurrency limit) does not shorten the
/// sleep: the end of a running attempt sends the wake-up that makes it claimable, and the poll interval
/// bounds a missed one.
async fn wait_for_work(
    inner: &Inner,
    notifications: &mut broadcast::Receiver<Notification>,
    next: Option<chrono::DateTime<chrono::Utc>>,
) {
    let clock = inner.store.clock();
    let now = clock.now();
    let mut deadline = now + chrono::Duration::from_std(inner.config.poll_interval).unwrap_or_default();
    if let Some(next) = next
        && next > now
        && next < deadline
    {
        deadline = next;
    }
    let sleep = clock.sleep_until(deadline);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return,
            _ = inner.stop_claiming.cancelled() => return,
            received = notifications.recv() => match received {
                Ok(Notification::JobsReady | Notification::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => return,
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

enum Ended {
    Outcome(Outcome),
    TimedOut,
    Stopped(StopReason),
    NoHandler,
}

/// Runs one claimed job under its deadline and cancellation, then records how it ended.
/// Marks a claim in flight (the claim sequence odd) from before its query until dropped after its jobs
/// were registered, also when the claim fails or finds nothing.
struct ClaimInFlight<'a>(&'a Inner);

impl<'a> ClaimInFlight<'a> {
    fn begin(inner: &'a Inner) -> Self {
        inner.claim_seq.fetch_add(1, Ordering::SeqCst);
        Self(inner)
    }
}

impl Drop for ClaimInFlight<'_> {
    fn drop(&mut self) {
        self.0.claim_seq.fetch_add(1, Ordering::SeqCst);
    }
}

/// Starts a just-claimed job's supervisor in its own task, with the slot it runs in. Registered before the
/// task starts: from here on the cancel watcher and the orphan check see the job as this process's.
fn start(inner: &Arc<Inner>, job: Job, permit: OwnedSemaphorePermit) {
    let span =
        tracing::info_span!("job", job_id = %job.id, agent_id = %job.agent_id, kind = %job.kind, attempt = job.attempt);
    let local = register(inner, job.id);
    tokio::spawn(supervise(inner.clone(), job, local, permit).instrument(span));
}

/// Enters a just-claimed job into `running` and returns its stop handle; a cancel request that arrived
/// earlier stops it at once. Under the `running` lock, like [`cancel_local`]: a request is either seen
/// here or finds the job.
fn register(inner: &Inner, job_id: Uuid) -> RunningJob {
    let cancel = CancellationToken::new();
    let reason = Arc::new(Mutex::new(None));
    let local = RunningJob { cancel: cancel.clone(), reason: reason.clone() };
    if let Ok(mut running) = inner.running.lock() {
        if inner.early_cancels.lock().is_ok_and(|mut early| early.requests.remove(&job_id).is_some()) {
            local.stop(StopReason::OperatorCancel);
        }
        running.insert(job_id, RunningJob { cancel, reason });
    }
    local
}

async fn supervise(inner: Arc<Inner>, job: Job, local: RunningJob, permit: OwnedSemaphorePermit) {
    let started = Instant::now();
    let RunningJob { cancel, reason } = local;
    let clock = inner.store.clock().clone();
    let deadline =
        job.attempt_started_at.unwrap_or_else(|| clock.now()) + chrono::Duration::milliseconds(job.remaining_ms());
    let ended = match inner.handlers.get(&job.kind) {
        None => Ended::NoHandler,
        Some(handler) => {
            let ctx = JobContext {
                job: job.clone(),
                worker_id: inner.worker_id,
                store: inner.store.clone(),
                clock: clock.clone(),
                cancel: cancel.clone(),
                shutdown: inner.shutdown.child_token(),
            };
            tokio::select! {
                outcome = handler.run(ctx) => Ended::Outcome(outcome),
                _ = clock.sleep_until(deadline) => Ended::TimedOut,
                _ = cancel.cancelled() => Ended::Stopped(reason.lock().ok().and_then(|r| *r).unwrap_or(StopReason::OperatorCancel)),
            }
        }
    };
    cancel.cancel();
    // A completion goes to the completion loop with the slot; the slot comes back when its batch failed.
    let (committed, permit) = match &ended {
        Ended::Outcome(Outcome::Completed(result)) => match queued_completion(&inner, job.id, result, permit).await {
            Ok(()) => (true, None),
            Err(permit) => (false, permit),
        },
        _ => (false, Some(permit)),
    };
    record_end(&inner, &job, ended, started, committed).await;
    if let Ok(mut running) = inner.running.lock() {
        running.remove(&job.id);
    }
    drop(permit);
}

/// Persists the end of an attempt, retrying while the database is unavailable; `committed` says the
/// completion loop already committed a completed attempt.
async fn record_end(inner: &Inner, job: &Job, ended: Ended, started: Instant, committed: bool) {
    let kind = job.kind.as_str();
    metrics::histogram!("cortex_job_duration_seconds", "kind" => kind).record(started.elapsed().as_secs_f64());
    let mut backoff = Duration::from_millis(100);
    loop {
        match try_record_end(inner, job, &ended, committed).await {
            Ok(()) => return,
            Err(StoreError::StaleState { .. }) => {
                tracing::warn!("job is no longer owned by this worker; dropping its outcome");
                return;
            }
            Err(err) if err.is_unavailable() => {
                tracing::warn!(error = %err, "database unavailable while recording job end; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_OUTAGE_BACKOFF);
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot record job end; the reaper will recover the job");
                return;
            }
        }
    }
}

async fn try_record_end(inner: &Inner, job: &Job, ended: &Ended, committed: bool) -> Result<(), StoreError> {
    let store = &inner.store;
    let worker_id = inner.worker_id;
    let failure = match ended {
        Ended::Outcome(Outcome::Suspended) | Ended::Stopped(StopReason::LostOwnership) => return Ok(()),
        Ended::Outcome(Outcome::Release) | Ended::Stopped(StopReason::ShutdownAbort) => {
            let mut tx = store.begin().await?;
            tx.suspend(job.id, worker_id, Suspend::Release, None).await?;
            tx.commit().await?;
            tracing::info!("job released for another worker");
            return Ok(());
        }
        Ended::Outcome(Outcome::Completed(result)) => {
            if !committed {
                let mut tx = store.begin().await?;
                complete(&mut tx, worker_id, &[(job.id, result.clone())]).await?;
                tx.commit().await?;
            }
            metrics::counter!("cortex_jobs_total", "kind" => job.kind.as_str(), "status" => "completed").increment(1);
            return Ok(());
        }
        Ended::Outcome(Outcome::Failed(error)) => AttemptEnd::Failed { error: error.clone() },
        Ended::Stopped(StopReason::OperatorCancel) => AttemptEnd::Failed { error: JobError::cancelled() },
        Ended::TimedOut => AttemptEnd::TimedOut {
            error: JobError::new(
                ErrorClass::Timeout,
                "attempt_timeout",
                format!("the attempt ran longer than its {} s timeout", job.timeout_seconds),
            ),
        },
        Ended::NoHandler => AttemptEnd::Failed {
            error: JobError::new(ErrorClass::Permanent, "no_handler", format!("no handler runs `{}` jobs", job.kind)),
        },
    };
    let (AttemptEnd::Failed { error } | AttemptEnd::TimedOut { error }) = &failure else { return Ok(()) };
    let mut tx = store.begin().await?;
    let failed = tx.end_attempt(job.id, worker_id, &failure).await?;
    if error.code == "cancelled" {
        tx.expire_pending_approvals_of_job(job.id, "job_cancelled").await?;
    }
    let settled = settle_failure(&mut tx, failed, error, inner.config.auto_quarantine).await?;
    tx.commit().await?;
    tracing::info!(status = %settled.status, code = %error.code, "job attempt failed");
    Ok(())
}

/// Ends completed attempts (`(job, result)` pairs) and says so, in the caller's transaction.
async fn complete(tx: &mut cortex_store::Tx, worker_id: Uuid, done: &[(Uuid, Value)]) -> Result<(), StoreError> {
    let jobs = tx.complete_attempts(worker_id, done).await?;
    for (job, (_, result)) in jobs.iter().zip(done) {
        tx.emit(NewEvent {
            session_id: job.session_id,
            ..NewEvent::new(
                job.agent_id,
                Some(job.id),
                EventType::JobCompleted,
                json!({"status": job.status, "result": result}),
            )
        });
    }
    Ok(())
}

/// Hands a completion and its job's slot to the completion loop and waits until its transaction
/// committed (`Ok`: the slot went on to a job claimed in it, or was freed) or failed (`Err` with the slot:
/// the caller records the completion on its own). A slot lost with a completion loop that is gone is
/// freed, and the caller records the completion.
async fn queued_completion(
    inner: &Inner,
    job_id: Uuid,
    result: &Value,
    permit: OwnedSemaphorePermit,
) -> Result<(), Option<OwnedSemaphorePermit>> {
    let (answer, answered) = oneshot::channel();
    let completion = Completion { job_id, result: result.clone(), permit, answer };
    if let Err(mpsc::error::SendError(completion)) = inner.completions.send(completion) {
        return Err(Some(completion.permit));
    }
    answered.await.unwrap_or(Err(None))
}

/// Commits every completion that is ready in one transaction (one commit, one flush of events, one
/// round of notifications for all of them), which also claims up to as many jobs as the batch frees
/// slots (none once shutdown began), then acknowledges each completion and starts the claimed jobs in
/// the freed slots; slots nobody claimed are freed. A batch that fails as a whole (one job was cancelled
/// or reaped meanwhile, the database went away) is answered with the slots given back, and each
/// supervisor records its own completion the one-by-one way, which knows how to handle both.
async fn completion_loop(
    inner: Arc<Inner>,
    queue: Option<mpsc::UnboundedReceiver<Completion>>,
    stop: CancellationToken,
) {
    let Some(mut queue) = queue else { return };
    loop {
        let first = tokio::select! {
            received = queue.recv() => match received {
                Some(completion) => completion,
                None => return,
            },
            _ = stop.cancelled() => return,
        };
        // Handlers finishing at this moment (a claim's jobs often end together) get to queue theirs first,
        // so they join this transaction rather than the next one.
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < MAX_COMPLETION_BATCH
            && let Ok(completion) = queue.try_recv()
        {
            batch.push(completion);
        }
        let serial = inner.claiming.lock().await;
        let claim = if inner.stop_claiming.is_cancelled() { 0 } else { batch.len() };
        let claiming = ClaimInFlight::begin(&inner);
        let committed = commit_completions(&inner, &batch, claim).await;
        drop(serial);
        match committed {
            Ok(claimed) => {
                let mut slots = Vec::with_capacity(batch.len());
                for Completion { permit, answer, .. } in batch {
                    let _ = answer.send(Ok(()));
                    slots.push(permit);
                }
                for (job, permit) in claimed.into_iter().zip(slots) {
                    start(&inner, job, permit);
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, jobs = batch.len(), "batched completion failed; completing one by one");
                for Completion { permit, answer, .. } in batch {
                    let _ = answer.send(Err(Some(permit)));
                }
            }
        }
        drop(claiming);
    }
}

/// Commits `batch`'s completions and claims up to `claim` jobs in one transaction; returns the claimed jobs.
async fn commit_completions(inner: &Inner, batch: &[Completion], claim: usize) -> Result<Vec<Job>, StoreError> {
    let done: Vec<(Uuid, Value)> =
        batch.iter().map(|completion| (completion.job_id, completion.result.clone())).collect();
    let mut tx = inner.store.begin().await?;
    complete(&mut tx, inner.worker_id, &done).await?;
    let claimed = tx.claim_jobs(inner.worker_id, claim, CLAIM_QUARANTINED).await?;
    tx.commit().await?;
    Ok(claimed)
}

async fn heartbeat_loop(inner: Arc<Inner>, stop: CancellationToken) {
    let clock = inner.store.clock().clone();
    loop {
        tokio::select! {
            _ = clock.sleep(inner.config.heartbeat_interval) => {}
            _ = stop.cancelled() => return,
        }
        match inner.store.heartbeat_worker(inner.worker_id).await {
            Ok(true) => {}
            Ok(false) => {
                // Declared dead (e.g. a long stall): our jobs now belong to others. Stop them without
                // writing, then come back as a live worker.
                tracing::error!("this worker was declared dead; abandoning its jobs");
                if let Ok(running) = inner.running.lock() {
                    for job in running.values() {
                        job.stop(StopReason::LostOwnership);
                    }
                }
                if let Err(err) = revive(&inner).await {
                    tracing::warn!(error = %err, "reviving worker failed");
                }
            }
            Err(err) => tracing::warn!(error = %err, "worker heartbeat failed"),
        }
    }
}

/// Clears the stopped mark of this worker so its heartbeats count again.
async fn revive(inner: &Inner) -> Result<(), StoreError> {
    let mut tx = inner.store.begin().await?;
    tx.revive_worker(inner.worker_id).await?;
    tx.commit().await
}

async fn reaper_loop(inner: Arc<Inner>, stop: CancellationToken) {
    let clock = inner.store.clock().clone();
    loop {
        tokio::select! {
            _ = clock.sleep(inner.config.reaper_interval) => {}
            _ = stop.cancelled() => return,
        }
        let on_duty = if inner.store.is_postgres() {
            inner
                .store
                .acquire_lease(REAPER_LEASE, inner.worker_id, chrono::Duration::seconds(30))
                .await
                .unwrap_or(false)
        } else {
            true
        };
        if on_duty
            && let Err(err) =
                reap_once(&inner.store, inner.config.worker_dead_after, inner.config.auto_quarantine).await
        {
            tracing::warn!(error = %err, "reaper pass failed");
        }
    }
}

/// Stops local jobs whose cancellation was requested or whose ownership moved, on notification and by
/// periodic re-check (a lost notification delays a cancel by at most `cancel_recheck`).
async fn cancel_watcher(inner: Arc<Inner>, stop: CancellationToken) {
    let clock = inner.store.clock().clone();
    let mut notifications = inner.store.subscribe();
    loop {
        let recheck_all = tokio::select! {
            _ = stop.cancelled() => return,
            _ = clock.sleep(inner.config.cancel_recheck) => true,
            received = notifications.recv() => match received {
                Ok(Notification::CancelRequested { job_id }) => {
                    cancel_local(&inner, job_id);
                    false
                }
                Ok(Notification::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => true,
                Ok(_) => false,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if recheck_all {
            if let Ok(mut early) = inner.early_cancels.lock() {
                early.age();
            }
            if let Err(err) = recover_orphans(&inner).await {
                tracing::warn!(error = %err, "checking for orphaned jobs failed");
            }
            let ids: Vec<Uuid> =
                inner.running.lock().map(|running| running.keys().copied().collect()).unwrap_or_default();
            for id in ids {
                let Ok(job) = inner.store.get_job(id).await else { continue };
                let reason =
                    if job.status != cortex_core::job::JobStatus::Running || job.claimed_by != Some(inner.worker_id) {
                        Some(StopReason::LostOwnership)
                    } else if job.cancel_requested {
                        Some(StopReason::OperatorCancel)
                    } else {
                        None
                    };
                if let Some(reason) = reason
                    && let Ok(running) = inner.running.lock()
                    && let Some(local) = running.get(&id)
                {
                    local.stop(reason);
                }
            }
        }
    }
}

/// Stops a local job an operator cancelled, or remembers the request for a job whose supervisor has not
/// registered it yet. Both this and the registration in [`supervise`] hold the `running` lock (then take
/// `early_cancels`), so a request can never fall between the two.
fn cancel_local(inner: &Inner, job_id: Uuid) {
    let Ok(running) = inner.running.lock() else { return };
    match running.get(&job_id) {
        Some(job) => job.stop(StopReason::OperatorCancel),
        None => {
            if let Ok(mut early) = inner.early_cancels.lock() {
                let generation = early.generation;
                early.requests.insert(job_id, generation);
            }
        }
    }
}

/// Jobs the database says this worker runs but it does not: a claim whose commit acknowledgement was lost,
/// or an end that could not be recorded. A live worker's heartbeat keeps the reaper away from them, so the
/// worker hands them to the same recovery a dead worker's jobs get (`timed_out/worker_lost`, quick retry).
/// Jobs claimed within the last re-check period are skipped: a claim is visible in the database a moment
/// before the claim loop hears back and registers it.
/// A claim that ran between the database read and the look at `running` (or was in flight when it
/// began) makes the pass judge nothing: its jobs may be committed as ours and not registered yet; the
/// next pass decides.
async fn recover_orphans(inner: &Inner) -> Result<(), StoreError> {
    let claims_before = inner.claim_seq.load(Ordering::SeqCst);
    if claims_before % 2 == 1 {
        return Ok(());
    }
    let owned = inner.store.running_jobs_of_worker(inner.worker_id).await?;
    if owned.is_empty() {
        return Ok(());
    }
    let local: Vec<Uuid> = inner.running.lock().map(|running| running.keys().copied().collect()).unwrap_or_default();
    if inner.claim_seq.load(Ordering::SeqCst) != claims_before {
        return Ok(());
    }
    let settle_time = chrono::Duration::from_std(inner.config.cancel_recheck).unwrap_or_default();
    let now = inner.store.clock().now();
    for job in owned {
        let claimed_recently = job.attempt_started_at.is_none_or(|started| now - started < settle_time);
        if local.contains(&job.id) || claimed_recently {
            continue;
        }
        tracing::warn!(job_id = %job.id, "recovering a job this worker owns but does not run");
        let error = JobError::new(ErrorClass::Timeout, "worker_lost", "the worker lost track of this job");
        let mut tx = inner.store.begin().await?;
        match tx.end_attempt(job.id, inner.worker_id, &AttemptEnd::TimedOut { error: error.clone() }).await {
            Ok(timed_out) => {
                settle_failure(&mut tx, timed_out, &error, inner.config.auto_quarantine).await?;
                tx.commit().await?;
            }
            Err(StoreError::StaleState { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}
