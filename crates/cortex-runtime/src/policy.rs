//! The approval decision for one tool call (SPEC §7.1, §17.6) and the per-tool rate limit (SPEC §6.5).
//!
//! The decision never depends on the model's good behaviour: it is computed here from the policy, the
//! tool's risk, the platform deny-list and whether the job's context already holds untrusted content.

use cortex_core::approval::{ApprovalMode, RiskTier};
use cortex_store::tools::ToolPolicy;
use serde::Deserialize;
use serde_json::Value;

/// What happens to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Run it; `via` is recorded on the `tool.call` event: `none` (no approval needed) or `policy`
    /// (auto-approved at p3).
    Execute { via: &'static str },
    /// A human must approve it first, at this tier.
    Approve { risk: RiskTier },
}

/// Everything the decision depends on.
pub(crate) struct CallFacts<'a> {
    pub policy: &'a ToolPolicy,
    /// The tool's own risk for this call (before the policy).
    pub default_risk: RiskTier,
    pub deny_listed: bool,
    pub input: &'a Value,
    /// The job's context contains tool output, fetched pages, recalled memory or a message from a sender
    /// who is not an operator.
    pub untrusted: bool,
    /// The call can carry data to a destination nobody vouched for (see `Tool::sends_data_out`).
    pub sends_data_out: bool,
}

/// SPEC §7.1: `never` runs, `always` asks at the policy's risk (default p2), `risk` asks for p0–p2 and
/// auto-approves p3. A `condition` limits the policy's approval to matching calls. On top of the policy,
/// deny-listed tools always need a human at p1 or stricter, and once untrusted content is in the context
/// every call at p0–p2 — and every call that sends data out, whatever its tier (SPEC Appendix B) — needs
/// a human whatever the policy says; such an egress call is asked at p2 or stricter.
pub(crate) fn decide(facts: &CallFacts<'_>) -> Decision {
    let policy = facts.policy;
    let floor = |risk: RiskTier| if facts.deny_listed { risk.stricter(RiskTier::P1) } else { risk };
    let risk = floor(policy.risk.unwrap_or(facts.default_risk));
    let condition_applies = policy.condition.as_ref().is_none_or(|condition| condition_matches(condition, facts.input));
    if condition_applies && policy.approval == ApprovalMode::Always {
        return Decision::Approve { risk: floor(policy.risk.unwrap_or(RiskTier::P2)) };
    }
    let policy_asks = condition_applies && policy.approval == ApprovalMode::Risk && risk.needs_human();
    if policy_asks || facts.deny_listed || (facts.untrusted && risk.needs_human()) {
        return Decision::Approve { risk };
    }
    if facts.untrusted && facts.sends_data_out {
        return Decision::Approve { risk: risk.stricter(RiskTier::P2) };
    }
    if condition_applies && policy.approval == ApprovalMode::Risk {
        Decision::Execute { via: "policy" }
    } else {
        Decision::Execute { via: "none" }
    }
}

/// `{field, op, value}`: does the call's input match? `field` is a dot path into the arguments; a missing
/// field matches only the negative operators. Unknown operators (rejected at configuration time) match,
/// which errs on the side of asking.
pub(crate) fn condition_matches(condition: &Value, input: &Value) -> bool {
    let field = condition.get("field").and_then(Value::as_str).unwrap_or_default();
    let op = condition.get("op").and_then(Value::as_str).unwrap_or_default();
    let expected = condition.get("value").unwrap_or(&Value::Null);
    let actual = field.split('.').filter(|part| !part.is_empty()).try_fold(input, |value, part| value.get(part));
    let text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    match (op, actual) {
        ("eq", Some(actual)) => actual == expected,
        ("ne", Some(actual)) => actual != expected,
        ("matches", Some(actual)) => glob(&text(expected), &text(actual)),
        ("not_matches", Some(actual)) => !glob(&text(expected), &text(actual)),
        ("in", Some(actual)) => expected.as_array().is_some_and(|options| options.contains(actual)),
        ("not_in", Some(actual)) => !expected.as_array().is_some_and(|options| options.contains(actual)),
        ("eq" | "matches" | "in", None) => false,
        ("ne" | "not_matches" | "not_in", None) => true,
        _ => true,
    }
}

/// `*` matches any run of characters; everything else literally.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = match parts.split_first() {
        Some(split) => split,
        None => return text.is_empty(),
    };
    let Some(mut remaining) = text.strip_prefix(first) else { return false };
    let Some((last, middle)) = rest.split_last() else { return remaining.is_empty() };
    for part in middle {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

/// Words in a tool name that put it on the platform deny-list (SPEC §7.1): destruction, payments,
/// credentials, deployment, migrations and outbound mail.
const DENY_WORDS: &[&str] = &[
    "delete",
    "remove",
    "destroy",
    "drop",
    "purge",
    "truncate",
    "wipe",
    "payment",
    "pay",
    "charge",
    "refund",
    "transfer",
    "invoice",
    "credential",
    "credentials",
    "password",
    "secret",
    "secrets",
    "deploy",
    "deployment",
    "rollout",
    "migrate",
    "migration",
    "email",
    "mail",
    "sms",
];

/// Whether a tool's name marks it as a deny-listed action (MCP `destructiveHint` is checked separately).
pub(crate) fn deny_listed(tool_ref: &str) -> bool {
    let name = tool_ref.rsplit(':').next().unwrap_or(tool_ref).to_ascii_lowercase();
    let words: Vec<&str> = name.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    words.iter().any(|word| DENY_WORDS.contains(word)) || (words.contains(&"force") && words.contains(&"push"))
}

/// A policy's `rate_limit`.
#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) struct RateLimit {
    pub max_calls: i64,
    pub window_seconds: i64,
}

impl RateLimit {
    /// The policy's limit, when it has a usable one.
    pub(crate) fn of(policy: &ToolPolicy) -> Option<RateLimit> {
        let limit: RateLimit = serde_json::from_value(policy.rate_limit.clone()?).ok()?;
        (limit.max_calls > 0 && limit.window_seconds > 0).then_some(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(approval: ApprovalMode, risk: Option<RiskTier>, condition: Option<Value>) -> ToolPolicy {
        ToolPolicy { approval, risk, condition, ..ToolPolicy::enabled_by_risk(uuid::Uuid::nil(), "http_request") }
    }

    fn decide_with(policy: &ToolPolicy, default_risk: RiskTier, deny_listed: bool, untrusted: bool) -> Decision {
        let input = json!({"method": "POST"});
        decide(&CallFacts { policy, default_risk, deny_listed, input: &input, untrusted, sends_data_out: false })
    }

    #[test]
    fn modes_follow_the_table() {
        let never = policy(ApprovalMode::Never, None, None);
        assert_eq!(decide_with(&never, RiskTier::P2, false, false), Decision::Execute { via: "none" });
        let always = policy(ApprovalMode::Always, None, None);
        assert_eq!(decide_with(&always, RiskTier::P3, false, false), Decision::Approve { risk: RiskTier::P2 });
        let by_risk = policy(ApprovalMode::Risk, None, None);
        assert_eq!(decide_with(&by_risk, RiskTier::P3, false, false), Decision::Execute { via: "policy" });
        assert_eq!(decide_with(&by_risk, RiskTier::P2, false, false), Decision::Approve { risk: RiskTier::P2 });
        let pinned = policy(ApprovalMode::Risk, Some(RiskTier::P3), None);
        assert_eq!(decide_with(&pinned, RiskTier::P0, false, false), Decision::Execute { via: "policy" });
    }

    #[test]
    fn untrusted_context_and_deny_list_override_never() {
        let never = policy(ApprovalMode::Never, None, None);
        assert_eq!(decide_with(&never, RiskTier::P2, false, true), Decision::Approve { risk: RiskTier::P2 });
        assert_eq!(decide_with(&never, RiskTier::P3, false, true), Decision::Execute { via: "none" });
        assert_eq!(decide_with(&never, RiskTier::P3, true, false), Decision::Approve { risk: RiskTier::P1 });
    }

    #[test]
    fn egress_after_untrusted_content_needs_a_human_whatever_the_tier() {
        let input = json!({"url": "https://attacker.example/?q=secret"});
        let egress = |policy: &ToolPolicy, untrusted: bool, sends_data_out: bool| {
            decide(&CallFacts {
                policy,
                default_risk: RiskTier::P3,
                deny_listed: false,
                input: &input,
                untrusted,
                sends_data_out,
            })
        };
        for policy in [
            policy(ApprovalMode::Never, None, None),
            policy(ApprovalMode::Risk, Some(RiskTier::P3), None),
            policy(ApprovalMode::Risk, None, None),
        ] {
            assert_eq!(egress(&policy, true, true), Decision::Approve { risk: RiskTier::P2 }, "{:?}", policy.approval);
            assert!(matches!(egress(&policy, false, true), Decision::Execute { .. }), "a clean context runs it");
            assert!(matches!(egress(&policy, true, false), Decision::Execute { .. }), "a vouched-for destination");
        }
    }

    #[test]
    fn conditions_restrict_the_policy() {
        let only_posts =
            policy(ApprovalMode::Always, None, Some(json!({"field": "method", "op": "eq", "value": "POST"})));
        assert!(matches!(decide_with(&only_posts, RiskTier::P2, false, false), Decision::Approve { .. }));
        let only_gets =
            policy(ApprovalMode::Always, None, Some(json!({"field": "method", "op": "eq", "value": "GET"})));
        assert_eq!(decide_with(&only_gets, RiskTier::P2, false, false), Decision::Execute { via: "none" });

        let input = json!({"url": "https://api.example.com/v1/x", "n": 3, "nested": {"k": "v"}});
        let check = |op: &str, field: &str, value: Value| {
            condition_matches(&json!({"field": field, "op": op, "value": value}), &input)
        };
        assert!(check("matches", "url", json!("https://*.example.com/*")));
        assert!(!check("matches", "url", json!("https://evil.com/*")));
        assert!(check("not_matches", "url", json!("http://*")));
        assert!(check("in", "n", json!([1, 3])));
        assert!(check("not_in", "n", json!([1, 2])));
        assert!(check("eq", "nested.k", json!("v")));
        assert!(!check("eq", "missing", json!("v")));
        assert!(check("ne", "missing", json!("v")));
    }

    #[test]
    fn deny_list_reads_whole_words() {
        assert!(deny_listed("mcp:github:delete_repository"));
        assert!(deny_listed("webhook:send-email"));
        assert!(deny_listed("mcp:git:force_push"));
        assert!(!deny_listed("mcp:ui:display_page"));
        assert!(!deny_listed("http_request"));
        assert!(!deny_listed("mcp:git:push"));
    }

    #[test]
    fn glob_matching() {
        assert!(glob("*", "anything"));
        assert!(glob("a*c", "abbbc"));
        assert!(!glob("a*c", "abd"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        assert!(glob("*.md", "notes.md"));
        assert!(glob("a*b*a", "aba"));
        assert!(!glob("a*b*a", "ab"));
    }
}
