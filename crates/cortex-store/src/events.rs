//! The agent event log: one table serving job SSE, agent SSE and the activity feed.
//!
//! Sequence numbers must be delivered in order without gaps filling in later, or an SSE client resuming
//! from `Last-Event-ID` could miss an event. SQLite has one writer, so commit order is sequence order.
//! On PostgreSQL, concurrent transactions could commit sequence values out of order, so events are
//! inserted as the last statements of their transaction under a transaction-level advisory lock: the
//! lock is held only for the insert and the commit, and serialises exactly that window.

use cortex_core::Timestamp;
use cortex_core::event::{Actor, EventType};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::engine::{TxConn, read, write};
use crate::notify::Notification;
use crate::rows::{ms, parse, time};
use crate::{Result, Store, Tx};

/// Advisory lock key that serialises event appends on PostgreSQL ("cortexev").
const EVENT_APPEND_LOCK: i64 = 0x636f_7274_6578_6576;

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub agent_id: Uuid,
    pub job_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub event_type: EventType,
    pub payload: Value,
    pub actor: Actor,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    pub cost_usd: Option<f64>,
    pub model: Option<String>,
    pub tool_ref: Option<String>,
}

impl NewEvent {
    /// An event with only the essentials set; use struct update syntax for the rest.
    pub fn new(agent_id: Uuid, job_id: Option<Uuid>, event_type: EventType, payload: Value) -> Self {
        Self {
            agent_id,
            job_id,
            session_id: None,
            event_type,
            payload,
            actor: Actor::System,
            tokens_in: None,
            tokens_out: None,
            cost_usd: None,
            model: None,
            tool_ref: None,
        }
    }
}

/// A stored event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Event {
    pub seq: i64,
    pub agent_id: Uuid,
    pub job_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub event_type: EventType,
    pub payload: Value,
    pub actor: Actor,
    pub created_at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    seq: i64,
    agent_id: Uuid,
    job_id: Option<Uuid>,
    session_id: Option<Uuid>,
    #[sqlx(rename = "type")]
    event_type: String,
    payload: Json<Value>,
    actor: String,
    created_at: i64,
}

impl EventRow {
    fn into_event(self) -> Result<Event> {
        Ok(Event {
            seq: self.seq,
            agent_id: self.agent_id,
            job_id: self.job_id,
            session_id: self.session_id,
            event_type: parse("agent_event.type", &self.event_type)?,
            payload: self.payload.0,
            actor: parse("agent_event.actor", &self.actor)?,
            created_at: time(self.created_at),
        })
    }
}

/// Which events to read.
#[derive(Debug, Clone, Copy)]
pub enum EventScope {
    Job(Uuid),
    Agent(Uuid),
    All,
}

const SELECT_BY_JOB: &str = "SELECT seq, agent_id, job_id, session_id, type, payload, actor, created_at FROM agent_event \
     WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";
const SELECT_BY_AGENT: &str = "SELECT seq, agent_id, job_id, session_id, type, payload, actor, created_at FROM agent_event \
     WHERE agent_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";
const SELECT_ALL: &str = "SELECT seq, agent_id, job_id, session_id, type, payload, actor, created_at FROM agent_event \
     WHERE seq > $1 ORDER BY seq LIMIT $2";

impl Store {
    /// Events with `seq > after`, oldest first.
    pub async fn events_after(&self, scope: EventScope, after: i64, limit: i64) -> Result<Vec<Event>> {
        let rows: Vec<EventRow> = match scope {
            EventScope::Job(job_id) => read!(self, |conn| {
                sqlx::query_as(SELECT_BY_JOB).bind(job_id).bind(after).bind(limit).fetch_all(conn).await?
            }),
            EventScope::Agent(agent_id) => read!(self, |conn| {
                sqlx::query_as(SELECT_BY_AGENT).bind(agent_id).bind(after).bind(limit).fetch_all(conn).await?
            }),
            EventScope::All => {
                read!(self, |conn| sqlx::query_as(SELECT_ALL).bind(after).bind(limit).fetch_all(conn).await?)
            }
        };
        rows.into_iter().map(EventRow::into_event).collect()
    }

    /// Events of a job restricted to `types`, oldest first (a job's step timeline without its deltas).
    pub async fn job_events_of_types(&self, job_id: Uuid, types: &[EventType], limit: i64) -> Result<Vec<Event>> {
        let rows: Vec<EventRow> = read!(self, |conn| {
            let mut query = sqlx::QueryBuilder::new(
                "SELECT seq, agent_id, job_id, session_id, type, payload, actor, created_at FROM agent_event WHERE job_id = ",
            );
            query.push_bind(job_id).push(" AND type IN (");
            let mut separated = query.separated(", ");
            for event_type in types {
                separated.push_bind(event_type.as_str());
            }
            query.push(") ORDER BY seq LIMIT ").push_bind(limit);
            query.build_query_as().fetch_all(conn).await?
        });
        rows.into_iter().map(EventRow::into_event).collect()
    }

    /// Highest sequence number so far (0 when empty), where live streams without a cursor start.
    pub async fn last_event_seq(&self) -> Result<i64> {
        let seq: Option<i64> =
            read!(self, |conn| sqlx::query_scalar("SELECT MAX(seq) FROM agent_event").fetch_one(conn).await?);
        Ok(seq.unwrap_or(0))
    }
}

const INSERT: &str = "INSERT INTO agent_event (agent_id, job_id, session_id, type, payload, tokens_in, tokens_out, cost_usd, model, tool_ref, actor, created_at) ";

/// Events per insert statement: 12 parameters each stays under both engines' bind limits.
const EVENTS_PER_STATEMENT: usize = 1000;

/// Inserts buffered events at commit time, a batch per statement, and returns the notifications
/// announcing them. Rows of one statement take sequence numbers in `VALUES` order on both engines.
pub(crate) async fn flush(tx: &mut Tx, events: Vec<NewEvent>) -> Result<Vec<Notification>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    if let TxConn::Postgres(conn) = &mut tx.conn {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(EVENT_APPEND_LOCK)
            .execute(&mut **conn)
            .await?
            .rows_affected();
    }
    let now = ms(tx.now());
    let mut notifications: Vec<Notification> = Vec::new();
    for batch in events.chunks(EVENTS_PER_STATEMENT) {
        let appended: Vec<(i64, Uuid, Option<Uuid>)> = write!(tx, |conn| {
            let mut query = sqlx::QueryBuilder::new(INSERT);
            query.push_values(batch, |mut row, event| {
                row.push_bind(event.agent_id)
                    .push_bind(event.job_id)
                    .push_bind(event.session_id)
                    .push_bind(event.event_type.as_str())
                    .push_bind(Json(&event.payload))
                    .push_bind(event.tokens_in)
                    .push_bind(event.tokens_out)
                    .push_bind(event.cost_usd)
                    .push_bind(event.model.as_deref())
                    .push_bind(event.tool_ref.as_deref())
                    .push_bind(event.actor.as_str())
                    .push_bind(now);
            });
            query.push(" RETURNING seq, agent_id, job_id");
            query.build_query_as().fetch_all(conn).await?
        });
        // One notification per (agent, job) carrying the highest seq is enough for every reader.
        for (seq, agent_id, job_id) in appended {
            match notifications.iter_mut().find(
                |n| matches!(n, Notification::Event { agent_id: a, job_id: j, .. } if *a == agent_id && *j == job_id),
            ) {
                Some(Notification::Event { seq: highest, .. }) => *highest = (*highest).max(seq),
                _ => notifications.push(Notification::Event { seq, agent_id, job_id }),
            }
        }
    }
    Ok(notifications)
}
