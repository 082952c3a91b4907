//! Agent definition types: status, health, model configuration, resource limits, memory switches and
//! approval notice targets (SPEC §3.2, §5, §7.7, §9).
//! Config blobs are typed documents with unknown keys rejected, so typos fail loudly.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

crate::string_enum! {
    /// Operator intent (SPEC §5.7).
    pub enum AgentStatus {
        Active = "active",
        Disabled = "disabled",
        Archived = "archived",
    }
}

crate::string_enum! {
    /// System-derived health (SPEC §5.7).
    pub enum HealthState {
        Healthy = "healthy",
        Degraded = "degraded",
        Quarantined = "quarantined",
    }
}

/// Consecutive counting job failures that quarantine an agent (SPEC §5.7 agent breaker).
pub const BREAKER_THRESHOLD: u32 = 3;

crate::string_enum! {
    /// Who may talk to an agent through chat channels (SPEC §8.8).
    pub enum AccessMode {
        Open = "open",
        BoundChats = "bound_chats",
        Allowlist = "allowlist",
        ApprovalQueue = "approval_queue",
    }
}

/// One provider/model pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    #[schema(max_length = 200)]
    pub provider: String,
    #[schema(max_length = 200)]
    pub model: String,
}

/// How an agent talks to a model, including the ordered failover list (SPEC §5.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[schema(max_length = 200)]
    pub provider: String,
    #[schema(max_length = 200)]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<ModelRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extraction_model: Option<String>,
    /// Whole-job approval gate: every job waits for a human before its first turn (SPEC §7.1).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requires_approval: bool,
    /// The `llm` credential whose key the primary model is called with (a team's own key for `provider`),
    /// instead of the credential named like the provider. Its spend is accounted to it (issue 15).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl ModelConfig {
    /// The primary model followed by the declared fallbacks, in order. `provider` of each names the
    /// credential that serves it: the primary's is `credential` when the agent names one.
    pub fn candidates(&self) -> Vec<ModelRef> {
        let route = self.credential.clone().unwrap_or_else(|| self.provider.clone());
        let mut all = vec![ModelRef { provider: route, model: self.model.clone() }];
        all.extend(self.fallbacks.iter().cloned());
        all
    }

    pub fn validate(&self) -> Result<(), String> {
        for candidate in self.candidates() {
            if candidate.provider.trim().is_empty() || candidate.model.trim().is_empty() {
                return Err("provider and model must not be empty".into());
            }
        }
        if let Some(temperature) = self.temperature
            && !(0.0..=2.0).contains(&temperature)
        {
            return Err("temperature must be between 0 and 2".into());
        }
        if self.max_tokens == Some(0) {
            return Err("max_tokens must be positive".into());
        }
        Ok(())
    }
}

/// Per-agent memory switches (SPEC §3.2, §9.2; issue 16). Both default on; a missing key keeps its default.
/// Off, `enabled` keeps the agent's turns away from its memory (no recalled block, no memory tools, no
/// extraction) while the operator's memory routes keep working; `auto_extract` alone stops extraction jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySettings {
    /// Recalled memories are injected into turns and `memory_store`/`memory_query` are offered.
    pub enabled: bool,
    /// Sessions are queued for memory extraction (only while `enabled`).
    pub auto_extract: bool,
}

impl Default for MemorySettings {
    fn default() -> Self {
        Self { enabled: true, auto_extract: true }
    }
}

impl MemorySettings {
    /// Whether the agent's sessions are extracted into memories: both switches must be on.
    pub fn extracts(&self) -> bool {
        self.enabled && self.auto_extract
    }
}

/// A chat that also gets the approval notices of the agent's waiting jobs (SPEC §3.2 `approval_notify[]`),
/// besides the chat that started the job: an approvers' group, an operator's DM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalTarget {
    /// The channel (bot) that sends the notice.
    pub channel_id: uuid::Uuid,
    /// The platform's chat id on that channel.
    pub chat_id: String,
}

/// Optional rolling rate limits per agent (SPEC §5.1); unset by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    #[serde(default)]
    pub llm_calls: Option<u32>,
    #[serde(default)]
    pub tool_calls: Option<u32>,
    pub window_seconds: u32,
}

/// Limits that bound one agent's work. Missing fields take the SPEC §19 defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceLimits {
    /// Turns (LLM calls) per job, 1–200.
    pub max_turns: u32,
    /// Wall-clock seconds per attempt, 10–3600.
    pub timeout_seconds: u32,
    /// Tokens (in + out) per job.
    pub token_budget: u64,
    /// Tokens (in + out) per session.
    pub session_token_budget: u64,
    /// Jobs of this agent running at once.
    pub max_concurrent_jobs: u32,
    pub cost_budget_usd_per_job: Option<f64>,
    pub cost_budget_usd_per_day: Option<f64>,
    pub cost_budget_usd_per_month: Option<f64>,
    pub token_budget_per_day: Option<u64>,
    pub token_budget_per_month: Option<u64>,
    pub rate: Option<RateLimits>,
    /// Tokens (in + out) the chat jobs of one chat-platform user may use with this agent per rolling
    /// 24 h (SPEC §8.6 step 7); none by default. Over it, the user's messages are refused politely.
    pub user_token_budget: Option<u64>,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        Self {
            max_turns: 25,
            timeout_seconds: 300,
            token_budget: 200_000,
            session_token_budget: 2_000_000,
            max_concurrent_jobs: 4,
            cost_budget_usd_per_job: None,
            cost_budget_usd_per_day: None,
            cost_budget_usd_per_month: None,
            token_budget_per_day: None,
            token_budget_per_month: None,
            rate: None,
            user_token_budget: None,
        }
    }
}

impl ResourceLimits {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=200).contains(&self.max_turns) {
            return Err("max_turns must be between 1 and 200".into());
        }
        if !(10..=3600).contains(&self.timeout_seconds) {
            return Err("timeout_seconds must be between 10 and 3600".into());
        }
        if self.token_budget == 0 || self.session_token_budget == 0 || self.user_token_budget == Some(0) {
            return Err("token budgets must be positive".into());
        }
        if !(1..=100).contains(&self.max_concurrent_jobs) {
            return Err("max_concurrent_jobs must be between 1 and 100".into());
        }
        for (name, value) in [
            ("cost_budget_usd_per_job", self.cost_budget_usd_per_job),
            ("cost_budget_usd_per_day", self.cost_budget_usd_per_day),
            ("cost_budget_usd_per_month", self.cost_budget_usd_per_month),
        ] {
            if value.is_some_and(|usd| !(usd >= 0.0 && usd.is_finite())) {
                return Err(format!("{name} must be a non-negative number"));
            }
        }
        if let Some(rate) = &self.rate
            && rate.window_seconds == 0
        {
            return Err("rate.window_seconds must be positive".into());
        }
        Ok(())
    }
}

/// Longest slug.
pub const MAX_SLUG_LEN: usize = 64;

/// Derives a slug from a name: lowercase, `[a-z0-9-]`, no leading/trailing/double dashes, ≤ 64 chars.
pub fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for ch in name.chars() {
        let ch = ch.to_ascii_lowercase();
        if ch.is_ascii_alphanumeric() {
            slug.push(ch);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let mut slug: String = slug.trim_end_matches('-').chars().take(MAX_SLUG_LEN).collect();
    while slug.ends_with('-') {
        slug.pop();
    }
    slug
}

/// True for a slug the API accepts as given.
pub fn is_valid_slug(slug: &str) -> bool {
    !slug.is_empty()
        && slug.len() <= MAX_SLUG_LEN
        && slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slugify("Research Bot #1"), "research-bot-1");
        assert_eq!(slugify("  --Ünïcode—Name  "), "n-code-name");
        assert_eq!(slugify(&"a".repeat(100)).len(), MAX_SLUG_LEN);
        assert!(is_valid_slug("research-bot-1"));
        assert!(!is_valid_slug("Research"));
        assert!(!is_valid_slug("-x"));
    }

    #[test]
    fn limits_reject_unknown_keys_and_bad_ranges() {
        let err = serde_json::from_str::<ResourceLimits>(r#"{"max_turn": 3}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"));
        let limits: ResourceLimits = serde_json::from_str(r#"{"max_turns": 300}"#).unwrap();
        assert!(limits.validate().is_err());
        assert_eq!(serde_json::from_str::<ResourceLimits>("{}").unwrap(), ResourceLimits::default());
    }
}
