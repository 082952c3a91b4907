//! Store errors, named for what the caller can do about them.

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The addressed row does not exist.
    #[error("{entity} not found")]
    NotFound { entity: &'static str },
    /// A unique or foreign-key constraint refused the write; `constraint` names it (e.g. `agent.slug`).
    #[error("conflict on {constraint}")]
    Conflict { constraint: String },
    /// An idempotency key was used again with a different request; the first request's job stands.
    #[error("idempotency key `{key}` was already used by a different request")]
    IdempotencyConflict { key: String },
    /// The database refused a job state change (the transition trigger fired).
    #[error("{0}")]
    IllegalTransition(String),
    /// A guarded update found the row in another state than expected (lost race, already decided, …).
    #[error("{entity} is not in the expected state")]
    StaleState { entity: &'static str },
    /// The database cannot be reached or the pool is exhausted; retry later.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A row holds a value this version cannot read (bad enum text, unreadable JSON, failed decryption).
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The database is already used by another process (SQLite lock file).
    #[error("{0}")]
    Locked(String),
    /// Anything else the database reported.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl StoreError {
    /// True when retrying later may succeed without any change by the caller.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::RowNotFound => Self::NotFound { entity: "row" },
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => Self::Unavailable(err),
            sqlx::Error::Database(db_err) => classify_database_error(db_err),
            other => Self::Database(other),
        }
    }
}

fn classify_database_error(db_err: Box<dyn sqlx::error::DatabaseError>) -> StoreError {
    let message = db_err.message().to_owned();
    if message.contains("illegal job transition") {
        return StoreError::IllegalTransition(message);
    }
    match db_err.kind() {
        sqlx::error::ErrorKind::UniqueViolation | sqlx::error::ErrorKind::ForeignKeyViolation => {
            let constraint = db_err
                .constraint()
                .map(str::to_owned)
                // SQLite: "UNIQUE constraint failed: agent.slug"
                .or_else(|| message.split_once(": ").map(|(_, cols)| cols.to_owned()))
                .unwrap_or(message);
            StoreError::Conflict { constraint }
        }
        _ => {
            // Postgres admin shutdown / connection loss surface as database errors with these codes.
            let code = db_err.code().map(|c| c.into_owned()).unwrap_or_default();
            if code.starts_with("57P") || code.starts_with("08") {
                StoreError::Unavailable(sqlx::Error::Database(db_err))
            } else {
                StoreError::Database(sqlx::Error::Database(db_err))
            }
        }
    }
}
