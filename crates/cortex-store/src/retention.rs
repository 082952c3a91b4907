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
use crate::rows::ms;
use crate::{Result, Store};

/// The states of jobs that ended (or rest) and may be cleaned up, as an SQL list.
macro_rules! resting {
    () => {
        "('completed', 'failed', 'timed_out', 'dead_letter')"
    };
}

impl Store {
    /// Deletes up to `limit` `llm.delta` events of jobs that ended before `ended_before`.
    pub async fn compact_deltas(&self, ended_before: Timestamp, limit: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let deleted = write!(tx, |conn| {
            sqlx::query(concat!(
                "DELETE FROM agent_event WHERE seq IN (SELECT e.seq FROM agent_event e JOIN job j ON j.id = e.job_id \
                 WHERE e.type = 'llm.delta' AND e.created_at < $1 AND j.completed_at < $1 AND j.status IN ",
                resting!(),
                " LIMIT $2)"
            ))
            .bind(ms(ended_before))
            .bind(limit)
            .execute(conn)
            .await?
            .rows_affected()
        });
        tx.commit().await?;
        Ok(deleted)
    }

    /// Deletes up to `limit` events of jobs that ended before `ended_before`.
    pub async fn delete_events_of_ended_jobs(&self, ended_before: Timestamp, limit: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let deleted = write!(tx, |conn| {
            sqlx::query(concat!(
                "DELETE FROM agent_event WHERE seq IN (SELECT e.seq FROM job j JOIN agent_event e ON e.job_id = j.id \
                 WHERE j.completed_at < $1 AND j.status IN ",
                resting!(),
                " LIMIT $2)"
            ))
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
            sqlx::query_scalar(concat!(
                "SELECT j.id FROM job j WHERE j.completed_at < $1 AND j.status IN ",
                resting!(),
                " AND NOT EXISTS (SELECT 1 FROM approval_request a WHERE a.job_id = j.id) ORDER BY j.completed_at, j.id LIMIT $2"
            ))
            .bind(ms(ended_before))
            .bind(limit)
            .fetch_all(conn)
            .await?
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
