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
}

/// An error in words, with the way back (SPEC §11.2: never a blank page).
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub title: String,
    pub message: String,
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
