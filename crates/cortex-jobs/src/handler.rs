//! The contract between the engine and the code that does a job's work.

use std::sync::Arc;

use async_trait::async_trait;
use cortex_core::checkpoint::{self, CheckpointError};
use cortex_core::clock::Clock;
use cortex_core::event::EventType;
use cortex_core::job::JobError;
use cortex_store::Store;
use cortex_store::events::NewEvent;
use cortex_store::jobs::Job;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Runs jobs of one or more kinds. A handler may run the same job more than once (at-least-once
/// delivery): it must checkpoint progress and never repeat a completed side effect.
#[async_trait]
pub trait JobHandler: Send + Sync {
    async fn run(&self, ctx: JobContext) -> Outcome;
}

/// How an attempt ended, as reported by the handler.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Done; `result` is stored on the job.
    Completed(Value),
    /// Failed; the engine applies the retry policy of the error's class.
    Failed(JobError),
    /// The handler already moved the job out of `running` in its own transaction (waiting for an
    /// approval, parked for sub-agents); the engine only lets go of it.
    Suspended,
    /// Shutdown reached a safe point: the last checkpoint is current, put the job back in the queue.
    Release,
}

/// Where a run starts from.
#[derive(Debug, Clone)]
pub enum ResumePoint {
    /// No checkpoint: start from the beginning.
    Fresh,
    /// The last valid checkpoint.
    Checkpoint(Value),
    /// A checkpoint existed but failed its CRC check; it was reported and must not be used.
    Corrupt(String),
}

/// Everything a handler gets for one run of one job.
#[derive(Clone)]
pub struct JobContext {
    pub job: Job,
    pub worker_id: Uuid,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    /// Fires when in-flight work must stop now (cancellation, timeout, lost ownership). Dropping the
    /// handler's future has the same effect; the token lets a handler stop child processes or streams.
    pub cancel: CancellationToken,
    /// Fires when the process is shutting down: finish the current step, checkpoint, return
    /// [`Outcome::Release`].
    pub shutdown: CancellationToken,
}

/// Failure to persist progress; the handler should stop (the job is no longer ours or the database is
/// down) and let the engine decide.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointFailure {
    #[error(transparent)]
    Invalid(#[from] CheckpointError),
    #[error("this worker no longer owns the job")]
    LostOwnership,
    #[error(transparent)]
    Store(#[from] cortex_store::StoreError),
}

impl JobContext {
    /// The job's last checkpoint, verified. A corrupt one is reported once as an `error` event with code
    /// `checkpoint_corrupt` and then ignored.
    pub async fn resume_point(&self) -> ResumePoint {
        let (Some(json), Some(crc)) = (&self.job.checkpoint, self.job.checkpoint_crc) else {
            return ResumePoint::Fresh;
        };
        match checkpoint::open(json, crc) {
            Ok(value) => ResumePoint::Checkpoint(value),
            Err(err) => {
                tracing::warn!(job_id = %self.job.id, error = %err, "discarding corrupt checkpoint");
                let report = async {
                    let mut tx = self.store.begin().await?;
                    tx.emit(NewEvent::new(
                        self.job.agent_id,
                        Some(self.job.id),
                        EventType::Error,
                        json!({"code": "checkpoint_corrupt", "message": err.to_string()}),
                    ));
                    tx.commit().await
                };
                if let Err(store_err) = report.await {
                    tracing::warn!(error = %store_err, "could not report corrupt checkpoint");
                }
                ResumePoint::Corrupt(err.to_string())
            }
        }
    }

    /// Persists progress (canonical JSON + CRC) and refreshes the job's heartbeat.
    pub async fn checkpoint(&self, state: &Value) -> Result<(), CheckpointFailure> {
        let sealed = checkpoint::seal(state)?;
        let mut tx = self.store.begin().await?;
        if !tx.save_checkpoint(self.job.id, self.worker_id, &sealed).await? {
            return Err(CheckpointFailure::LostOwnership);
        }
        tx.emit(NewEvent {
            session_id: self.job.session_id,
            ..NewEvent::new(
                self.job.agent_id,
                Some(self.job.id),
                EventType::Checkpoint,
                json!({"crc": sealed.crc, "bytes": sealed.json.len()}),
            )
        });
        tx.commit().await?;
        Ok(())
    }
}
