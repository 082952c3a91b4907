//! Approval vocabulary: risk tiers with their TTLs, approval modes and decision channels (SPEC §7).

use chrono::Duration;

crate::string_enum! {
    /// Risk of an action; decides whether a human must approve it and for how long the request lives.
    pub enum RiskTier {
        P0 = "p0",
        P1 = "p1",
        P2 = "p2",
        P3 = "p3",
    }
}

impl RiskTier {
    /// Default time to live of a request at this tier; `None` means auto-approved (p3).
    pub fn default_ttl(self) -> Option<Duration> {
        match self {
            Self::P0 | Self::P1 => Some(Duration::hours(24)),
            Self::P2 => Some(Duration::hours(72)),
            Self::P3 => None,
        }
    }

    /// Whether a call at this tier waits for a human when the policy says `risk`.
    pub fn needs_human(self) -> bool {
        self != Self::P3
    }

    /// The stricter (lower-numbered) of two tiers.
    pub fn stricter(self, other: RiskTier) -> RiskTier {
        self.min(other)
    }
}

/// Bounds on a per-request TTL override.
pub const MIN_TTL: Duration = Duration::seconds(60);
pub const MAX_TTL: Duration = Duration::days(7);

crate::string_enum! {
    /// Per-tool approval policy (SPEC §7.1).
    pub enum ApprovalMode {
        Never = "never",
        Always = "always",
        Risk = "risk",
    }
}

crate::string_enum! {
    pub enum ApprovalStatus {
        Pending = "pending",
        Approved = "approved",
        Rejected = "rejected",
        Expired = "expired",
    }
}

crate::string_enum! {
    pub enum Decision {
        Approve = "approve",
        Reject = "reject",
    }
}

crate::string_enum! {
    /// The surface through which a decision arrived; `policy` marks automatic approvals.
    pub enum DecidedVia {
        Api = "api",
        Dashboard = "dashboard",
        Token = "token",
        Telegram = "telegram",
        Discord = "discord",
        Slack = "slack",
        Whatsapp = "whatsapp",
        Policy = "policy",
    }
}

crate::string_enum! {
    /// The ledger states of a tool call (SPEC §3.3, §4.9): non-idempotent calls run at most once, idempotent
    /// ones at least once (re-sent after a crash with the same idempotency key).
    pub enum ToolCallState {
        Requested = "requested",
        AwaitingApproval = "awaiting_approval",
        Running = "running",
        Completed = "completed",
        Failed = "failed",
        Rejected = "rejected",
        Interrupted = "interrupted",
    }
}

impl ToolCallState {
    /// A call in one of these states has an outcome that must be reused, never re-executed.
    pub fn is_settled(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Rejected | Self::Interrupted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers() {
        assert_eq!(RiskTier::P0.default_ttl(), Some(Duration::hours(24)));
        assert_eq!(RiskTier::P2.default_ttl(), Some(Duration::hours(72)));
        assert_eq!(RiskTier::P3.default_ttl(), None);
        assert_eq!(RiskTier::P3.stricter(RiskTier::P1), RiskTier::P1);
        assert_eq!("P2".parse::<RiskTier>(), Ok(RiskTier::P2));
    }
}
