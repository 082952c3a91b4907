//! View models: one struct per page, display-ready strings only (formatting happens in `cortex-api`
//! where the domain types are known). Every list view carries its empty-state text and next-page link.

use askama::Template;

/// What every signed-in page shows around its content: who is signed in, what they may do, and the
/// CSRF token htmx sends as `X-CSRF-Token` on unsafe requests.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub title: String,
    /// Which navigation entry is current (`overview`, `agents`, `jobs`, …).
    pub active: &'static str,
    pub user: String,
    pub role: String,
    pub csrf_token: String,
    /// The role may change agents and jobs (operator and above).
    pub can_operate: bool,
    /// The role may decide approvals (approver and above).
    pub can_approve: bool,
    /// The role may manage users, keys and settings.
    pub is_admin: bool,
}

impl Chrome {
    /// The JSON for the body's `hx-headers` attribute (askama escapes it for the attribute).
    pub fn hx_headers(&self) -> String {
        format!("{{\"X-CSRF-Token\": \"{}\"}}", self.csrf_token)
    }

    pub(crate) fn nav_class(&self, entry: &str) -> &'static str {
        if self.active == entry { "current" } else { "" }
    }
}

/// Asset URLs for templates.
pub fn asset(name: &str) -> String {
    crate::assets::url(name)
}

/// The sign-in page (SPEC §11.2 "Login").
#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub error: Option<String>,
    pub notice: Option<String>,
    pub email: String,
    pub next: String,
    /// No local admin exists yet: link to the first-run setup.
    pub setup_open: bool,
    /// One button per enabled login provider (GitHub, Google, OIDC).
    pub providers: Vec<LoginButton>,
}

/// A "Sign in with …" button of the sign-in page.
#[derive(Debug, Clone)]
pub struct LoginButton {
    pub label: String,
    /// `/auth/login/{provider}?next=…`, already encoded.
    pub href: String,
}

/// Settings → Login providers (SPEC §11.2): configured providers, and forms to add, edit and delete them.
#[derive(Template)]
#[template(path = "login_providers.html")]
pub struct LoginProvidersPage {
    pub chrome: Chrome,
    pub providers: Vec<LoginProviderRow>,
    /// Provider types that can still be added (`github`, `google`, `oidc`).
    pub addable: Vec<String>,
    /// The origin callback URLs start with (`CORTEX_PUBLIC_URL` or this server's own).
    pub origin: String,
}

/// A configured login provider, display-ready (the client secret is never part of it).
#[derive(Debug, Clone)]
pub struct LoginProviderRow {
    pub provider: String,
    pub label: String,
    pub client_id: String,
    pub client_secret_set: bool,
    pub issuer_url: String,
    pub authorize_url: String,
    pub token_url: String,
    pub userinfo_url: String,
    pub api_url: String,
    pub auto_signup: bool,
    pub signup_role: String,
    pub enabled: bool,
    /// Configured by environment variables: shown, not editable.
    pub from_env: bool,
    pub env_variables: String,
}

impl LoginProviderRow {
    fn selected(&self, role: &str) -> &'static str {
        if self.signup_role == role { "selected" } else { "" }
    }
}

/// The first-run setup page: the bootstrap admin key creates the first admin with a password, once.
#[derive(Template)]
#[template(path = "setup.html")]
pub struct SetupPage {
    pub error: Option<String>,
    pub email: String,
    pub display_name: String,
}

/// A job as one table row.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub short_id: String,
    pub agent_name: String,
    pub agent_id: String,
    pub kind: String,
    pub status: String,
    pub created: String,
    pub attempts: String,
    pub cost: String,
}

/// An agent as one table row.
#[derive(Debug, Clone)]
pub struct AgentRow {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub status: String,
    pub health: String,
    pub model: String,
    pub description: String,
}

/// A link to the next page of a list, when there is one.
#[derive(Debug, Clone, Default)]
pub struct Pager {
    pub next_url: Option<String>,
    /// Shown when the list was opened at a cursor: a way back to the first page.
    pub first_url: Option<String>,
}

/// One choice of a filter `<select>`.
#[derive(Debug, Clone)]
pub struct FilterOption {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

/// Home: counts and recent activity (SPEC §11.2 "Home").
#[derive(Template)]
#[template(path = "overview.html")]
pub struct OverviewPage {
    pub chrome: Chrome,
    pub agents: i64,
    pub running_jobs: i64,
    pub waiting_jobs: i64,
    pub pending_approvals: i64,
    pub failed_jobs: i64,
    pub recent_jobs: Vec<JobRow>,
    pub live: Option<Live>,
    /// Every channel with its health in this process; `cortex.js` keeps the health current from
    /// `GET /channels/stream`.
    pub channels: Vec<ChannelRow>,
}

/// The agents list.
#[derive(Template)]
#[template(path = "agents.html")]
pub struct AgentsPage {
    pub chrome: Chrome,
    pub rows: Vec<AgentRow>,
    pub statuses: Vec<FilterOption>,
    pub filtered: bool,
    pub pager: Pager,
}

/// Key/value lines of a detail page.
#[derive(Debug, Clone)]
pub struct Field {
    pub label: &'static str,
    pub value: String,
}

/// One tool policy of an agent (SPEC §6.1: deny by default; listed tools are the ones it may use).
#[derive(Debug, Clone)]
pub struct PolicyRow {
    pub tool_ref: String,
    pub enabled: bool,
    /// `never`, `always` or `risk`.
    pub approval: String,
    pub risk: String,
}

/// One agent: fields, chat panel, tool policies and recent jobs.
#[derive(Template)]
#[template(path = "agent.html")]
pub struct AgentPage {
    pub chrome: Chrome,
    pub id: String,
    pub name: String,
    pub status: String,
    pub health: String,
    pub fields: Vec<Field>,
    pub system_prompt: String,
    pub policies: Vec<PolicyRow>,
    /// Tools of the catalogue without a policy yet (for the "allow a tool" form).
    pub other_tools: Vec<String>,
    pub jobs: Vec<JobRow>,
    pub jobs_url: String,
}

/// The create-agent form, with the provider and tool pickers fed by the catalogue.
#[derive(Template)]
#[template(path = "agent_new.html")]
pub struct NewAgentPage {
    pub chrome: Chrome,
    pub providers: Vec<String>,
    pub tools: Vec<ToolChoice>,
}

/// A tool offered by a picker.
#[derive(Debug, Clone)]
pub struct ToolChoice {
    pub tool_ref: String,
    pub description: String,
}

/// The jobs list with its filters.
#[derive(Template)]
#[template(path = "jobs.html")]
pub struct JobsPage {
    pub chrome: Chrome,
    pub rows: Vec<JobRow>,
    pub statuses: Vec<FilterOption>,
    pub agents: Vec<FilterOption>,
    pub filtered: bool,
    pub pager: Pager,
    pub live: Option<Live>,
}

/// One job: its fields, outcome and the actions its state allows.
#[derive(Template)]
#[template(path = "job.html")]
pub struct JobPage {
    pub chrome: Chrome,
    pub id: String,
    pub status: String,
    pub agent_name: String,
    pub agent_id: String,
    pub fields: Vec<Field>,
    pub response: Option<String>,
    pub error: Option<String>,
    pub prompt: Option<String>,
    pub can_retry: bool,
    pub can_cancel: bool,
    pub steps: Vec<StepRow>,
    pub tool_calls: Vec<ToolCallRow>,
    pub transcript: Vec<MessageRow>,
    /// Set while the job can still change: the page reloads on its next state change.
    pub live: Option<Live>,
}

/// An approval request as one table row.
#[derive(Debug, Clone)]
pub struct ApprovalRow {
    pub id: String,
    pub short_id: String,
    pub agent_name: String,
    pub agent_id: String,
    pub risk: String,
    pub status: String,
    pub summary: String,
    pub requested: String,
    /// "in 3 h 20 min", "expired", or when it was decided.
    pub deadline: String,
}

/// The approvals queue (SPEC §11.2 "Approvals").
#[derive(Template)]
#[template(path = "approvals.html")]
pub struct ApprovalsPage {
    pub chrome: Chrome,
    pub rows: Vec<ApprovalRow>,
    pub statuses: Vec<FilterOption>,
    /// The default view (pending only) is shown.
    pub pending_view: bool,
    pub pager: Pager,
    pub live: Option<Live>,
}

/// One entry of an approval's hash-chained audit trail.
#[derive(Debug, Clone)]
pub struct AuditLine {
    pub at: String,
    pub event: String,
    pub actor: String,
    pub details: String,
}

/// One approval: the exact call it gates, its state and the decision form.
#[derive(Template)]
#[template(path = "approval.html")]
pub struct ApprovalPage {
    pub chrome: Chrome,
    pub id: String,
    pub status: String,
    pub risk: String,
    pub summary: String,
    pub agent_name: String,
    pub agent_id: String,
    pub job_id: String,
    pub fields: Vec<Field>,
    /// The call's arguments as pretty-printed JSON, exactly as stored.
    pub detail_json: String,
    pub pending: bool,
    pub audit: Vec<AuditLine>,
    pub chain_valid: bool,
}

/// A memory record as one row of the explorer; score columns are filled only for search results.
#[derive(Debug, Clone)]
pub struct MemoryRow {
    pub id: String,
    pub memory_type: String,
    pub content: String,
    pub tags: String,
    pub importance: i64,
    pub source: String,
    pub created: String,
    /// `score` and its parts (similarity, recency, utility), formatted, when this row is a search hit.
    pub score: Option<ScoreParts>,
}

/// The parts of a search score, formatted to three decimals.
#[derive(Debug, Clone)]
pub struct ScoreParts {
    pub total: String,
    pub similarity: String,
    pub recency: String,
    pub utility: String,
}

/// The memory explorer: pick an agent, list its memories newest first or search them.
#[derive(Template)]
#[template(path = "memory.html")]
pub struct MemoryPage {
    pub chrome: Chrome,
    /// Agents to choose from (the selected one is marked).
    pub agents: Vec<FilterOption>,
    pub agent_id: String,
    pub agent_name: String,
    pub query: String,
    pub types: Vec<FilterOption>,
    pub rows: Vec<MemoryRow>,
    /// `hybrid` or `keyword` for a search; empty for the plain list.
    pub mode: String,
    /// Why a search is keyword-only, in words.
    pub notice: Option<String>,
    pub filtered: bool,
    pub pager: Pager,
}

/// One memory: every field, the edit form and delete.
#[derive(Template)]
#[template(path = "memory_item.html")]
pub struct MemoryItemPage {
    pub chrome: Chrome,
    pub agent_id: String,
    pub agent_name: String,
    pub id: String,
    pub content: String,
    pub memory_type: String,
    pub types: Vec<FilterOption>,
    pub tags: String,
    pub importance: i64,
    pub confidence: String,
    pub fields: Vec<Field>,
    /// Markdown-sourced records are edited in their file, not here.
    pub read_only: bool,
}

/// A channel as one row, with its health in this process.
#[derive(Debug, Clone)]
pub struct ChannelRow {
    pub id: String,
    pub name: String,
    pub channel_type: String,
    pub state: String,
    pub enabled: bool,
    pub inbound_policy: String,
    pub default_agent: String,
    pub bot: String,
    pub last_error: String,
    pub last_activity: String,
    pub source: String,
}

/// The channels list with the add form.
#[derive(Template)]
#[template(path = "channels.html")]
pub struct ChannelsPage {
    pub chrome: Chrome,
    pub rows: Vec<ChannelRow>,
    /// Agents for the default-agent picker.
    pub agents: Vec<FilterOption>,
}

/// A chat bound to an agent.
#[derive(Debug, Clone)]
pub struct BindingRow {
    pub id: String,
    pub agent_id: String,
    pub agent_name: String,
    pub chat_id: String,
    pub respond_to: String,
    pub created: String,
}

/// An outbox message that could not be delivered.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: String,
    pub status: String,
    pub attempts: i64,
    pub target: String,
    pub last_error: String,
    pub updated: String,
}

/// One channel: health, settings, edit form, bindings and failed deliveries.
#[derive(Template)]
#[template(path = "channel.html")]
pub struct ChannelPage {
    pub chrome: Chrome,
    pub channel: ChannelRow,
    pub fields: Vec<Field>,
    pub agents: Vec<FilterOption>,
    pub bindings: Vec<BindingRow>,
    pub failures: Vec<OutboxRow>,
    pub failures_pager: Pager,
    /// From the environment: read-only here.
    pub read_only: bool,
    /// Platform users admitted when the inbound policy is `allowlist`.
    pub allowlist: Vec<AllowRow>,
}

/// A platform user a channel's allowlist admits.
#[derive(Debug, Clone)]
pub struct AllowRow {
    pub platform_user_id: String,
    pub created: String,
}

/// A live region: follows an SSE route from the event the page was rendered at and says when something
/// changed (or reloads the page), resuming with `Last-Event-ID` after a dropped connection.
#[derive(Debug, Clone)]
pub struct Live {
    /// The SSE route, e.g. `/jobs/stream`.
    pub url: String,
    /// The last event sequence number when the page was rendered.
    pub after: i64,
    /// Space-separated event types that mean the page is out of date.
    pub events: &'static str,
    /// Reload the page at once instead of offering a refresh link (detail pages of running work).
    pub reload: bool,
}

/// One step of a job's timeline: its stored events without the streamed deltas.
#[derive(Debug, Clone)]
pub struct StepRow {
    pub at: String,
    pub event: String,
    pub summary: String,
}

/// One tool call of a job, from the ledger.
#[derive(Debug, Clone)]
pub struct ToolCallRow {
    pub turn: u32,
    pub tool_ref: String,
    pub state: String,
    pub input: String,
    pub output: String,
    pub is_error: bool,
    pub duration: String,
    pub approval_id: Option<String>,
}

/// One message of the conversation a job belongs to.
#[derive(Debug, Clone)]
pub struct MessageRow {
    pub role: String,
    pub content: String,
    pub at: String,
    /// Written by this job (the others are the session's earlier and later turns).
    pub this_job: bool,
}

/// Edit an agent: the fields an operator changes most; the rest of the model settings are kept.
#[derive(Template)]
#[template(path = "agent_edit.html")]
pub struct EditAgentPage {
    pub chrome: Chrome,
    pub id: String,
    pub name: String,
    pub description: String,
    pub role: String,
    pub system_prompt: String,
    pub providers: Vec<FilterOption>,
    pub model: String,
    /// The whole stored model configuration as JSON: the form's fields are applied on top of it.
    pub model_config_json: String,
    pub temperature: String,
    pub requires_approval: bool,
    pub statuses: Vec<FilterOption>,
    pub access_modes: Vec<FilterOption>,
    /// The agent's memory switches (`memory.enabled`, `memory.auto_extract`), sent together as one document.
    pub memory_enabled: bool,
    pub memory_auto_extract: bool,
}

/// One audit entry as a row.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: String,
    pub ip: String,
}

/// The audit log (admins): newest first, filtered by action and target type.
#[derive(Template)]
#[template(path = "audit.html")]
pub struct AuditPage {
    pub chrome: Chrome,
    pub rows: Vec<AuditRow>,
    pub action: String,
    pub target_type: String,
    pub filtered: bool,
    pub pager: Pager,
}

/// An API key as one row (never its secret).
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub role: String,
    pub source: String,
    pub state: String,
    pub created: String,
    pub last_used: String,
    pub expires: String,
    /// The signed-in user may revoke it (their own or one they made; admins: any).
    pub can_revoke: bool,
}

/// API keys: admins see all, others their own; create (the secret shown once) and revoke.
#[derive(Template)]
#[template(path = "api_keys.html")]
pub struct ApiKeysPage {
    pub chrome: Chrome,
    pub rows: Vec<KeyRow>,
    /// Roles a new key may have (up to the user's own).
    pub roles: Vec<String>,
    pub pager: Pager,
}

/// An MCP server as one row, with its discovered tools.
#[derive(Debug, Clone)]
pub struct McpRow {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub transport: String,
    /// The command line (stdio) or URL (http); secrets (env, headers) appear as names only.
    pub target: String,
    pub secrets: String,
    pub status: String,
    pub trusted: bool,
    pub last_error: String,
    pub last_healthy: String,
    pub tools: Vec<String>,
}

/// MCP servers: health, tools and trust; admins add, trust, refresh and remove them.
#[derive(Template)]
#[template(path = "mcp.html")]
pub struct McpPage {
    pub chrome: Chrome,
    pub rows: Vec<McpRow>,
    pub pager: Pager,
}

/// An error in words, with the way back (SPEC §11.2: never a blank page).
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub title: String,
    pub message: String,
}

/// Who may talk to one agent through chat (SPEC §8.8): grants, pairing codes and access requests.
#[derive(Template)]
#[template(path = "agent_access.html")]
pub struct AgentAccessPage {
    pub chrome: Chrome,
    pub id: String,
    pub name: String,
    /// `open`, `bound_chats`, `allowlist` or `approval_queue`.
    pub access_mode: String,
    pub grants: Vec<GrantRow>,
    pub codes: Vec<PairingCodeRow>,
    pub requests: Vec<AccessRequestRow>,
}

/// A user's grant on an agent.
#[derive(Debug, Clone)]
pub struct GrantRow {
    pub user_id: String,
    pub name: String,
    pub access: String,
    pub origin: String,
    /// `active`, `revoked` or `expired`.
    pub status: String,
    pub expires: String,
    pub rate_limit: String,
}

/// A pairing code; `code` is empty for viewers.
#[derive(Debug, Clone)]
pub struct PairingCodeRow {
    pub id: String,
    pub code: String,
    pub access: String,
    /// `active`, `redeemed`, `revoked`, `burnt` or `expired`.
    pub state: String,
    pub expires: String,
}

/// An access request filed in chat.
#[derive(Debug, Clone)]
pub struct AccessRequestRow {
    pub id: String,
    pub name: String,
    pub chat: String,
    pub preview: String,
    /// `pending`, `approved` or `denied`.
    pub status: String,
    pub reason: String,
    pub created: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chrome() -> Chrome {
        Chrome {
            title: "Agents".into(),
            active: "agents",
            user: "Ada <admin>".into(),
            role: "viewer".into(),
            csrf_token: "tok".into(),
            can_operate: false,
            can_approve: false,
            is_admin: false,
        }
    }

    #[test]
    fn an_empty_list_says_what_to_do_and_text_is_escaped() {
        let page =
            AgentsPage { chrome: chrome(), rows: vec![], statuses: vec![], filtered: false, pager: Pager::default() };
        let html = page.render().unwrap();
        assert!(html.contains("No agents yet"), "{html}");
        assert!(html.contains("Ada &#60;admin&#62;") || html.contains("Ada &lt;admin&gt;"), "{html}");
        assert!(!html.contains("<script>"), "no inline scripts");
    }
}
