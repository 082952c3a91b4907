//! An agent's spend over time for the dashboard's cost charts (SPEC §11.2 "Agent detail" → Cost): tokens
//! and cost summed from its jobs (each job carries what its model calls cost, SPEC §5.8), per UTC day
//! and per job kind. Days are counted by the job's creation time; retention deletes ended jobs after
//! `CORTEX_RETENTION_DAYS`, so windows longer than that lose their oldest days.

use cortex_core::Timestamp;
use uuid::Uuid;

use crate::engine::read;
use crate::rows::ms;
use crate::{Result, Store};

/// Milliseconds in a UTC day.
const DAY_MS: i64 = 86_400_000;

/// Usage of one bucket (a day or a job kind).
#[derive(Debug, Clone, PartialEq)]
pub struct UsageBucket {
    /// The UTC day as days since 1970-01-01, or the job kind.
    pub key: UsageKey,
    pub jobs: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
}

/// What a [`UsageBucket`] groups by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageKey {
    Day(i64),
    Kind(String),
}

#[derive(sqlx::FromRow)]
struct DayRow {
    day: i64,
    jobs: i64,
    tokens_in: i64,
    tokens_out: i64,
    cost_usd: f64,
}

#[derive(sqlx::FromRow)]
struct KindRow {
    kind: String,
    jobs: i64,
    tokens_in: i64,
    tokens_out: i64,
    cost_usd: f64,
}

impl Store {
    /// The agent's usage per UTC day of the jobs created since `since`, oldest day first; days without a
    /// job are absent.
    pub async fn agent_usage_by_day(&self, agent_id: Uuid, since: Timestamp) -> Result<Vec<UsageBucket>> {
        // PostgreSQL sums BIGINT into NUMERIC: cast back so both engines decode the same types.
        let rows: Vec<DayRow> = read!(self, |conn| {
            sqlx::query_as(
                "SELECT created_at / 86400000 AS day, COUNT(*) AS jobs, CAST(SUM(tokens_in) AS BIGINT) AS tokens_in, \
                 CAST(SUM(tokens_out) AS BIGINT) AS tokens_out, CAST(SUM(cost_usd) AS DOUBLE PRECISION) AS cost_usd \
                 FROM job WHERE agent_id = $1 AND created_at >= $2 GROUP BY created_at / 86400000 ORDER BY day",
            )
            .bind(agent_id)
            .bind(ms(since))
            .fetch_all(conn)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|row| UsageBucket {
                key: UsageKey::Day(row.day),
                jobs: row.jobs,
                tokens_in: row.tokens_in,
                tokens_out: row.tokens_out,
                cost_usd: row.cost_usd,
            })
            .collect())
    }

    /// The agent's usage per job kind of the jobs created since `since`, costliest first.
    pub async fn agent_usage_by_kind(&self, agent_id: Uuid, since: Timestamp) -> Result<Vec<UsageBucket>> {
        let rows: Vec<KindRow> = read!(self, |conn| {
            sqlx::query_as(
                "SELECT kind, COUNT(*) AS jobs, CAST(SUM(tokens_in) AS BIGINT) AS tokens_in, \
                 CAST(SUM(tokens_out) AS BIGINT) AS tokens_out, CAST(SUM(cost_usd) AS DOUBLE PRECISION) AS cost_usd \
                 FROM job WHERE agent_id = $1 AND created_at >= $2 GROUP BY kind ORDER BY cost_usd DESC, kind",
            )
            .bind(agent_id)
            .bind(ms(since))
            .fetch_all(conn)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|row| UsageBucket {
                key: UsageKey::Kind(row.kind),
                jobs: row.jobs,
                tokens_in: row.tokens_in,
                tokens_out: row.tokens_out,
                cost_usd: row.cost_usd,
            })
            .collect())
    }
}

/// The day number (days since 1970-01-01, UTC) of `time`, as [`UsageKey::Day`] counts it.
pub fn day_of(time: Timestamp) -> i64 {
    ms(time).div_euclid(DAY_MS)
}
