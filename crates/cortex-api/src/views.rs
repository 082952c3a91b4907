//! Wire representations of resources (SPEC §2.4). Domain records are converted here, so storage types
//! never leak onto the wire.

use chrono::{DateTime, Utc};
use cortex_core::agent::{
    AccessMode, AgentStatus, ApprovalTarget, HealthState, MemorySettings, ModelConfig, ResourceLimits,
};
use cortex_core::job::{JobError, JobKind, JobStatus};
use cortex_core::role::Role;
use cortex_store::Page;
use cortex_store::agents::Agent;
use cortex_store::jobs::Job;
use cortex_store::sessions::{Message, Session};
use cortex_store::users::ApiKey;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiResult;
use crate::extract::{PageParams, encode_key};

/// The one list shape: `{items, next_cursor}`. Every list is paginated the same way: at most `limit`
/// items (1–200, default 50) and at most 1 MiB of JSON; follow `next_cursor` to get everything.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T: ToSchema> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page. A page may end before `limit`
    /// items when the next one would take it past 1 MiB.
    pub next_cursor: Option<String>,
}

/// An item of a paginated list: where the next page starts when a page ends after this item. Every
/// store-paginated route builds its answer with [`List::page`] or [`List::from_page`], which need this,
/// and every list held whole in memory with [`List::from_all`], so no page can skip the byte budget
/// ([`crate::limits::LIST_BYTES`]).
pub trait PageItem {
    fn cursor(&self) -> String;
}

/// Items continued by the store's id cursor (newest first by time-ordered id).
macro_rules! paged_by_id {
    ($($view:ty),* $(,)?) => {
        $(impl PageItem for $view {
            fn cursor(&self) -> String {
                cortex_store::page::Cursor(self.id).encode()
            }
        })*
    };
}

paged_by_id!(
    AgentView,
    JobView,
    SessionView,
    ApiKeyView,
    crate::routes::approvals::ApprovalView,
    crate::routes::channels::OutboxView,
    crate::routes::mcp::McpServerView,
    crate::routes::memory::MemoryView,
    crate::routes::users::UserView,
);

/// Messages continue after a sequence number (`after_seq`), oldest first.
impl PageItem for MessageView {
    fn cursor(&self) -> String {
        self.seq.to_string()
    }
}

impl<T: ToSchema + Serialize + PageItem> List<T> {
    /// A page of `items` that the store continues at `next_cursor`, ended early when it would exceed
    /// the byte budget.
    pub fn page(items: Vec<T>, next_cursor: Option<String>) -> Self {
        Self { items, next_cursor }.within_budget(PageItem::cursor)
    }

    /// [`List::page`] from a store page, converting each item.
    pub fn from_page<S>(page: Page<S>, convert: impl FnMut(S) -> T) -> Self {
        let next_cursor = page.next_cursor.map(|cursor| cursor.encode());
        Self::page(page.items.into_iter().map(convert).collect(), next_cursor)
    }
}

impl<T: ToSchema + Serialize> List<T> {
    /// The page `params` asks for of a list the API builds whole (catalogues, settings, an agent's
    /// bindings and policies): ordered by `key` (unique per item), continued after the last key
    /// returned — so an item added or removed between two pages never makes another skipped or
    /// repeated — and bounded in items and bytes like every other list.
    pub fn from_all(items: Vec<T>, params: &PageParams, key: impl Fn(&T) -> String) -> ApiResult<Self> {
        let (after, limit) = params.parse_key()?;
        let mut keyed: Vec<(String, T)> = items.into_iter().map(|item| (key(&item), item)).collect();
        keyed.sort_by(|(a, _), (b, _)| a.cmp(b));
        if let Some(after) = after {
            keyed.retain(|(key, _)| *key > after);
        }
        let more = keyed.len() > limit;
        keyed.truncate(limit);
        let next_cursor = if more { keyed.last().map(|(key, _)| encode_key(key)) } else { None };
        let items = keyed.into_iter().map(|(_, item)| item).collect();
        Ok(Self { items, next_cursor }.within_budget(|item| encode_key(&key(item))))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub role: String,
    pub description: String,
    pub system_prompt: String,
    pub model_config: ModelConfig,
    pub resource_limits: ResourceLimits,
    /// Tool refs enabled for this agent.
    pub tools: Vec<String>,
    pub skills: Vec<String>,
    pub subagents: Vec<String>,
    pub access_mode: AccessMode,
    pub memory: MemorySettings,
    /// Chats that also get this agent's approval notices.
    pub approval_notify: Vec<ApprovalTarget>,
    pub status: AgentStatus,
    pub health_state: HealthState,
    pub quarantine_reason: Option<String>,
    #[serde(serialize_with = "crate::views::millis::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::views::millis::serialize")]
    pub updated_at: DateTime<Utc>,
}

impl AgentView {
    pub fn new(agent: Agent, tools: Vec<String>) -> Self {
        Self {
            id: agent.id,
            name: agent.name,
            slug: agent.slug,
            role: agent.role,
            description: agent.description,
            system_prompt: agent.system_prompt,
            model_config: agent.model_config,
            resource_limits: agent.resource_limits,
            tools,
            skills: agent.skills,
            subagents: agent.subagents,
            access_mode: agent.access_mode,
            memory: agent.memory,
            approval_notify: agent.approval_notify,
            status: agent.status,
            health_state: agent.health_state,
            quarantine_reason: agent.quarantine_reason,
            created_at: agent.created_at,
            updated_at: agent.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageView {
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
}

/// One recorded element of a job: an LLM turn, a tool call, an approval wait.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepView {
    /// `llm`, `tool`, `approval`.
    pub kind: String,
    #[serde(serialize_with = "crate::views::millis::serialize")]
    pub at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub detail: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub session_id: Option<Uuid>,
    pub kind: JobKind,
    pub status: JobStatus,
    pub priority: i32,
    pub attempt: u32,
    pub max_attempts: u32,
    pub timeout_seconds: u32,
    #[serde(serialize_with = "crate::views::millis::serialize")]
    pub run_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::views::millis::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::views::millis::option")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::views::millis::option")]
    pub completed_at: Option<DateTime<Utc>>,
    pub error: Option<JobError>,
    pub usage: UsageView,
    pub steps: Vec<StepView>,
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub parent_job_id: Option<Uuid>,
    pub approval_id: Option<Uuid>,
    pub cancel_requested: bool,
}

impl JobView {
    pub fn new(job: Job, steps: Vec<StepView>) -> Self {
        Self {
            id: job.id,
            agent_id: job.agent_id,
            session_id: job.session_id,
            kind: job.kind,
            status: job.status,
            priority: job.priority,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            timeout_seconds: job.timeout_seconds,
            run_at: job.run_at,
            created_at: job.created_at,
            started_at: job.started_at,
            completed_at: job.completed_at,
            error: job.error,
            usage: UsageView { tokens_in: job.tokens_in, tokens_out: job.tokens_out, cost_usd: job.cost_usd },
            steps,
            result: job.result,
            parent_job_id: job.parent_job_id,
            approval_id: job.approval_id,
            cancel_requested: job.cancel_requested,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub user_id: Option<Uuid>,
    pub origin: String,
    pub status: String,
    pub message_count: i64,
    pub usage: UsageView,
    #[serde(serialize_with = "crate::views::millis::serialize")]
    pub last_activity_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::views::millis::option")]
    pub closed_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::views::millis::serialize")]
    pub created_at: DateTime<Utc>,
}

impl From<Session> for SessionView {
    fn from(session: Session) -> Self {
        Self {
            id: session.id,
            agent_id: session.agent_id,
            user_id: session.user_id,
            origin: session.origin,
            status: session.status,
            message_count: session.message_count,
            usage: UsageView {
                tokens_in: session.tokens_in,
                tokens_out: session.tokens_out,
                cost_usd: session.cost_usd,
            },
            last_activity_at: session.last_activity_at,
            closed_at: session.closed_at,
            created_at: session.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    pub id: Uuid,
    pub seq: i64,
    /// `user`, `assistant`, `system` or `tool`.
    pub role: String,
    pub content: String,
    pub job_id: Option<Uuid>,
    #[serde(serialize_with = "crate::views::millis::serialize")]
    pub created_at: DateTime<Utc>,
}

impl From<Message> for MessageView {
    fn from(message: Message) -> Self {
        Self {
            id: message.id,
            seq: message.seq,
            role: message.role,
            content: message.content,
            job_id: message.job_id,
            created_at: message.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: Uuid,
    pub name: String,
    /// Public part of the key, for recognising it.
    pub prefix: String,
    pub role: Role,
    pub user_id: Option<Uuid>,
    /// `bootstrap`, `env` or `api`.
    pub source: String,
    /// The key that created this one; revoking that key revokes this one too.
    pub created_by_key_id: Option<Uuid>,
    /// Requests per minute for this key, replacing the server-wide API limit.
    pub rate_limit_per_minute: Option<u32>,
    #[serde(serialize_with = "crate::views::millis::option")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::views::millis::option")]
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::views::millis::option")]
    pub revoked_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::views::millis::serialize")]
    pub created_at: DateTime<Utc>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(key: ApiKey) -> Self {
        Self {
            id: key.id,
            name: key.name,
            prefix: key.prefix,
            role: key.role,
            user_id: key.user_id,
            source: key.source,
            created_by_key_id: key.created_by_key_id,
            rate_limit_per_minute: key.rate_limit_per_minute,
            expires_at: key.expires_at,
            last_used_at: key.last_used_at,
            revoked_at: key.revoked_at,
            created_at: key.created_at,
        }
    }
}

/// Timestamps on the wire: RFC 3339 UTC with exactly three fractional digits (`2026-01-01T00:00:00.000Z`),
/// so every timestamp has the same width and sorts as text.
pub mod millis {
    use chrono::{DateTime, Utc};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&cortex_core::clock::rfc3339_millis(*at))
    }

    /// [`serialize`] for optional timestamps (`null` when absent).
    pub fn option<S: Serializer>(at: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => serialize(at, serializer),
            None => serializer.serialize_none(),
        }
    }
}
