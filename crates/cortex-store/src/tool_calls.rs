//! The tool-call ledger (SPEC §3.3, §4.9): the record that makes side effects happen at most once.
//!
//! A call is written `running` and committed **before** it executes, and written `completed`/`failed` with
//! its output **after**, each in its own transaction. Every state change is a guarded update (`WHERE state =
//! <expected>`), so a late or repeated writer cannot overwrite a settled outcome. Calls refused before
//! execution (unknown tool, invalid arguments, rate limit) are inserted directly in their final state so
//! the ledger also answers "what did the model ask for".

use cortex_core::Timestamp;
use cortex_core::approval::ToolCallState;
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::engine::{read, write};
use crate::rows::{ms, parse, time};
use crate::{Result, Store, StoreError, Tx};

/// One row of the ledger.
#[derive(Debug, Clone)]
pub struct ToolCallRecord {
    pub id: Uuid,
    pub job_id: Uuid,
    pub agent_id: Uuid,
    /// The key of the call within its job: the model-assigned id, suffixed when a model reused an id.
    pub call_id: String,
    pub turn: u32,
    pub tool_ref: String,
    /// Arguments with secrets redacted.
    pub input: Value,
    /// SHA-256 of the canonical JSON of the unredacted arguments (what an approval binds to).
    pub input_hash: String,
    pub state: ToolCallState,
    /// Truncated copy of the result, as the runtime rendered it.
    pub output: Option<Value>,
    pub is_error: bool,
    pub approval_id: Option<Uuid>,
    pub idempotent: bool,
    /// Set once the call executed; `None` for calls refused before execution or still waiting.
    pub duration_ms: Option<i64>,
    pub cost_usd: f64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct ToolCallRow {
    id: Uuid,
    job_id: Uuid,
    agent_id: Uuid,
    call_id: String,
    turn: i64,
    tool_ref: String,
    input: Json<Value>,
    input_hash: String,
    state: String,
    output: Option<Json<Value>>,
    is_error: bool,
    approval_id: Option<Uuid>,
    idempotent: bool,
    duration_ms: Option<i64>,
    cost_usd: f64,
    created_at: i64,
    updated_at: i64,
}

impl ToolCallRow {
    fn into_record(self) -> Result<ToolCallRecord> {
        Ok(ToolCallRecord {
            id: self.id,
            job_id: self.job_id,
            agent_id: self.agent_id,
            call_id: self.call_id,
            turn: u32::try_from(self.turn).map_err(|_| StoreError::Corrupt("tool_call.turn".into()))?,
            tool_ref: self.tool_ref,
            input: self.input.0,
            input_hash: self.input_hash,
            state: parse("tool_call.state", &self.state)?,
            output: self.output.map(|json| json.0),
            is_error: self.is_error,
            approval_id: self.approval_id,
            idempotent: self.idempotent,
            duration_ms: self.duration_ms,
            cost_usd: self.cost_usd,
            created_at: time(self.created_at),
            updated_at: time(self.updated_at),
        })
    }
}

macro_rules! tool_call_columns {
    () => {
        "id, job_id, agent_id, call_id, turn, tool_ref, input, input_hash, state, output, is_error, approval_id, idempotent, \
         duration_ms, cost_usd, created_at, updated_at"
    };
}

/// A call to record.
#[derive(Debug, Clone)]
pub struct NewToolCall {
    pub job_id: Uuid,
    pub agent_id: Uuid,
    pub call_id: String,
    pub turn: u32,
    pub tool_ref: String,
    pub input: Value,
    pub input_hash: String,
    /// `running` (about to execute), `awaiting_approval`, or a final state for refused calls.
    pub state: ToolCallState,
    /// Result of a call refused before execution; `None` otherwise.
    pub output: Option<Value>,
    pub is_error: bool,
    pub idempotent: bool,
}

/// How an executed (or decided) call ended.
#[derive(Debug, Clone)]
pub struct ToolCallEnd {
    /// `completed`, `failed`, `rejected` or `interrupted`.
    pub state: ToolCallState,
    pub output: Value,
    pub is_error: bool,
    /// `None` when the call never executed (rejected by the approver).
    pub duration_ms: Option<i64>,
    pub cost_usd: f64,
}

/// Executions of one tool by one agent within a window, for rate limits (SPEC §6.5 step 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentCalls {
    pub count: i64,
    /// When the oldest counted call started; the window frees a slot once it ages out.
    pub oldest: Option<Timestamp>,
}

impl Store {
    pub async fn get_tool_call(&self, id: Uuid) -> Result<ToolCallRecord> {
        let row: Option<ToolCallRow> = read!(self, |conn| {
            sqlx::query_as(concat!("SELECT ", tool_call_columns!(), " FROM tool_call WHERE id = $1"))
                .bind(id)
                .fetch_optional(conn)
                .await?
        });
        row.ok_or(StoreError::NotFound { entity: "tool call" })?.into_record()
    }

    /// Every call of a job in the order they were made.
    pub async fn tool_calls_of_job(&self, job_id: Uuid) -> Result<Vec<ToolCallRecord>> {
        let rows: Vec<ToolCallRow> = read!(self, |conn| {
            sqlx::query_as(concat!(
                "SELECT ",
                tool_call_columns!(),
                " FROM tool_call WHERE job_id = $1 ORDER BY turn, id"
            ))
            .bind(job_id)
            .fetch_all(conn)
            .await?
        });
        rows.into_iter().map(ToolCallRow::into_record).collect()
    }

    /// Calls of `tool_ref` by `agent_id` that executed (or are executing) since `since`.
    pub async fn recent_tool_calls(&self, agent_id: Uuid, tool_ref: &str, since: Timestamp) -> Result<RecentCalls> {
        let (count, oldest): (i64, Option<i64>) = read!(self, |conn| {
            sqlx::query_as(
                "SELECT COUNT(*), MIN(created_at) FROM tool_call WHERE agent_id = $1 AND tool_ref = $2 AND created_at >= $3 \
                 AND (state = 'running' OR duration_ms IS NOT NULL)",
            )
            .bind(agent_id)
            .bind(tool_ref)
            .bind(ms(since))
            .fetch_one(conn)
            .await?
        });
        Ok(RecentCalls { count, oldest: oldest.map(time) })
    }

    /// Calls by `agent_id` of any tool that executed since `since` (per-agent rate limits, SPEC §5.1).
    pub async fn count_agent_tool_calls_since(&self, agent_id: Uuid, since: Timestamp) -> Result<i64> {
        Ok(read!(self, |conn| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM tool_call WHERE agent_id = $1 AND created_at >= $2 \
                 AND (state = 'running' OR duration_ms IS NOT NULL)",
            )
            .bind(agent_id)
            .bind(ms(since))
            .fetch_one(conn)
            .await?
        }))
    }
}

impl Tx {
    /// Records a call. Fails with `Conflict` when the job already has a call with this `call_id`.
    pub async fn insert_tool_call(&mut self, new: &NewToolCall) -> Result<ToolCallRecord> {
        let id = cortex_core::new_id();
        let now = ms(self.now());
        let row: ToolCallRow = write!(self, |conn| {
            sqlx::query_as(concat!(
                "INSERT INTO tool_call (id, job_id, agent_id, call_id, turn, tool_ref, input, input_hash, state, output, is_error, \
                 idempotent, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13) RETURNING ",
                tool_call_columns!()
            ))
            .bind(id)
            .bind(new.job_id)
            .bind(new.agent_id)
            .bind(&new.call_id)
            .bind(i64::from(new.turn))
            .bind(&new.tool_ref)
            .bind(Json(&new.input))
            .bind(&new.input_hash)
            .bind(new.state.as_str())
            .bind(new.output.as_ref().map(Json))
            .bind(new.is_error)
            .bind(new.idempotent)
            .bind(now)
            .fetch_one(conn)
            .await?
        });
        row.into_record()
    }

    /// Links a call waiting for a human to its approval request.
    pub async fn set_tool_call_approval(&mut self, id: Uuid, approval_id: Uuid) -> Result<()> {
        let now = ms(self.now());
        let updated = write!(self, |conn| {
            sqlx::query("UPDATE tool_call SET approval_id = $2, updated_at = $3 WHERE id = $1")
                .bind(id)
                .bind(approval_id)
                .bind(now)
                .execute(conn)
                .await?
                .rows_affected()
        });
        if updated == 0 {
            return Err(StoreError::NotFound { entity: "tool call" });
        }
        Ok(())
    }

    /// Moves a call that has not ended yet (`awaiting_approval` → `running`, `requested` → `running`);
    /// `StaleState` when it is no longer in `from`.
    pub async fn move_tool_call(&mut self, id: Uuid, from: ToolCallState, to: ToolCallState) -> Result<()> {
        let now = ms(self.now());
        let updated = write!(self, |conn| {
            sqlx::query("UPDATE tool_call SET state = $3, updated_at = $4 WHERE id = $1 AND state = $2")
                .bind(id)
                .bind(from.as_str())
                .bind(to.as_str())
                .bind(now)
                .execute(conn)
                .await?
                .rows_affected()
        });
        if updated == 0 {
            return Err(StoreError::StaleState { entity: "tool call" });
        }
        Ok(())
    }

    /// Settles a call that is `from` (normally `running`) with its outcome; `StaleState` when another writer
    /// settled it first.
    pub async fn finish_tool_call(
        &mut self,
        id: Uuid,
        from: ToolCallState,
        end: &ToolCallEnd,
    ) -> Result<ToolCallRecord> {
        let now = ms(self.now());
        let row: Option<ToolCallRow> = write!(self, |conn| {
            sqlx::query_as(concat!(
                "UPDATE tool_call SET state = $3, output = $4, is_error = $5, duration_ms = $6, cost_usd = $7, updated_at = $8 \
                 WHERE id = $1 AND state = $2 RETURNING ",
                tool_call_columns!()
            ))
            .bind(id)
            .bind(from.as_str())
            .bind(end.state.as_str())
            .bind(Json(&end.output))
            .bind(end.is_error)
            .bind(end.duration_ms)
            .bind(end.cost_usd)
            .bind(now)
            .fetch_optional(conn)
            .await?
        });
        row.ok_or(StoreError::StaleState { entity: "tool call" })?.into_record()
    }
}
