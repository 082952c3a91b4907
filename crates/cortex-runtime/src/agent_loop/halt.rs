//! Early exits of a run. Every step returns `Result<_, Halt>`; a `Halt` carries the [`Outcome`] the handler
//! reports, so failures, suspensions and releases all leave the loop through `?`.

use cortex_core::job::{ErrorClass, JobError};
use cortex_jobs::Outcome;
use cortex_store::StoreError;

/// Stop the run with this outcome.
#[derive(Debug)]
pub(crate) struct Halt(pub Outcome);

impl Halt {
    /// A failure the engine classifies by its error.
    pub(crate) fn fail(error: JobError) -> Halt {
        Halt(Outcome::Failed(error))
    }

    /// A failure no retry can fix (configuration, budgets, limits).
    pub(crate) fn permanent(code: &str, message: impl Into<String>) -> Halt {
        Halt::fail(JobError::new(ErrorClass::Permanent, code, message))
    }

    /// The job is no longer this worker's (reaped, cancelled): stop without writing anything.
    pub(crate) fn lost() -> Halt {
        Halt(Outcome::Suspended)
    }
}

impl From<StoreError> for Halt {
    fn from(err: StoreError) -> Halt {
        match err {
            StoreError::StaleState { entity: "job" } => Halt::lost(),
            err if err.is_unavailable() => {
                Halt::fail(JobError::new(ErrorClass::Transient, "store_unavailable", err.to_string()))
            }
            err => Halt::fail(JobError::new(ErrorClass::Unknown, "store_error", err.to_string())),
        }
    }
}
