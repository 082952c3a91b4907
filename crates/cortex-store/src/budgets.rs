//! Token and cost budgets with atomic reservations (SPEC §5.1 step 5, §5.8).
//!
//! `budget_ledger` holds, per scope (agent, API key, session, job) and period (`total`, `day:YYYY-MM-DD`,
//! `month:YYYY-MM`), what was spent and what is reserved by calls in flight. Before a model call the runtime
//! reserves the call's worst case on every line that applies in **one** transaction, with one conditional
//! `UPDATE … WHERE spent + reserved + amount <= limit` over all the lines (a line left out is a refusal),
//! which both engines evaluate atomically against concurrent writers (SQLite has one writer; PostgreSQL
//! first locks the rows in one fixed order, then re-checks the condition on the locked rows).
//! So concurrent turns can never overspend. Afterwards the reservation is settled to the actual usage.
//!
//! A reservation never outlives its attempt: when a running attempt ends or is suspended (completion,
//! failure, cancel, timeout, shutdown release, a dead worker's attempt ended by the reaper), the job's
//! reservations still open are released in the same transaction (see `Tx::end_attempt`). The
//! interrupted call is not charged: its real cost is unknown, and charging its worst case would take a
//! whole call's allowance from the day for every cancelled turn.
//!
//! A line is stored as up to [`SPEND_SHARDS`] rows (`shard`), and its figures are their sum. A line with a
//! limit is always reserved on shard 0, under that row's lock, and checked against the sum of all its
//! rows, so the guarantee above holds. A line without a limit only records spend (an agent's day and month
//! when no limit is configured): a job's calls use the shard its id picks, so the calls of many jobs of one
//! agent do not all queue on one row lock held through each commit (docs/PERFORMANCE.md, section 14).

use std::cmp::Ordering;

use cortex_core::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::engine::{TxConn, read, write};
use crate::rows::{from_json, ms, sqlite_id_list};
use crate::{Result, Store, StoreError, Tx};

/// What a budget line is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetScope {
    Agent,
    ApiKey,
    Session,
    Job,
}

impl BudgetScope {
    /// The `budget_ledger.scope_kind` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::ApiKey => "api_key",
            Self::Session => "session",
            Self::Job => "job",
        }
    }
}

/// One ledger row a call is charged to, with the limits that apply to it (either may be absent: the row
/// then only records spend).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetLine {
    pub scope: BudgetScope,
    pub scope_id: Uuid,
    /// `total`, `day:YYYY-MM-DD` or `month:YYYY-MM`.
    pub period: String,
    pub token_limit: Option<i64>,
    pub usd_limit: Option<f64>,
}

/// How many rows a line without a limit (and a credential's spend) is spread over.
pub const SPEND_SHARDS: u8 = 16;

/// The spend row (of [`SPEND_SHARDS`]) that the calls of the job `job_id` add to.
pub(crate) fn spend_shard(job_id: Uuid) -> i16 {
    (job_id.as_u128() % u128::from(SPEND_SHARDS)) as i16
}

impl BudgetLine {
    /// Whether a reservation on this line must be checked against a limit.
    fn is_limited(&self) -> bool {
        self.token_limit.is_some() || self.usd_limit.is_some()
    }

    /// The row of this line that the calls of `job_id` use: shard 0 when the line has a limit (one row
    /// lock orders every reservation that is checked), else the shard the job's id picks.
    fn shard(&self, job_id: Uuid) -> i16 {
        if self.is_limited() { 0 } else { spend_shard(job_id) }
    }

    /// Whether `(scope_kind, scope_id, period)` is this line's ledger row.
    fn is_row(&self, (kind, id, period): &(String, Uuid, String)) -> bool {
        self.scope.as_str() == kind && self.scope_id == *id && self.period == *period
    }

    /// A stable order, so concurrent reservations lock rows in the same sequence (no deadlocks).
    fn cmp_key(&self, other: &Self) -> Ordering {
        (self.scope, self.scope_id, &self.period).cmp(&(other.scope, other.scope_id, &other.period))
    }
}

/// The two things a budget limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    Tokens,
    Usd,
}

/// Why a reservation did not fit: the first line whose limit it would exceed.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetRefusal {
    pub line: BudgetLine,
    pub kind: LimitKind,
    pub limit: f64,
    pub spent: f64,
    pub reserved: f64,
    pub requested: f64,
}

/// One line after settlement, to detect threshold crossings (the 80 % warning).
#[derive(Debug, Clone, PartialEq)]
pub struct SettledLine {
    pub line: BudgetLine,
    pub tokens_before: i64,
    pub tokens_after: i64,
    pub usd_before: f64,
    pub usd_after: f64,
}

/// Spend of one scope in one period, for `GET /agents/{id}/usage`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct BudgetUsageRow {
    pub period: String,
    pub tokens_spent: i64,
    pub tokens_reserved: i64,
    pub usd_spent: f64,
    pub usd_reserved: f64,
}

/// Period keys in UTC.
pub fn day_period(t: Timestamp) -> String {
    t.format("day:%Y-%m-%d").to_string()
}

/// Period keys in UTC.
pub fn month_period(t: Timestamp) -> String {
    t.format("month:%Y-%m").to_string()
}

/// The period of job and session budgets, which never roll over.
pub const TOTAL_PERIOD: &str = "total";

/// Joins a `budget_ledger` row to its `line` (a `VALUES` list of kind, id, period, shard, …).
const MATCHES_LINE: &str = "budget_ledger.scope_kind = line.column1 AND budget_ledger.scope_id = line.column2 \
     AND budget_ledger.period = line.column3 AND budget_ledger.shard = line.column4";

/// `SUM(sum)` over the other shards of the `budget_ledger` row's line (alias `other`; 0 when there are none).
fn other_shards(sum: &str) -> String {
    format!(
        "(SELECT COALESCE(SUM({sum}), 0) FROM budget_ledger AS other \
         WHERE other.scope_kind = budget_ledger.scope_kind AND other.scope_id = budget_ledger.scope_id \
         AND other.period = budget_ledger.period AND other.shard <> budget_ledger.shard)"
    )
}

#[derive(sqlx::FromRow)]
struct ReservationRow {
    job_id: Uuid,
    entries: Json<Value>,
    tokens: i64,
    usd: f64,
}

impl Store {
    /// Reserves `tokens` and `usd` on every line atomically in a transaction of its own. `Ok(Err(refusal))`
    /// when any line's limit would be exceeded (nothing is reserved then); `Ok(Ok(id))` is the reservation
    /// to settle afterwards.
    pub async fn reserve_budget(
        &self,
        job_id: Uuid,
        lines: &[BudgetLine],
        tokens: i64,
        usd: f64,
    ) -> Result<std::result::Result<Uuid, BudgetRefusal>> {
        let mut tx = self.begin().await?;
        let reserved = tx.reserve_budget(job_id, lines, tokens, usd).await?;
        if reserved.is_ok() {
            tx.commit().await?;
        }
        Ok(reserved)
    }

    /// Spend per period of one scope, oldest period first.
    pub async fn budget_usage(&self, scope: BudgetScope, scope_id: Uuid) -> Result<Vec<BudgetUsageRow>> {
        Ok(read!(self, |conn| {
            sqlx::query_as(
                "SELECT period, CAST(SUM(tokens_spent) AS BIGINT) AS tokens_spent, \
                 CAST(SUM(tokens_reserved) AS BIGINT) AS tokens_reserved, SUM(usd_spent) AS usd_spent, \
                 SUM(usd_reserved) AS usd_reserved FROM budget_ledger \
                 WHERE scope_kind = $1 AND scope_id = $2 GROUP BY period ORDER BY period",
            )
            .bind(scope.as_str())
            .bind(scope_id)
            .fetch_all(conn)
            .await?
        }))
    }

    /// The `budget` document of an API key (its own spend limits), if it has one.
    pub async fn api_key_budget(&self, key_id: Uuid) -> Result<Option<Value>> {
        let budget: Option<Option<Json<Value>>> = read!(self, |conn| {
            sqlx::query_scalar("SELECT budget FROM api_key WHERE id = $1").bind(key_id).fetch_optional(conn).await?
        });
        Ok(budget.flatten().map(|json| json.0).filter(|value| !value.is_null()))
    }

    /// Model calls (`llm.usage` events) of an agent since `since`, for optional per-agent rate limits.
    pub async fn count_agent_llm_calls_since(&self, agent_id: Uuid, since: Timestamp) -> Result<i64> {
        Ok(read!(self, |conn| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM agent_event WHERE type = 'llm.usage' AND agent_id = $1 AND created_at >= $2",
            )
            .bind(agent_id)
            .bind(ms(since))
            .fetch_one(conn)
            .await?
        }))
    }
}

/// SQLite's release of many jobs' open reservations ([`Tx::release_reservations`]): `$1` is a JSON
/// array of the jobs' ids in hex.
pub(crate) const SQLITE_RELEASE: &str = "DELETE FROM budget_reservation WHERE job_id IN \
     (SELECT unhex(value) FROM json_each($1)) RETURNING job_id, entries, tokens, usd";

impl Tx {
    /// Reserves `tokens` and `usd` on every line inside this transaction (so the caller can write more in
    /// it, such as the event announcing the call). On `Ok(Err(refusal))` some lines may already hold the
    /// reservation: the caller must drop the transaction, which undoes them.
    pub async fn reserve_budget(
        &mut self,
        job_id: Uuid,
        lines: &[BudgetLine],
        tokens: i64,
        usd: f64,
    ) -> Result<std::result::Result<Uuid, BudgetRefusal>> {
        let mut lines = lines.to_vec();
        lines.sort_by(BudgetLine::cmp_key);
        let now = ms(self.now());
        self.ensure_budget_rows(job_id, &lines, now).await?;
        self.lock_budget_rows(job_id, &lines).await?;
        // Every line in one statement; a line whose limit the amount would break is left out, and then
        // the caller drops the transaction (undoing the others). A limit is checked against the line's
        // total: this row plus its other shards.
        let reserved: Vec<(String, Uuid, String)> = write!(self, |conn| {
            let mut query = sqlx::QueryBuilder::new("UPDATE budget_ledger SET tokens_reserved = tokens_reserved + ");
            query.push_bind(tokens).push(", usd_reserved = usd_reserved + ").push_bind(usd);
            query.push(", updated_at = ").push_bind(now).push(" FROM (");
            query.push_values(&lines, |mut row, line| {
                row.push_bind(line.scope.as_str())
                    .push_bind(line.scope_id)
                    .push_bind(&line.period)
                    .push_bind(line.shard(job_id))
                    .push_bind(line.token_limit)
                    .push_bind(line.usd_limit);
            });
            query.push(") AS line WHERE ");
            query.push(MATCHES_LINE);
            query.push(" AND (line.column5 IS NULL OR budget_ledger.tokens_spent + budget_ledger.tokens_reserved + ");
            query
                .push(other_shards("other.tokens_spent + other.tokens_reserved"))
                .push(" + ")
                .push_bind(tokens)
                .push(" <= line.column5)");
            query.push(" AND (line.column6 IS NULL OR budget_ledger.usd_spent + budget_ledger.usd_reserved + ");
            query
                .push(other_shards("other.usd_spent + other.usd_reserved"))
                .push(" + ")
                .push_bind(usd)
                .push(" <= line.column6)");
            query.push(" RETURNING budget_ledger.scope_kind, budget_ledger.scope_id, budget_ledger.period");
            query.build_query_as().fetch_all(conn).await?
        });
        if let Some(refused) = lines.iter().find(|line| !reserved.iter().any(|row| line.is_row(row))) {
            return Ok(Err(self.refusal(refused, tokens, usd).await?));
        }
        let id = cortex_core::new_id();
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO budget_reservation (id, job_id, entries, tokens, usd, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(job_id)
            .bind(Json(serde_json::to_value(&lines).unwrap_or(Value::Null)))
            .bind(tokens)
            .bind(usd)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(Ok(id))
    }

    /// Creates the ledger rows (of `job_id`'s shards) that do not exist yet, in one statement. Rows that
    /// exist are filtered out before the insert: on PostgreSQL an `ON CONFLICT` with a row that another
    /// transaction is updating waits for that transaction to end.
    async fn ensure_budget_rows(&mut self, job_id: Uuid, lines: &[BudgetLine], now: i64) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        write!(self, |conn| {
            let mut query = sqlx::QueryBuilder::new(
                "INSERT INTO budget_ledger (scope_kind, scope_id, period, shard, updated_at) \
                 SELECT line.column1, line.column2, line.column3, line.column4, line.column5 FROM (",
            );
            query.push_values(lines, |mut row, line| {
                row.push_bind(line.scope.as_str())
                    .push_bind(line.scope_id)
                    .push_bind(&line.period)
                    .push_bind(line.shard(job_id))
                    .push_bind(now);
            });
            query.push(") AS line WHERE NOT EXISTS (SELECT 1 FROM budget_ledger WHERE ").push(MATCHES_LINE);
            query.push(") ON CONFLICT (scope_kind, scope_id, period, shard) DO NOTHING");
            query.build().execute(conn).await?.rows_affected()
        });
        Ok(())
    }

    /// PostgreSQL: locks the ledger rows of `lines` (`job_id`'s shards) in their [`BudgetLine::cmp_key`]
    /// order before one statement updates them all (an `UPDATE` of many rows locks them in whatever order
    /// its plan visits them; two of those could wait on each other). One statement, for any number of
    /// lines. SQLite serialises writers, so it needs none.
    async fn lock_budget_rows(&mut self, job_id: Uuid, lines: &[BudgetLine]) -> Result<()> {
        if let crate::engine::TxConn::Postgres(conn) = &mut self.conn {
            let mut query = sqlx::QueryBuilder::new("SELECT 1 FROM budget_ledger JOIN (");
            query.push_values(lines.iter().enumerate(), |mut row, (position, line)| {
                row.push_bind(line.scope.as_str())
                    .push_bind(line.scope_id)
                    .push_bind(&line.period)
                    .push_bind(line.shard(job_id))
                    .push_bind(position as i64);
            });
            query.push(") AS line ON ").push(MATCHES_LINE);
            query.push(" ORDER BY line.column5 FOR UPDATE OF budget_ledger");
            query.build().execute(&mut **conn).await?;
        }
        Ok(())
    }

    /// Which limit of `line` (the sum of its rows) a reservation of `tokens`/`usd` would break.
    async fn refusal(&mut self, line: &BudgetLine, tokens: i64, usd: f64) -> Result<BudgetRefusal> {
        let (tokens_spent, tokens_reserved, usd_spent, usd_reserved): (i64, i64, f64, f64) = write!(self, |conn| {
            sqlx::query_as(
                "SELECT CAST(SUM(tokens_spent) AS BIGINT), CAST(SUM(tokens_reserved) AS BIGINT), SUM(usd_spent), \
                 SUM(usd_reserved) FROM budget_ledger WHERE scope_kind = $1 AND scope_id = $2 AND period = $3",
            )
            .bind(line.scope.as_str())
            .bind(line.scope_id)
            .bind(&line.period)
            .fetch_one(conn)
            .await?
        });
        let over_tokens = line.token_limit.is_some_and(|limit| tokens_spent + tokens_reserved + tokens > limit);
        Ok(match (over_tokens, line.token_limit, line.usd_limit) {
            (true, Some(limit), _) | (false, Some(limit), None) => BudgetRefusal {
                line: line.clone(),
                kind: LimitKind::Tokens,
                limit: limit as f64,
                spent: tokens_spent as f64,
                reserved: tokens_reserved as f64,
                requested: tokens as f64,
            },
            (_, _, limit) => BudgetRefusal {
                line: line.clone(),
                kind: LimitKind::Usd,
                limit: limit.unwrap_or(0.0),
                spent: usd_spent,
                reserved: usd_reserved,
                requested: usd,
            },
        })
    }

    /// Replaces a reservation by the actual usage of the call on every line it covered. Returns the lines
    /// with their spend before and after; empty when the reservation was already settled or released.
    pub async fn settle_budget(&mut self, reservation_id: Uuid, tokens: i64, usd: f64) -> Result<Vec<SettledLine>> {
        // Deleting first claims the reservation: of two concurrent settlers only one gets the row.
        let row: Option<ReservationRow> = write!(self, |conn| {
            sqlx::query_as("DELETE FROM budget_reservation WHERE id = $1 RETURNING job_id, entries, tokens, usd")
                .bind(reservation_id)
                .fetch_optional(conn)
                .await?
        });
        match row {
            Some(row) => self.settle_reservation(row, tokens, usd).await,
            None => Ok(Vec::new()),
        }
    }

    /// Releases every open reservation of these jobs without charging it (the attempts that made them
    /// ended without settling, so none of their calls is in flight any more). Returns how many there
    /// were. One statement for all the jobs (a batch of completions) on either engine.
    pub(crate) async fn release_reservations(&mut self, job_ids: &[Uuid]) -> Result<usize> {
        let rows: Vec<ReservationRow> = match &mut self.conn {
            TxConn::Postgres(conn) => {
                sqlx::query_as(
                    "DELETE FROM budget_reservation WHERE job_id = ANY($1) RETURNING job_id, entries, tokens, usd",
                )
                .bind(job_ids)
                .fetch_all(&mut **conn)
                .await?
            }
            TxConn::Sqlite(conn) => {
                sqlx::query_as(SQLITE_RELEASE)
                    .bind(sqlite_id_list(job_ids.iter().copied()))
                    .fetch_all(&mut **conn)
                    .await?
            }
        };
        let count = rows.len();
        for row in rows {
            self.settle_reservation(row, 0, 0.0).await?;
        }
        Ok(count)
    }

    /// Moves a reservation (already removed from `budget_reservation`) off its lines and charges `tokens`
    /// and `usd` to them instead.
    async fn settle_reservation(&mut self, row: ReservationRow, tokens: i64, usd: f64) -> Result<Vec<SettledLine>> {
        let mut lines: Vec<BudgetLine> = from_json("budget_reservation.entries", row.entries.0)?;
        lines.sort_by(BudgetLine::cmp_key);
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        let now = ms(self.now());
        let job_id = row.job_id;
        self.lock_budget_rows(job_id, &lines).await?;
        // The row's new spend plus its line's other shards: the line's total after this call.
        let after: Vec<(String, Uuid, String, i64, f64)> = write!(self, |conn| {
            let mut query =
                sqlx::QueryBuilder::new("UPDATE budget_ledger SET tokens_reserved = CASE WHEN tokens_reserved - ");
            query.push_bind(row.tokens).push(" < 0 THEN 0 ELSE tokens_reserved - ").push_bind(row.tokens);
            query.push(" END, usd_reserved = CASE WHEN usd_reserved - ").push_bind(row.usd);
            query.push(" < 0 THEN 0 ELSE usd_reserved - ").push_bind(row.usd);
            query.push(" END, tokens_spent = tokens_spent + ").push_bind(tokens);
            query.push(", usd_spent = usd_spent + ").push_bind(usd);
            query.push(", updated_at = ").push_bind(now).push(" FROM (");
            query.push_values(&lines, |mut values, line| {
                values
                    .push_bind(line.scope.as_str())
                    .push_bind(line.scope_id)
                    .push_bind(&line.period)
                    .push_bind(line.shard(job_id));
            });
            query.push(") AS line WHERE ").push(MATCHES_LINE);
            query.push(
                " RETURNING budget_ledger.scope_kind, budget_ledger.scope_id, budget_ledger.period, \
                 CAST(budget_ledger.tokens_spent + ",
            );
            query.push(other_shards("other.tokens_spent")).push(" AS BIGINT), budget_ledger.usd_spent + ");
            query.push(other_shards("other.usd_spent"));
            query.build_query_as().fetch_all(conn).await?
        });
        let mut settled = Vec::with_capacity(lines.len());
        for line in lines {
            let Some((.., tokens_after, usd_after)) =
                after.iter().find(|(kind, id, period, ..)| line.is_row(&(kind.clone(), *id, period.clone())))
            else {
                return Err(StoreError::Corrupt(format!(
                    "budget_ledger row {}/{}/{} vanished under a reservation",
                    line.scope.as_str(),
                    line.scope_id,
                    line.period
                )));
            };
            let (tokens_after, usd_after) = (*tokens_after, *usd_after);
            settled.push(SettledLine {
                line,
                tokens_before: tokens_after - tokens,
                tokens_after,
                usd_before: usd_after - usd,
                usd_after,
            });
        }
        Ok(settled)
    }
}
