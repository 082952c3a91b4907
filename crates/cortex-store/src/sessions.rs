//! Conversations and their messages (SPEC §3.3). Messages are stored once per complete message.

use cortex_core::Timestamp;
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::engine::{read, write};
use crate::page::{Cursor, Page};
use crate::rows::{ms, opt_time, time};
use crate::{Result, Store, StoreError, Tx};

/// A conversation between one user (or API caller) and one agent.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub user_id: Option<Uuid>,
    pub origin: String,
    pub status: String,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    pub message_count: i64,
    pub last_activity_at: i64,
    pub closed_at: Option<i64>,
    pub created_at: i64,
}

/// A session as the rest of the system sees it.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub user_id: Option<Uuid>,
    pub origin: String,
    /// `active`, `idle`, `archived` or `closed`.
    pub status: String,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    pub message_count: i64,
    pub last_activity_at: Timestamp,
    pub closed_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

impl From<SessionRow> for Session {
    fn from(row: SessionRow) -> Self {
        Self {
            id: row.id,
            agent_id: row.agent_id,
            user_id: row.user_id,
            origin: row.origin,
            status: row.status,
            tokens_in: row.tokens_in,
            tokens_out: row.tokens_out,
            cost_usd: row.cost_usd,
            message_count: row.message_count,
            last_activity_at: time(row.last_activity_at),
            closed_at: opt_time(row.closed_at),
            created_at: time(row.created_at),
        }
    }
}

impl Session {
    pub fn is_closed(&self) -> bool {
        self.status == "closed"
    }
}

/// One complete message of a session.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: Uuid,
    pub session_id: Uuid,
    pub seq: i64,
    /// `user`, `assistant`, `system` or `tool`.
    pub role: String,
    pub content: String,
    pub job_id: Option<Uuid>,
    pub source: Option<Value>,
    pub created_at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: Uuid,
    session_id: Uuid,
    seq: i64,
    role: String,
    content: String,
    job_id: Option<Uuid>,
    source: Option<Json<Value>>,
    created_at: i64,
}

impl From<MessageRow> for Message {
    fn from(row: MessageRow) -> Self {
        Self {
            id: row.id,
            session_id: row.session_id,
            seq: row.seq,
            role: row.role,
            content: row.content,
            job_id: row.job_id,
            source: row.source.map(|json| json.0),
            created_at: time(row.created_at),
        }
    }
}

const SESSION_COLUMNS: &str = "id, agent_id, user_id, origin, status, tokens_in, tokens_out, cost_usd, message_count, \
     last_activity_at, closed_at, created_at";

impl Store {
    pub async fn get_session(&self, id: Uuid) -> Result<Session> {
        let row: Option<SessionRow> = read!(self, |conn| {
            sqlx::query_as(
                "SELECT id, agent_id, user_id, origin, status, tokens_in, tokens_out, cost_usd, message_count, \
                 last_activity_at, closed_at, created_at FROM session WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(conn)
            .await?
        });
        Ok(row.ok_or(StoreError::NotFound { entity: "session" })?.into())
    }

    /// Sessions of an agent, most recently active first.
    pub async fn list_sessions(&self, agent_id: Uuid, cursor: Option<Cursor>, limit: usize) -> Result<Page<Session>> {
        let rows: Vec<SessionRow> = read!(self, |conn| {
            let mut query = sqlx::QueryBuilder::new(format!("SELECT {SESSION_COLUMNS} FROM session WHERE agent_id = "));
            query.push_bind(agent_id);
            if let Some(cursor) = cursor {
                query.push(" AND id < ").push_bind(cursor.0);
            }
            query.push(" ORDER BY id DESC LIMIT ").push_bind(limit as i64 + 1);
            query.build_query_as().fetch_all(conn).await?
        });
        Ok(Page::from_overfetch(rows.into_iter().map(Session::from).collect(), limit, |s| s.id))
    }

    /// Messages oldest first, after `after_seq`.
    pub async fn list_messages(&self, session_id: Uuid, after_seq: i64, limit: usize) -> Result<Vec<Message>> {
        let rows: Vec<MessageRow> = read!(self, |conn| {
            sqlx::query_as(
                "SELECT id, session_id, seq, role, content, job_id, source, created_at FROM session_message \
                 WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .bind(session_id)
            .bind(after_seq)
            .bind(limit as i64)
            .fetch_all(conn)
            .await?
        });
        Ok(rows.into_iter().map(Message::from).collect())
    }

    /// The history window of the turn whose user message has sequence number `turn_seq`: the last `limit`
    /// messages of the conversation as it stood when that turn started, oldest first.
    ///
    /// Messages are stored in arrival order, so when several messages are queued in one session their
    /// answers come after all of them (Q1 Q2 Q3 A1 A2 A3). The conversation places every message at the
    /// position of the first message of its job (a question and its answer stay together: Q1 A1 Q2 A2),
    /// and a turn sees what comes before its own position — earlier turns with their answers, never a
    /// later question. Messages without a job keep their own position.
    pub async fn conversation_before(&self, session_id: Uuid, turn_seq: i64, limit: usize) -> Result<Vec<Message>> {
        let rows: Vec<MessageRow> = read!(self, |conn| {
            sqlx::query_as(
                "SELECT m.id, m.session_id, m.seq, m.role, m.content, m.job_id, m.source, m.created_at \
                 FROM session_message m LEFT JOIN (SELECT job_id, MIN(seq) AS first_seq FROM session_message \
                   WHERE session_id = $1 AND job_id IS NOT NULL GROUP BY job_id) turn ON turn.job_id = m.job_id \
                 WHERE m.session_id = $1 AND COALESCE(turn.first_seq, m.seq) < $2 \
                 ORDER BY COALESCE(turn.first_seq, m.seq) DESC, m.seq DESC LIMIT $3",
            )
            .bind(session_id)
            .bind(turn_seq)
            .bind(limit as i64)
            .fetch_all(conn)
            .await?
        });
        let mut messages: Vec<Message> = rows.into_iter().map(Message::from).collect();
        messages.reverse();
        Ok(messages)
    }

    /// The message a job was created for, or wrote as its answer.
    pub async fn message_of_job(&self, job_id: Uuid, role: &str) -> Result<Option<Message>> {
        let row: Option<MessageRow> = read!(self, |conn| {
            sqlx::query_as(
                "SELECT id, session_id, seq, role, content, job_id, source, created_at FROM session_message \
                 WHERE job_id = $1 AND role = $2 ORDER BY seq LIMIT 1",
            )
            .bind(job_id)
            .bind(role)
            .fetch_optional(conn)
            .await?
        });
        Ok(row.map(Message::from))
    }
}

impl Tx {
    pub async fn insert_session(&mut self, agent_id: Uuid, user_id: Option<Uuid>, origin: &str) -> Result<Session> {
        let id = cortex_core::new_id();
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO session (id, agent_id, user_id, origin, status, last_activity_at, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, 'active', $5, $5, $5)",
            )
            .bind(id)
            .bind(agent_id)
            .bind(user_id)
            .bind(origin)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        self.created_sessions.push(id);
        Ok(Session {
            id,
            agent_id,
            user_id,
            origin: origin.to_owned(),
            status: "active".into(),
            tokens_in: 0,
            tokens_out: 0,
            cost_usd: 0.0,
            message_count: 0,
            last_activity_at: time(now),
            closed_at: None,
            created_at: time(now),
        })
    }

    /// Appends a message with the next sequence number of its session (allocated under the session row).
    pub async fn append_message(
        &mut self,
        session_id: Uuid,
        role: &str,
        content: &str,
        job_id: Option<Uuid>,
        source: Option<&Value>,
    ) -> Result<Message> {
        let id = cortex_core::new_id();
        let now = ms(self.now());
        let seq: Option<i64> = write!(self, |conn| {
            sqlx::query_scalar(
                "UPDATE session SET message_count = message_count + 1, last_activity_at = $2, updated_at = $2, \
                 status = CASE WHEN status = 'idle' THEN 'active' ELSE status END \
                 WHERE id = $1 AND status <> 'closed' RETURNING message_count",
            )
            .bind(session_id)
            .bind(now)
            .fetch_optional(conn)
            .await?
        });
        let seq = seq.ok_or(StoreError::StaleState { entity: "session" })?;
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO session_message (id, session_id, seq, role, content, job_id, source, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(id)
            .bind(session_id)
            .bind(seq)
            .bind(role)
            .bind(content)
            .bind(job_id)
            .bind(source.map(Json))
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        self.plan_extraction(session_id).await?;
        Ok(Message {
            id,
            session_id,
            seq,
            role: role.to_owned(),
            content: content.to_owned(),
            job_id,
            source: source.cloned(),
            created_at: time(now),
        })
    }

    /// Closes a session; `purge` also erases its messages.
    pub async fn close_session(&mut self, session_id: Uuid, purge: bool) -> Result<()> {
        let now = ms(self.now());
        let updated = write!(self, |conn| {
            sqlx::query("UPDATE session SET status = 'closed', closed_at = COALESCE(closed_at, $2), updated_at = $2 WHERE id = $1")
                .bind(session_id)
                .bind(now)
                .execute(conn)
                .await?
                .rows_affected()
        });
        if updated == 0 {
            return Err(StoreError::NotFound { entity: "session" });
        }
        if purge {
            write!(self, |conn| {
                sqlx::query("DELETE FROM session_message WHERE session_id = $1")
                    .bind(session_id)
                    .execute(conn)
                    .await?
                    .rows_affected()
            });
        } else {
            self.plan_extraction(session_id).await?;
        }
        Ok(())
    }

    /// Adds a job's usage to its session totals.
    pub async fn add_session_usage(
        &mut self,
        session_id: Uuid,
        tokens_in: i64,
        tokens_out: i64,
        cost_usd: f64,
    ) -> Result<()> {
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "UPDATE session SET tokens_in = tokens_in + $2, tokens_out = tokens_out + $3, cost_usd = cost_usd + $4, \
                 updated_at = $5 WHERE id = $1",
            )
            .bind(session_id)
            .bind(tokens_in)
            .bind(tokens_out)
            .bind(cost_usd)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(())
    }
}
