//! View models of an agent's detail tabs beyond the overview (SPEC §11.2 "Agent detail"): live output with
//! steering and the health controls, sessions and a session's history, and cost over time. Display-ready
//! strings only; the bar charts are sized here in percent so the templates stay logic-free.

use askama::Template;

use crate::views::{Chrome, Field, MessageRow, Pager};

/// The tabs every agent page shows, in order: (`tab` key, label, path after `/ui/agents/{id}`).
pub const TABS: &[(&str, &str, &str)] = &[
    ("overview", "Overview", ""),
    ("live", "Live output", "/live"),
    ("sessions", "Sessions", "/sessions"),
    ("cost", "Cost", "/cost"),
    ("access", "Chat access", "/access"),
];

/// Live output: the agent's event stream rendered as it happens, its health, the steer box and the
/// quarantine / release / kill controls (operators only; the API enforces the role too).
#[derive(Template)]
#[template(path = "agent_live.html")]
pub struct AgentLivePage {
    pub chrome: Chrome,
    pub id: String,
    pub name: String,
    pub status: String,
    /// `healthy`, `degraded` or `quarantined`.
    pub health: String,
    pub quarantined: bool,
    /// Why it is quarantined, or "—".
    pub reason: String,
    pub fields: Vec<Field>,
    /// The last event sequence number before the page's data was read: the stream resumes after it.
    pub after: i64,
}

/// One session as a table row.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: String,
    pub short_id: String,
    /// The user's name, or "API caller" for sessions without a user.
    pub user: String,
    pub origin: String,
    pub status: String,
    pub messages: i64,
    pub tokens: String,
    pub cost: String,
    pub last_activity: String,
}

/// The agent's sessions, most recent first.
#[derive(Template)]
#[template(path = "agent_sessions.html")]
pub struct AgentSessionsPage {
    pub chrome: Chrome,
    pub id: String,
    pub name: String,
    pub rows: Vec<SessionRow>,
    pub pager: Pager,
}

/// One session: its fields and messages, oldest first.
#[derive(Template)]
#[template(path = "agent_session.html")]
pub struct AgentSessionPage {
    pub chrome: Chrome,
    pub id: String,
    pub name: String,
    pub session_id: String,
    pub status: String,
    pub fields: Vec<Field>,
    pub messages: Vec<MessageRow>,
    /// The next messages when there are more than one page holds.
    pub later_url: Option<String>,
}

/// One bar of a chart with the numbers it stands for (the table is the text version of the chart).
#[derive(Debug, Clone)]
pub struct UsageRow {
    /// The day (`2026-12-06`) or the job kind.
    pub label: String,
    pub jobs: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub tokens: i64,
    pub cost: String,
    /// Bar lengths in percent of the largest value of the chart (0–100).
    pub tokens_bar: String,
    pub cost_bar: String,
}

/// Cost: tokens and cost per day over the last days, and per job kind.
#[derive(Template)]
#[template(path = "agent_cost.html")]
pub struct AgentCostPage {
    pub chrome: Chrome,
    pub id: String,
    pub name: String,
    pub days: u32,
    pub by_day: Vec<UsageRow>,
    pub by_kind: Vec<UsageRow>,
    pub total_tokens: i64,
    pub total_cost: String,
    pub total_jobs: i64,
}

impl AgentCostPage {
    /// No job ran in the window (the charts would be all zero).
    pub fn is_empty(&self) -> bool {
        self.total_jobs == 0
    }
}

/// `value` as a percentage of `max` with one decimal (0 when `max` is 0), for a bar's length.
pub fn bar(value: f64, max: f64) -> String {
    if max <= 0.0 || value <= 0.0 { "0".into() } else { format!("{:.1}", (value / max * 100.0).min(100.0)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_percentages_of_the_largest_value() {
        assert_eq!(bar(5.0, 10.0), "50.0");
        assert_eq!(bar(10.0, 10.0), "100.0");
        assert_eq!(bar(0.0, 10.0), "0");
        assert_eq!(bar(3.0, 0.0), "0");
    }
}
