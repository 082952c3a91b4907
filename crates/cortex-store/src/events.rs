//! The agent event log: one table serving job SSE, agent SSE and the activity feed.
//!
//! What readers rely on (SPEC Appendix B, Event order): a stream (job, agent, all) resumed from
//! `Last-Event-ID` never misses an event and never sees one twice; ids are unique and increase in
//! delivery order. Writers must not be serialised to get there.
//!
//! - **SQLite** has one writer, so commit order is `seq` order (AUTOINCREMENT) and every committed row
//!   can be delivered at once.
//! - **PostgreSQL**: writers run concurrently and nothing serialises them. A transaction's events get
//!   `seq = (xid << 20) + i`, its own transaction id (`pg_current_xact_id()`) shifted left plus the
//!   event's index within the transaction, so `seq` order is transaction-id order. Streams deliver only
//!   rows below the **visibility watermark** `w << 20`, where `w` is the oldest transaction of this
//!   database still running in the reading statement's snapshot: every transaction below it has ended,
//!   so every row below the watermark is visible (or was rolled back) and none can appear there later.
//!   Rows at or above it wait until the older transactions end ([`Store::read_events`] reports them
//!   as `pending`, and streams re-read soon). Transactions of other databases on the same server do
//!   not hold the watermark back. See ARCHITECTURE.md, "Event order", for the alternatives considered.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use cortex_core::Timestamp;
use cortex_core::event::{Actor, EventType};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::engine::{TxConn, read};
use crate::notify::Notification;
use crate::rows::{ms, parse, time};
use crate::{Result, Store, Tx};

/// Bits of a PostgreSQL `seq` holding the event's index within its transaction.
const INDEX_BITS: u32 = 20;
/// Events one transaction may emit on PostgreSQL (the index must fit in [`INDEX_BITS`]).
pub const MAX_EVENTS_PER_TRANSACTION: usize = 1 << INDEX_BITS;

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
    /// At or above the visibility watermark: committed, but not deliverable yet (PostgreSQL only).
    pending: bool,
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

/// Which events to read (also the key of a shared SSE reader, hence `Hash`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventScope {
    Job(Uuid),
    Agent(Uuid),
    All,
}

/// The start of a read on SQLite; `pending` is always false there (one writer, see the module docs).
macro_rules! sqlite_read {
    () => {
        "SELECT seq, agent_id, job_id, session_id, type, payload, actor, created_at, 0 AS pending FROM agent_event WHERE "
    };
}

/// The visibility watermark on PostgreSQL, as a CTE `mark(below)`: `(w << 20)` where `w` is the oldest
/// transaction of this database still running in the statement's snapshot, or the snapshot's `xmax`
/// when none is. Transactions of other databases (found in `pg_stat_activity` *after* the snapshot was
/// taken) are skipped: they cannot write this table, and one that ended in between stays counted, which
/// only delays delivery.
macro_rules! watermark {
    () => {
        "WITH snap AS (SELECT pg_current_snapshot() AS s), \
         elsewhere AS (SELECT backend_xid::text::bigint AS xid FROM pg_stat_activity \
                       WHERE backend_xid IS NOT NULL AND datname IS DISTINCT FROM current_database()), \
         mark AS (SELECT COALESCE( \
             (SELECT min(x::text::bigint) FROM snap, pg_snapshot_xip(snap.s) AS x \
               WHERE (x::text::bigint & 4294967295) NOT IN (SELECT xid FROM elsewhere)), \
             (SELECT pg_snapshot_xmax(s)::text::bigint FROM snap)) << 20 AS below) "
    };
}

/// The start of a read on PostgreSQL; `pending` marks rows at or above the visibility watermark.
macro_rules! postgres_read {
    () => {
        concat!(
            watermark!(),
            "SELECT seq, agent_id, job_id, session_id, type, payload, actor, created_at, seq >= mark.below AS pending \
             FROM agent_event, mark WHERE "
        )
    };
}

/// Reads per scope, `[SQLite, PostgreSQL]`.
const READ_JOB: [&str; 2] = [
    concat!(sqlite_read!(), "job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"),
    concat!(postgres_read!(), "job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"),
];
const READ_AGENT: [&str; 2] = [
    concat!(sqlite_read!(), "agent_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"),
    concat!(postgres_read!(), "agent_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"),
];
const READ_ALL: [&str; 2] = [
    concat!(sqlite_read!(), "seq > $1 ORDER BY seq LIMIT $2"),
    concat!(postgres_read!(), "seq > $1 ORDER BY seq LIMIT $2"),
];

/// Events read from the log, in delivery order.
#[derive(Debug, Clone, Default)]
pub struct EventRead {
    /// Deliverable events after the cursor, oldest first; nothing before them can appear later.
    pub events: Vec<Event>,
    /// Committed events exist after `events` that wait for older transactions to end: read again soon
    /// (they may come without a notification of their own).
    pub pending: bool,
}

impl Store {
    /// Every committed event with `seq > after`, oldest first: for one-off reads (a job's timeline, a
    /// test looking at what a transaction wrote). Not for following a stream — on PostgreSQL an older
    /// transaction may still commit events below the last one returned; streams use
    /// [`Store::read_events`].
    pub async fn events_after(&self, scope: EventScope, after: i64, limit: i64) -> Result<Vec<Event>> {
        self.event_rows(scope, after, limit).await?.into_iter().map(EventRow::into_event).collect()
    }

    /// The next events a stream following `scope` may deliver after `after`, oldest first: nothing can
    /// later appear before or between them (module docs). `pending` says committed events wait behind
    /// the watermark.
    pub async fn read_events(&self, scope: EventScope, after: i64, limit: i64) -> Result<EventRead> {
        let mut read = EventRead::default();
        for row in self.event_rows(scope, after, limit).await? {
            if row.pending {
                read.pending = true;
                break;
            }
            read.events.push(row.into_event()?);
        }
        Ok(read)
    }

    async fn event_rows(&self, scope: EventScope, after: i64, limit: i64) -> Result<Vec<EventRow>> {
        let engine = usize::from(self.is_postgres());
        let (sql, scoped) = match scope {
            EventScope::Job(id) => (READ_JOB[engine], Some(id)),
            EventScope::Agent(id) => (READ_AGENT[engine], Some(id)),
            EventScope::All => (READ_ALL[engine], None),
        };
        let rows: Vec<EventRow> = read!(self, |conn| {
            let query = sqlx::query_as(sql);
            let query = match scoped {
                Some(id) => query.bind(id),
                None => query,
            };
            query.bind(after).bind(limit).fetch_all(conn).await?
        });
        Ok(rows)
    }

    /// Events of a job restricted to `types`, oldest first (a job's step timeline without its deltas).
    pub async fn job_events_of_types(&self, job_id: Uuid, types: &[EventType], limit: i64) -> Result<Vec<Event>> {
        let rows: Vec<EventRow> = read!(self, |conn| {
            let mut query = sqlx::QueryBuilder::new(
                "SELECT seq, agent_id, job_id, session_id, type, payload, actor, created_at, false AS pending FROM agent_event WHERE job_id = ",
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

    /// Where live streams without a cursor start: the highest deliverable sequence number (0 when
    /// empty). Events committed later, also by transactions already running, all come after it.
    pub async fn last_event_seq(&self) -> Result<i64> {
        let sql = if self.is_postgres() {
            concat!(watermark!(), "SELECT MAX(seq) FROM agent_event, mark WHERE seq < mark.below")
        } else {
            "SELECT MAX(seq) FROM agent_event"
        };
        let seq: Option<i64> = read!(self, |conn| sqlx::query_scalar(sql).fetch_one(conn).await?);
        Ok(seq.unwrap_or(0))
    }
}

const COLUMNS: &str =
    "agent_id, job_id, session_id, type, payload, tokens_in, tokens_out, cost_usd, model, tool_ref, actor, created_at";

/// Events per insert statement on SQLite: 12 parameters each stays under its bind limit.
const EVENTS_PER_STATEMENT: usize = 1000;

/// SQLite's half of writing a transaction's buffered events at commit ([`Tx::commit`]): rows in `VALUES`
/// order, a batch of [`EVENTS_PER_STATEMENT`] per statement, `seq` from `AUTOINCREMENT`. Returns the
/// notifications announcing them ([`event_notifications`]).
pub(crate) async fn flush_sqlite(tx: &mut Tx, events: Vec<NewEvent>) -> Result<Vec<Notification>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let now = ms(tx.now());
    let TxConn::Sqlite(conn) = &mut tx.conn else { unreachable!("flush_sqlite is called on SQLite transactions") };
    let mut appended = Vec::with_capacity(events.len());
    for batch in events.chunks(EVENTS_PER_STATEMENT) {
        let mut query = sqlx::QueryBuilder::new(format!("INSERT INTO agent_event ({COLUMNS}) "));
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
        appended.extend(query.build_query_as::<(i64, Uuid, Option<Uuid>)>().fetch_all(&mut **conn).await?);
    }
    Ok(event_notifications(&events, appended, &tx.bulk_jobs))
}

/// PostgreSQL's half of a commit's last statement ([`Tx::commit`]): the transaction's buffered events and
/// every notification of the transaction (`others` first, then the events' own) in **one** statement, a
/// round trip less per transaction than inserting and notifying apart. The events are numbered
/// `(xid << 20) + i` (see the module docs) in one `INSERT … SELECT FROM unnest(…) WITH ORDINALITY` of
/// typed arrays, whatever the count; the `NOTIFY` payloads carry the events' seqs relative to `xid << 20`
/// ([`crate::notify::pack_relative`]), which the same statement reads and returns. Returns every
/// notification with absolute seqs, for this process's own subscribers after the commit.
pub(crate) async fn flush_postgres(
    tx: &mut Tx,
    events: Vec<NewEvent>,
    others: Vec<Notification>,
) -> Result<Vec<Notification>> {
    let origin = tx.store.inner.notifier.origin();
    let now = ms(tx.now());
    let corrupt = |err: serde_json::Error| crate::StoreError::Corrupt(format!("notification: {err}"));
    let TxConn::Postgres(conn) = &mut tx.conn else {
        unreachable!("flush_postgres is called on PostgreSQL transactions")
    };
    if events.is_empty() {
        if !others.is_empty() {
            // One statement for all of them, packed into as few payloads as fit (usually one); `unnest`
            // keeps their order, and so does delivery.
            sqlx::query("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload")
                .bind(crate::notify::PG_CHANNEL)
                .bind(crate::notify::pack(origin, &others).map_err(corrupt)?)
                .execute(&mut **conn)
                .await?;
        }
        return Ok(others);
    }
    if events.len() > MAX_EVENTS_PER_TRANSACTION {
        return Err(crate::StoreError::Database(sqlx::Error::Protocol(format!(
            "a transaction emitted {} events; at most {MAX_EVENTS_PER_TRANSACTION} fit its sequence numbers",
            events.len()
        ))));
    }
    // Every `Event` notification comes from the events: in this form their seqs count from the base.
    debug_assert!(!others.iter().any(|n| matches!(n, Notification::Event { .. })), "{others:?}");
    let mut notifications = others;
    let relative = events.iter().zip(0..).map(|(event, i)| (i, event.agent_id, event.job_id));
    notifications.extend(event_notifications(&events, relative, &tx.bulk_jobs));
    let tails = crate::notify::pack_relative(&notifications).map_err(corrupt)?;
    let count = events.len();
    let mut agent_ids = Vec::with_capacity(count);
    let mut job_ids = Vec::with_capacity(count);
    let mut session_ids = Vec::with_capacity(count);
    let mut types = Vec::with_capacity(count);
    let mut payloads = Vec::with_capacity(count);
    let mut tokens_in = Vec::with_capacity(count);
    let mut tokens_out = Vec::with_capacity(count);
    let mut costs = Vec::with_capacity(count);
    let mut models = Vec::with_capacity(count);
    let mut tool_refs = Vec::with_capacity(count);
    let mut actors = Vec::with_capacity(count);
    for event in &events {
        agent_ids.push(event.agent_id);
        job_ids.push(event.job_id);
        session_ids.push(event.session_id);
        types.push(event.event_type.as_str());
        payloads.push(Json(&event.payload));
        tokens_in.push(event.tokens_in);
        tokens_out.push(event.tokens_out);
        costs.push(event.cost_usd);
        models.push(event.model.as_deref());
        tool_refs.push(event.tool_ref.as_deref());
        actors.push(event.actor.as_str());
    }
    // The insert is a data-modifying `WITH`, which runs to completion whether or not it is read; the
    // `NOTIFY`s are sent by the condition of the one row returned. The transaction id is the same for both
    // uses (taken by the first, kept to the end of the transaction).
    let base: i64 = sqlx::query_scalar(
        "WITH appended AS (INSERT INTO agent_event (seq, agent_id, job_id, session_id, type, payload, tokens_in, \
         tokens_out, cost_usd, model, tool_ref, actor, created_at) OVERRIDING SYSTEM VALUE \
         SELECT (pg_current_xact_id()::text::bigint << 20) + e.i - 1, e.agent_id, e.job_id, e.session_id, e.type, \
         e.payload, e.tokens_in, e.tokens_out, e.cost_usd, e.model, e.tool_ref, e.actor, $12 \
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::jsonb[], $6::bigint[], $7::bigint[], \
         $8::float8[], $9::text[], $10::text[], $11::text[]) WITH ORDINALITY \
         AS e(agent_id, job_id, session_id, type, payload, tokens_in, tokens_out, cost_usd, model, tool_ref, actor, i)), \
         base AS (SELECT pg_current_xact_id()::text::bigint << 20 AS b) \
         SELECT base.b FROM base \
         WHERE (SELECT count(pg_notify($13, $14 || base.b::text || tail)) FROM unnest($15::text[]) AS tail) >= 0",
    )
    .bind(agent_ids)
    .bind(job_ids)
    .bind(session_ids)
    .bind(types)
    .bind(payloads)
    .bind(tokens_in)
    .bind(tokens_out)
    .bind(costs)
    .bind(models)
    .bind(tool_refs)
    .bind(actors)
    .bind(now)
    .bind(crate::notify::PG_CHANNEL)
    .bind(crate::notify::relative_head(origin))
    .bind(tails)
    .fetch_one(&mut **conn)
    .await?;
    Ok(notifications.into_iter().map(|notification| notification.event_from(base)).collect())
}

/// The notifications announcing `events`, stored as `appended` (`(seq, agent_id, job_id)` of each, in
/// any order): one per (agent, job) carrying the highest seq is enough for every reader. Events of jobs
/// the transaction bulk-inserted ([`Tx::insert_jobs`]) are announced per agent only (`job_id: None`):
/// those ids were made in this transaction, so no reader can be waiting on one of them, and a bulk load
/// of 5,000 jobs sends one notification instead of 5,000.
fn event_notifications(
    events: &[NewEvent],
    appended: impl IntoIterator<Item = (i64, Uuid, Option<Uuid>)>,
    bulk_jobs: &HashSet<Uuid>,
) -> Vec<Notification> {
    let state_changed: HashSet<Uuid> = events
        .iter()
        .filter(|event| {
            matches!(event.event_type, EventType::JobState | EventType::JobCompleted | EventType::JobFailed)
        })
        .filter_map(|event| event.job_id)
        .collect();
    let mut notifications: Vec<Notification> = Vec::new();
    let mut position: HashMap<(Uuid, Option<Uuid>), usize> = HashMap::new();
    for (seq, agent_id, job_id) in appended {
        let job_id = job_id.filter(|id| !bulk_jobs.contains(id));
        match position.entry((agent_id, job_id)) {
            Entry::Occupied(entry) => {
                if let Notification::Event { seq: highest, .. } = &mut notifications[*entry.get()] {
                    *highest = (*highest).max(seq);
                }
            }
            Entry::Vacant(entry) => {
                entry.insert(notifications.len());
                let state_changed = job_id.is_some_and(|id| state_changed.contains(&id));
                notifications.push(Notification::Event { seq, agent_id, job_id, state_changed });
            }
        }
    }
    notifications
}
