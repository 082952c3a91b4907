//! Event types of the single agent event log (SPEC §4.11). Every type is emitted by running code.

crate::string_enum! {
    /// `agent_event.type`; also the SSE `event:` field.
    pub enum EventType {
        JobState = "job.state",
        LlmRequest = "llm.request",
        LlmDelta = "llm.delta",
        LlmMessage = "llm.message",
        LlmUsage = "llm.usage",
        ToolCall = "tool.call",
        ToolResult = "tool.result",
        ToolDenied = "tool.denied",
        ToolRateLimited = "tool.rate_limited",
        ApprovalRequested = "approval.requested",
        ApprovalDecided = "approval.decided",
        SteerInjected = "steer.injected",
        SteerAcknowledged = "steer.acknowledged",
        Checkpoint = "checkpoint",
        SubagentSpawned = "subagent.spawned",
        SubagentFinished = "subagent.finished",
        CostAlert = "cost.alert",
        BreakerTrip = "breaker.trip",
        /// An operator quarantined, released or killed the agent (SPEC §5.7).
        AgentHealth = "agent.health",
        MessageReceived = "message.received",
        MessageSent = "message.sent",
        JobCompleted = "job.completed",
        JobFailed = "job.failed",
        Error = "error",
    }
}

impl EventType {
    /// Events after which a job's event stream has nothing more to say.
    pub fn ends_job_stream(self) -> bool {
        matches!(self, Self::JobCompleted | Self::JobFailed)
    }
}

crate::string_enum! {
    /// Who caused an event.
    pub enum Actor {
        Agent = "agent",
        Operator = "operator",
        System = "system",
    }
}
