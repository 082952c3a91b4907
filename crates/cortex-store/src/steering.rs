//! The durable steering queue (SPEC §5.6): operator instructions for a running job (or for an agent's next
//! job) that the agent loop injects before its next model call.
//!
//! Taking queued steering is one guarded `UPDATE … WHERE state = 'queued' RETURNING`, so two jobs of the
//! same agent can never both inject an instruction queued for "the agent's next job".

use cortex_core::Timestamp;
use uuid::Uuid;

use crate::engine::{read, write};
use crate::notify::Notification;
use crate::rows::{ms, time};
use crate::{Result, Store, StoreError, Tx};

/// A stored steering instruction.
#[derive(Debug, Clone, PartialEq)]
pub struct SteeringRecord {
    pub id: Uuid,
    pub agent_id: Uuid,
    /// The job it targets; `None` means the agent's next job that runs a turn.
    pub job_id: Option<Uuid>,
    pub instruction: String,
    /// `normal` or `urgent`.
    pub priority: String,
    /// `queued`, `injected` or `expired`.
    pub state: String,
    /// The turn (1-based model call) whose request first carried it.
    pub injected_at_turn: Option<i64>,
    pub created_by: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct SteeringRow {
    id: Uuid,
    agent_id: Uuid,
    job_id: Option<Uuid>,
    instruction: String,
    priority: String,
    state: String,
    injected_at_turn: Option<i64>,
    created_by: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl From<SteeringRow> for SteeringRecord {
    fn from(row: SteeringRow) -> Self {
        Self {
            id: row.id,
            agent_id: row.agent_id,
            job_id: row.job_id,
            instruction: row.instruction,
            priority: row.priority,
            state: row.state,
            injected_at_turn: row.injected_at_turn,
            created_by: row.created_by,
            created_at: time(row.created_at),
            updated_at: time(row.updated_at),
        }
    }
}

macro_rules! steering_columns {
    () => {
        "id, agent_id, job_id, instruction, priority, state, injected_at_turn, created_by, created_at, updated_at"
    };
}

impl Store {
    pub async fn get_steering(&self, id: Uuid) -> Result<SteeringRecord> {
        let row: Option<SteeringRow> = read!(self, |conn| {
            sqlx::query_as(concat!("SELECT ", steering_columns!(), " FROM steering_message WHERE id = $1"))
                .bind(id)
                .fetch_optional(conn)
                .await?
        });
        Ok(row.ok_or(StoreError::NotFound { entity: "steering message" })?.into())
    }

    /// Whether any instruction is waiting for this job (a cheap read before taking them in a write).
    pub async fn has_queued_steering(&self, agent_id: Uuid, job_id: Uuid) -> Result<bool> {
        Ok(read!(self, |conn| {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM steering_message WHERE state = 'queued' \
                 AND (job_id = $2 OR (job_id IS NULL AND agent_id = $1)))",
            )
            .bind(agent_id)
            .bind(job_id)
            .fetch_one(conn)
            .await?
        }))
    }

    /// Whether an urgent instruction is waiting for this job (it aborts the model call in flight).
    pub async fn has_urgent_steering(&self, agent_id: Uuid, job_id: Uuid) -> Result<bool> {
        Ok(read!(self, |conn| {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM steering_message WHERE state = 'queued' AND priority = 'urgent' \
                 AND (job_id = $2 OR (job_id IS NULL AND agent_id = $1)))",
            )
            .bind(agent_id)
            .bind(job_id)
            .fetch_one(conn)
            .await?
        }))
    }
}

impl Tx {
    /// Queues an instruction (`priority` is `normal` or `urgent`); wakes the running job when one is targeted.
    pub async fn insert_steering(
        &mut self,
        agent_id: Uuid,
        job_id: Option<Uuid>,
        instruction: &str,
        priority: &str,
        created_by: Option<String>,
    ) -> Result<SteeringRecord> {
        let id = cortex_core::new_id();
        let now = ms(self.now());
        let row: SteeringRow = write!(self, |conn| {
            sqlx::query_as(concat!(
                "INSERT INTO steering_message (id, agent_id, job_id, instruction, priority, state, created_by, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $7) RETURNING ",
                steering_columns!()
            ))
            .bind(id)
            .bind(agent_id)
            .bind(job_id)
            .bind(instruction)
            .bind(priority)
            .bind(created_by.as_deref())
            .bind(now)
            .fetch_one(conn)
            .await?
        });
        if let Some(job_id) = job_id {
            self.notify(Notification::Steered { job_id });
        }
        Ok(row.into())
    }

    /// Marks every instruction queued for this job (or for the agent's next job) injected at `turn` and
    /// returns them oldest first.
    pub async fn take_queued_steering(
        &mut self,
        agent_id: Uuid,
        job_id: Uuid,
        turn: u32,
    ) -> Result<Vec<SteeringRecord>> {
        let now = ms(self.now());
        let rows: Vec<SteeringRow> = write!(self, |conn| {
            sqlx::query_as(concat!(
                "UPDATE steering_message SET state = 'injected', job_id = $2, injected_at_turn = $3, updated_at = $4 \
                 WHERE state = 'queued' AND (job_id = $2 OR (job_id IS NULL AND agent_id = $1)) RETURNING ",
                steering_columns!()
            ))
            .bind(agent_id)
            .bind(job_id)
            .bind(i64::from(turn))
            .bind(now)
            .fetch_all(conn)
            .await?
        });
        let mut records: Vec<SteeringRecord> = rows.into_iter().map(SteeringRecord::from).collect();
        records.sort_by_key(|record| record.id);
        Ok(records)
    }

    /// Expires what is still queued for a job that ended; returns how many.
    pub async fn expire_steering_of_job(&mut self, job_id: Uuid) -> Result<u64> {
        let now = ms(self.now());
        Ok(write!(self, |conn| {
            sqlx::query(
                "UPDATE steering_message SET state = 'expired', updated_at = $2 WHERE job_id = $1 AND state = 'queued'",
            )
            .bind(job_id)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        }))
    }
}
