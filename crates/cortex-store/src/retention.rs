//! Retention (SPEC Appendix B): the deletes that keep the database from growing forever.
//!
//! Each method deletes at most `limit` driving rows in one short transaction and returns how many went,
//! so the caller (`cortex_jobs::retention`) can loop in small batches that never hold the (SQLite:
//! single) writer for long and never touch rows a claim looks at: only jobs in a resting state
//! (`completed_at` set) and rows hanging off them qualify. Cut-offs are absolute times computed by the
//! caller from the injected clock.
//!
//! What goes, and when:
//! - `llm.delta` events of a job that ended before the cut-off (its `llm.message` keeps the full text);
//! - every event of a job that ended before the job cut-off, then the job itself with its tool calls,
//!   steering and job budget lines — unless an approval still refers to it: approvals (and their audit
//!   chain) follow the longer audit retention, and their job stays as long as they do;
//! - events not tied to a job, decided approvals and audit log entries older than their cut-offs.
//!
//! Event ids are never reused (SQLite `AUTOINCREMENT`, PostgreSQL identity), so an SSE reader resuming
//! after a deleted id simply continues with the next one that exists.

use cortex_core::Timestamp;
use uuid::Uuid;

use crate::engine::write;
use crate::rows::{ms, time};
use crate::{Result, Store};

/// The states of jobs that ended (or rest) and may be cleaned up, as an SQL list.
macro_rules! resting {
    () => {
        "('completed', 'failed', 'timed_out', 'dead_letter')"
    };
}

/// Condition on `job j`: it ended before `$1`. The status (never null) is wrapped in `COALESCE` so that
/// no index serves that term: SQLite keeps no statistics, and offered the `IN` list it walked the status
/// index (then `job_claim`, now `job_live`) over every job that ever ended, on the single writer, each
/// batch of every pass (88–169 ms at 60,000 jobs) instead of the `completed_at` range of `job_completed`
/// (0.1–0.6 ms).
/// PostgreSQL, which has statistics, uses `job_completed` either way.
macro_rules! ended_before {
    () => {
        concat!("j.completed_at < $1 AND COALESCE(j.status, '') IN ", resting!())
    };
}

/// Events of jobs that ended before `$1`, at most `$2`.
macro_rules! events_of_ended_jobs {
    () => {
        concat!("SELECT e.seq FROM job j JOIN agent_event e ON e.job_id = j.id WHERE ", ended_before!(), " LIMIT $2")
    };
}

/// The next `$2` jobs that ended before `$1`, after (`$3` completion time, `$4` id) in that order: delta
/// compaction walks ended jobs once, each batch starting where the previous one stopped. Before, each
/// batch looked for `llm.delta` events among the events of every job still kept (30 days of them), on
/// SQLite's single writer (121–490 ms per batch at 60,000 jobs).
macro_rules! ended_jobs_after {
    () => {
        concat!(
            "SELECT j.id, j.completed_at FROM job j WHERE ",
            ended_before!(),
            " AND j.completed_at >= $3 AND (j.completed_at > $3 OR j.id > $4) \
             ORDER BY j.completed_at, j.id LIMIT $2"
        )
    };
}

/// Jobs that ended before `$1` and that no approval refers to, oldest first, at most `$2`.
macro_rules! ended_jobs {
    () => {
        concat!(
            "SELECT j.id FROM job j WHERE ",
            ended_before!(),
            " AND NOT EXISTS (SELECT 1 FROM approval_request a WHERE a.job_id = j.id) \
             ORDER BY j.completed_at, j.id LIMIT $2"
        )
    };
}

/// How far delta compaction has got: every job that ended before `completed_at`, or then with an id up
/// to `job_id`, has no `llm.delta` events left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionMark {
    pub completed_at: Timestamp,
    pub job_id: Uuid,
}

/// What one batch of [`Store::compact_deltas`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaBatch {
    /// Ended jobs looked at: fewer than asked for means none is left before the cut-off.
    pub jobs: u64,
    /// `llm.delta` events deleted.
    pub deleted: u64,
    /// Where the next batch starts (the last job looked at); `None` when there was none.
    pub next: Option<CompactionMark>,
}

impl Store {
    /// Deletes the `llm.delta` events of the next `jobs` jobs that ended before `ended_before`, after
    /// `after` (from the oldest when `None`), in order of completion.
    pub async fn compact_deltas(
        &self,
        after: Option<CompactionMark>,
        ended_before: Timestamp,
        jobs: i64,
    ) -> Result<DeltaBatch> {
        let (from, from_id) = after.map_or((i64::MIN, Uuid::nil()), |mark| (ms(mark.completed_at), mark.job_id));
        let mut tx = self.begin().await?;
        let ended: Vec<(Uuid, i64)> = write!(tx, |conn| {
            sqlx::query_as(ended_jobs_after!())
                .bind(ms(ended_before))
                .bind(jobs)
                .bind(from)
                .bind(from_id)
                .fetch_all(conn)
                .await?
        });
        let Some(&(last_id, last_completed_at)) = ended.last() else {
            return Ok(DeltaBatch { jobs: 0, deleted: 0, next: None });
        };
        let ids: Vec<Uuid> = ended.iter().map(|(id, _)| *id).collect();
        // Only deltas from before the cut-off: a job retried meanwhile streams new ones, which stay.
        let deleted = write!(tx, |conn| {
            let mut query =
                sqlx::QueryBuilder::new("DELETE FROM agent_event WHERE type = 'llm.delta' AND created_at < ");
            query.push_bind(ms(ended_before)).push(" AND job_id IN (");
            push_ids(&mut query, &ids);
            query.push(")");
            query.build().execute(conn).await?.rows_affected()
        });
        tx.commit().await?;
        Ok(DeltaBatch {
            jobs: ended.len() as u64,
            deleted,
            next: Some(CompactionMark { completed_at: time(last_completed_at), job_id: last_id }),
        })
    }

    /// Deletes up to `limit` events of jobs that ended before `ended_before`.
    pub async fn delete_events_of_ended_jobs(&self, ended_before: Timestamp, limit: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let deleted = write!(tx, |conn| {
            sqlx::query(concat!("DELETE FROM agent_event WHERE seq IN (", events_of_ended_jobs!(), ")"))
                .bind(ms(ended_before))
                .bind(limit)
                .execute(conn)
                .await?
                .rows_affected()
        });
        tx.commit().await?;
        Ok(deleted)
    }

    /// Deletes up to `limit` events without a job (agent-level) created before `before`.
    pub async fn delete_loose_events(&self, before: Timestamp, limit: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let deleted = write!(tx, |conn| {
            sqlx::query(
                "DELETE FROM agent_event WHERE seq IN \
                 (SELECT seq FROM agent_event WHERE job_id IS NULL AND created_at < $1 LIMIT $2)",
            )
            .bind(ms(before))
            .bind(limit)
            .execute(conn)
            .await?
            .rows_affected()
        });
        tx.commit().await?;
        Ok(deleted)
    }

    /// Deletes up to `limit` jobs that ended before `ended_before` and that no approval refers to, with
    /// their events, tool calls (cascade), steering (cascade) and job budget lines. Their session messages
    /// stay (the conversation), losing only the link to the job.
    pub async fn delete_ended_jobs(&self, ended_before: Timestamp, limit: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let ids: Vec<Uuid> = write!(tx, |conn| {
            sqlx::query_scalar(ended_jobs!()).bind(ms(ended_before)).bind(limit).fetch_all(conn).await?
        });
        if ids.is_empty() {
            return Ok(0);
        }
        // The state is checked again while deleting: an operator may have retried a job meanwhile.
        let deleted: Vec<Uuid> = write!(tx, |conn| {
            let mut query = sqlx::QueryBuilder::new("DELETE FROM job WHERE id IN (");
            push_ids(&mut query, &ids);
            query.push(concat!(") AND status IN ", resting!(), " RETURNING id"));
            query.build_query_scalar().fetch_all(conn).await?
        });
        if !deleted.is_empty() {
            for statement in [
                "DELETE FROM agent_event WHERE job_id IN (",
                "DELETE FROM budget_ledger WHERE scope_kind = 'job' AND scope_id IN (",
                "DELETE FROM budget_reservation WHERE job_id IN (",
            ] {
                write!(tx, |conn| {
                    let mut query = sqlx::QueryBuilder::new(statement);
                    push_ids(&mut query, &deleted);
                    query.push(")");
                    query.build().execute(conn).await?.rows_affected()
                });
            }
        }
        tx.commit().await?;
        Ok(deleted.len() as u64)
    }

    /// Deletes up to `limit` decided or expired approvals created before `before`, with their audit chain
    /// (cascade). Their jobs become eligible for [`Store::delete_ended_jobs`].
    pub async fn delete_old_approvals(&self, before: Timestamp, limit: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let deleted = write!(tx, |conn| {
            sqlx::query(
                "DELETE FROM approval_request WHERE id IN (SELECT id FROM approval_request \
                 WHERE status IN ('approved', 'rejected', 'expired') AND created_at < $1 LIMIT $2)",
            )
            .bind(ms(before))
            .bind(limit)
            .execute(conn)
            .await?
            .rows_affected()
        });
        tx.commit().await?;
        Ok(deleted)
    }

    /// Deletes up to `limit` audit log entries created before `before`.
    pub async fn delete_old_audit_entries(&self, before: Timestamp, limit: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let deleted = write!(tx, |conn| {
            sqlx::query("DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE created_at < $1 LIMIT $2)")
                .bind(ms(before))
                .bind(limit)
                .execute(conn)
                .await?
                .rows_affected()
        });
        tx.commit().await?;
        Ok(deleted)
    }
}

/// Appends `id, id, …` as bound parameters.
fn push_ids<DB: sqlx::Database>(query: &mut sqlx::QueryBuilder<DB>, ids: &[Uuid])
where
    Uuid: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
}

#[cfg(test)]
mod tests {
    /// SQLite has no statistics to choose by: the batches must find ended jobs through `job_completed`'s
    /// range, not walk every job that ever ended through the status index.
    #[tokio::test]
    async fn sqlite_finds_ended_jobs_by_their_completion_time() {
        let (_dir, store) = crate::engine::scratch_sqlite().await;
        let mut write = crate::engine::sqlite_writer(&store).await;
        for (query, range) in [
            (events_of_ended_jobs!(), "(completed_at<?)"),
            (ended_jobs!(), "(completed_at<?)"),
            (ended_jobs_after!(), "(completed_at>? AND completed_at<?)"),
        ] {
            let plan = explain(&mut write, query).await;
            let range = format!("USING INDEX job_completed {range}");
            assert!(plan.first().is_some_and(|step| step.contains(&range)), "{query}: {plan:?}");
        }
        drop(write);
        store.close().await;
    }

    /// The plan's steps, outermost first.
    async fn explain(conn: &mut sqlx::SqliteConnection, query: &str) -> Vec<String> {
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {query}"))).bind(0_i64).bind(500_i64);
        let rows: Vec<(i64, i64, i64, String)> =
            if query.contains("$4") { rows.bind(0_i64).bind(uuid::Uuid::nil()) } else { rows }
                .fetch_all(conn)
                .await
                .unwrap();
        rows.into_iter().map(|(_, _, _, detail)| detail).collect()
    }
}
