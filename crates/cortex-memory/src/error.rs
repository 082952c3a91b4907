//! Memory errors, named for what the caller can do about them.

use cortex_store::StoreError;

/// Why a memory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// An input is out of range; `field` names it (API: 400 with `details.fields`).
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The record was produced by a markdown file; edit the file instead (SPEC §9.7).
    #[error("memory {0} comes from a markdown file; edit the file instead")]
    ReadOnlySource(uuid::Uuid),
    /// Agent- or extraction-written text that reads like an instruction to the model (SPEC §9.3); the
    /// pattern found is named. Not stored.
    #[error("content looks like an instruction to the model (`{0}`); memory holds facts, not instructions")]
    Injection(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl MemoryError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid { field, reason: reason.into() }
    }
}
