//! Jobs that create jobs (SPEC §5.9, issue 12): how many children a job already has, so the runtime can
//! refuse a delegation beyond its fan-out limit in the transaction that would create the child.

use uuid::Uuid;

use crate::engine::write;
use crate::{Result, Tx};

impl Tx {
    /// The number of jobs whose `parent_job_id` is `parent_id`, as this transaction sees them.
    pub async fn count_child_jobs(&mut self, parent_id: Uuid) -> Result<i64> {
        Ok(write!(self, |conn| {
            sqlx::query_scalar("SELECT COUNT(*) FROM job WHERE parent_job_id = $1")
                .bind(parent_id)
                .fetch_one(conn)
                .await?
        }))
    }
}
