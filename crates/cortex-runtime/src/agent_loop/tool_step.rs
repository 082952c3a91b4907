//! Tool calls (SPEC §5.1 d, §6.5, §4.9): each call of a model turn goes, in order, through the policy
//! pipeline — resolvable, arguments parse (one repair round for malformed JSON), schema, rate limit, data
//! scope, approval decision — and then the ledger (at most once for non-idempotent tools, at least once
//! for idempotent ones): the row is committed `running` before the tool runs and settled
//! `completed`/`failed` after, with events, an audit entry and the job's counters.
//!
//! On resume a call already in the ledger is never repeated: settled rows are reused, `running` rows (a
//! crash mid-call) are re-run only for idempotent tools that no approval covered, else marked
//! `interrupted` with "outcome unknown"; rows waiting for a human go to the approval gate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cortex_core::approval::{RiskTier, ToolCallState};
use cortex_core::event::EventType;
use cortex_llm::ToolCall;
use cortex_store::Tx;
use cortex_store::audit::NewAudit;
use cortex_store::events::NewEvent;
use cortex_store::jobs::JobUsage;
use cortex_store::tool_calls::{NewToolCall, ToolCallEnd, ToolCallRecord};
use cortex_tools::{DataScope, Tool, ToolContext, ToolError, schema};
use serde_json::{Value, json};
use tracing::Instrument;

use super::halt::Halt;
use super::ledger::{StoredOutput, args_hash, key_for, redact};
use super::state::Item;
use super::{RateKind, Run, TOOL_CALL_LIMIT, TOOL_ERROR_LIMIT};
use crate::buffer::RecordType;
use crate::policy::{self, CallFacts, Decision, RateLimit};
use crate::tools::{Callable, OUTCOME_UNKNOWN, Resolved};

/// Outer bound on one tool call; tools enforce their own, shorter limits (SPEC §19).
const TOOL_TIMEOUT_CAP: Duration = Duration::from_secs(300);
/// Characters of a result shown in `tool.result` events (the ledger keeps more).
const EVENT_PREVIEW_CHARS: usize = 500;

/// How a settled call affects the loop.
pub(super) struct CallEnd {
    pub untrusted: bool,
}

/// The final state of a call about to be written.
pub(super) struct Settlement {
    pub state: ToolCallState,
    pub output: StoredOutput,
    pub is_error: bool,
    pub duration_ms: Option<i64>,
    /// The SSRF guard refused the destination (a `tool.denied` event).
    pub blocked: Option<String>,
}

/// Why a call of a job started with `read` access only is refused, if it is (SPEC §8.8: such users may
/// query but trigger nothing above p3 and nothing with side effects): the call's effective risk must be
/// p3 and the tool must call it harmless to repeat (a read). Asking a human (`request_approval`) is not a
/// read either.
fn beyond_read_access(tool: &Resolved, input: &Value) -> Option<Refusal> {
    let implementation = match &tool.callable {
        Callable::Tool(implementation) => implementation,
        Callable::RequestApproval(_) => return Some(read_access_refusal(tool.tool_ref())),
    };
    let mut risk = tool.policy.risk.unwrap_or_else(|| implementation.default_risk(input));
    if tool.deny_listed {
        risk = risk.stricter(RiskTier::P1);
    }
    (risk != RiskTier::P3 || !implementation.is_idempotent(input)).then(|| read_access_refusal(tool.tool_ref()))
}

fn read_access_refusal(tool_ref: &str) -> Refusal {
    Refusal {
        code: "read_only_access",
        message: format!(
            "`{tool_ref}` may not be used in this conversation: the user has read-only access to this agent, which \
             allows only read-only tools. Answer without it."
        ),
        counts_as_error: false,
        denied: true,
    }
}

/// Why a call is refused before it runs.
struct Refusal {
    code: &'static str,
    message: String,
    counts_as_error: bool,
    /// Also a `tool.denied` event (unknown or disabled tool).
    denied: bool,
}

impl Run {
    /// Processes the calls of one model turn in order, then updates the job's limits.
    pub(super) async fn run_tool_calls(&mut self, calls: Vec<ToolCall>) -> Result<(), Halt> {
        for call in calls {
            let key = key_for(&call.id, self.state.turn, &self.ledger);
            if !self.ledger.contains_key(&key) {
                if self.ledger.len() >= TOOL_CALL_LIMIT as usize {
                    return Err(Halt::permanent(
                        "tool_call_limit",
                        format!("the job reached its limit of {TOOL_CALL_LIMIT} tool calls"),
                    ));
                }
                self.check_agent_rate(RateKind::Tool).await?;
            }
            let end = self.process_call(&call, &key).await?;
            self.state.transcript.push(Item::ToolResult { call_id: call.id.clone(), key });
            self.state.untrusted |= end.untrusted;
            self.state.totals.tool_calls = self.ledger.len() as u32;
            self.state.totals.tool_errors =
                self.ledger.values().filter(|record| StoredOutput::of(record).counts_as_error).count() as u32;
            if self.state.totals.tool_errors >= TOOL_ERROR_LIMIT {
                return Err(Halt::permanent(
                    "tool_error_limit",
                    format!("{TOOL_ERROR_LIMIT} tool calls of this job failed"),
                ));
            }
        }
        Ok(())
    }

    /// One call: reuse its ledger row, or run the policy pipeline and execute it.
    async fn process_call(&mut self, call: &ToolCall, key: &str) -> Result<CallEnd, Halt> {
        if let Some(record) = self.ledger.get(key).cloned() {
            return self.resume_call(call, record).await;
        }
        let Some(tool) = self.tools.by_wire_name(&call.name).cloned() else {
            let offered: Vec<&str> = self.tools.tools.iter().map(|tool| tool.wire_name.as_str()).collect();
            let refusal = Refusal {
                code: "unknown_tool",
                message: format!("there is no tool `{}` for you; available: {}", call.name, offered.join(", ")),
                counts_as_error: true,
                denied: true,
            };
            return self.refuse(call, key, &call.name, &json!({"_raw": call.arguments}), refusal).await;
        };
        let tool_ref = tool.tool_ref().to_owned();
        let input = match call.parse_arguments() {
            Ok(input) => input,
            Err(err) => {
                // One repair round (SPEC §5.2): the first malformed call only tells the model the parse error.
                let repair = !self.state.repair_used;
                self.state.repair_used = true;
                let message = if repair {
                    format!(
                        "The arguments were not valid JSON ({err}). Call `{}` again with a valid JSON object.",
                        call.name
                    )
                } else {
                    format!("The arguments were not valid JSON ({err}).")
                };
                let refusal = Refusal { code: "invalid_json", message, counts_as_error: !repair, denied: false };
                return self.refuse(call, key, &tool_ref, &json!({"_raw": call.arguments}), refusal).await;
            }
        };
        if let Err(err) = schema::validate_arguments(tool.callable.tool().input_schema(), &input) {
            let refusal = Refusal { code: err.code(), message: err.to_string(), counts_as_error: true, denied: false };
            return self.refuse(call, key, &tool_ref, &input, refusal).await;
        }
        if self.ctx.job.read_only_access()
            && let Some(refusal) = beyond_read_access(&tool, &input)
        {
            return self.refuse(call, key, &tool_ref, &input, refusal).await;
        }
        if let Some(refusal) = self.rate_limited(&tool, call).await? {
            return self.refuse(call, key, &tool_ref, &input, refusal).await;
        }
        let scope = match data_scope(&tool) {
            Ok(scope) => scope,
            Err(message) => {
                let refusal = Refusal { code: "invalid_data_scope", message, counts_as_error: false, denied: false };
                return self.refuse(call, key, &tool_ref, &input, refusal).await;
            }
        };
        let decision = match &tool.callable {
            Callable::RequestApproval(_) => Decision::Approve { risk: tool.callable.tool().default_risk(&input) },
            Callable::Tool(implementation) => policy::decide(&CallFacts {
                policy: &tool.policy,
                default_risk: implementation.default_risk(&input),
                deny_listed: tool.deny_listed,
                input: &input,
                untrusted: self.state.untrusted,
                sends_data_out: implementation.sends_data_out(&input, &scope),
            }),
        };
        match (decision, &tool.callable) {
            (Decision::Approve { risk }, _) => self.suspend_for_approval(call, key, &tool, &input, risk).await,
            (Decision::Execute { via }, Callable::Tool(implementation)) => {
                if via == "policy" {
                    // p3 under an approval policy: approved by policy, counted like a human decision.
                    metrics::counter!("cortex_approvals_total", "risk" => "p3", "outcome" => "auto_approved")
                        .increment(1);
                }
                let implementation = implementation.clone();
                let record = self.start_call(call, key, &tool, &input, via).await?;
                self.invoke(record, implementation, input, scope, ToolCallState::Running).await
            }
            (Decision::Execute { .. }, Callable::RequestApproval(_)) => {
                Err(Halt::permanent("internal", "request_approval was not sent to a human"))
            }
        }
    }

    /// A call found in the ledger on resume (SPEC §4.9).
    async fn resume_call(&mut self, call: &ToolCall, record: ToolCallRecord) -> Result<CallEnd, Halt> {
        match record.state {
            state if state.is_settled() => Ok(CallEnd { untrusted: StoredOutput::of(&record).untrusted }),
            ToolCallState::AwaitingApproval => self.resume_after_decision(call, record).await,
            ToolCallState::Running if record.approval_id.is_none() && record.idempotent => {
                let tool = self.tools.by_ref(&record.tool_ref).cloned();
                match (tool, call.parse_arguments()) {
                    (Some(tool), Ok(input)) => match (&tool.callable, data_scope(&tool)) {
                        (Callable::Tool(implementation), Ok(scope)) => {
                            tracing::info!(tool_ref = %record.tool_ref, "re-running an interrupted idempotent call");
                            let implementation = implementation.clone();
                            self.invoke(record, implementation, input, scope, ToolCallState::Running).await
                        }
                        _ => self.interrupt(record).await,
                    },
                    _ => self.interrupt(record).await,
                }
            }
            _ => self.interrupt(record).await,
        }
    }

    /// Settles a call whose outcome is unknown (it may have run): never re-run, the model is told to verify.
    pub(super) async fn interrupt(&mut self, record: ToolCallRecord) -> Result<CallEnd, Halt> {
        let from = record.state;
        let settlement = Settlement {
            state: ToolCallState::Interrupted,
            output: StoredOutput::new(OUTCOME_UNKNOWN, false, true, Some("interrupted"), Value::Null),
            is_error: true,
            duration_ms: Some(0),
            blocked: None,
        };
        self.settle(record, from, settlement).await
    }

    /// The policy's rate limit over the ledger, if this call would exceed it (SPEC §6.5 step 3).
    async fn rate_limited(&self, tool: &Resolved, call: &ToolCall) -> Result<Option<Refusal>, Halt> {
        let Some(limit) = RateLimit::of(&tool.policy) else { return Ok(None) };
        let now = self.now();
        let window = chrono::Duration::seconds(limit.window_seconds);
        let recent = self.svc.store.recent_tool_calls(self.agent.id, tool.tool_ref(), now - window).await?;
        if recent.count < limit.max_calls {
            return Ok(None);
        }
        let retry_at = recent.oldest.map_or(now + window, |oldest| oldest + window);
        let wait = (retry_at - now).num_seconds().max(1);
        self.emit(vec![self.event(
            EventType::ToolRateLimited,
            json!({"tool_ref": tool.tool_ref(), "call_id": call.id, "max_calls": limit.max_calls,
                   "window_seconds": limit.window_seconds, "retry_after_seconds": wait}),
        )])
        .await?;
        Ok(Some(Refusal {
            code: "rate_limited",
            message: format!(
                "`{}` is rate limited to {} calls per {} s; you may call it again in {wait} s",
                tool.tool_ref(),
                limit.max_calls,
                limit.window_seconds
            ),
            counts_as_error: false,
            denied: false,
        }))
    }

    /// Records a call refused before it ran.
    async fn refuse(
        &mut self,
        call: &ToolCall,
        key: &str,
        tool_ref: &str,
        input: &Value,
        refusal: Refusal,
    ) -> Result<CallEnd, Halt> {
        let output =
            StoredOutput::new(&refusal.message, false, refusal.counts_as_error, Some(refusal.code), Value::Null);
        let new = NewToolCall {
            job_id: self.ctx.job.id,
            agent_id: self.agent.id,
            call_id: key.to_owned(),
            turn: self.state.turn,
            tool_ref: tool_ref.to_owned(),
            input: redact(input),
            input_hash: args_hash(input),
            state: ToolCallState::Failed,
            output: Some(output.to_value()),
            is_error: true,
            idempotent: false,
        };
        let mut tx = self.svc.store.begin().await?;
        let record = tx.insert_tool_call(&new).await?;
        if refusal.denied {
            tx.emit(self.event(
                EventType::ToolDenied,
                json!({"tool_ref": tool_ref, "call_id": call.id, "code": refusal.code, "reason": refusal.message}),
            ));
        }
        self.record_outcome(&mut tx, &record).await?;
        tx.commit().await?;
        let now = self.now();
        self.buffer.append(
            RecordType::ToolCall,
            now,
            json!({"call_id": call.id, "tool_ref": tool_ref, "input": new.input}),
        );
        self.finish_recording(record).await;
        Ok(CallEnd { untrusted: false })
    }

    /// Commits the `running` row of a call about to execute (before it executes).
    async fn start_call(
        &mut self,
        call: &ToolCall,
        key: &str,
        tool: &Resolved,
        input: &Value,
        via: &str,
    ) -> Result<ToolCallRecord, Halt> {
        let new = NewToolCall {
            job_id: self.ctx.job.id,
            agent_id: self.agent.id,
            call_id: key.to_owned(),
            turn: self.state.turn,
            tool_ref: tool.tool_ref().to_owned(),
            input: redact(input),
            input_hash: args_hash(input),
            state: ToolCallState::Running,
            output: None,
            is_error: false,
            idempotent: tool.callable.tool().is_idempotent(input),
        };
        let mut tx = self.svc.store.begin().await?;
        let record = tx.insert_tool_call(&new).await?;
        tx.emit(self.tool_call_event(&record, via, None));
        tx.commit().await?;
        let now = self.now();
        self.buffer.append(
            RecordType::ToolCall,
            now,
            json!({"call_id": call.id, "tool_ref": record.tool_ref, "input": record.input, "approval": via}),
        );
        self.ledger.insert(record.call_id.clone(), record.clone());
        Ok(record)
    }

    /// Executes a call whose row is `from` (normally `running`) and settles it.
    pub(super) async fn invoke(
        &mut self,
        record: ToolCallRecord,
        tool: Arc<dyn Tool>,
        input: Value,
        scope: DataScope,
        from: ToolCallState,
    ) -> Result<CallEnd, Halt> {
        let ctx = ToolContext {
            agent_id: self.agent.id,
            job_id: self.ctx.job.id,
            call_id: record.id,
            data_scope: scope,
            untrusted_context: self.state.untrusted,
            cancel: self.ctx.cancel.child_token(),
        };
        let span = tracing::info_span!("tool.call", tool = %record.tool_ref, call_id = %record.call_id);
        let started = Instant::now();
        let result = tokio::time::timeout(TOOL_TIMEOUT_CAP, tool.call(input, &ctx)).instrument(span).await;
        let duration_ms = Some(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX));
        // Whatever a tool returns is redacted before it reaches the ledger, the context or an event.
        let redactor = self.svc.secrets.refresh().await?;
        let settlement = match result {
            Ok(Ok(output)) => {
                let interrupted = output.data.get("interrupted").and_then(Value::as_bool) == Some(true);
                let (content, data) = (redactor.apply(&output.content), redactor.apply_json(&output.data));
                Settlement {
                    state: if interrupted { ToolCallState::Interrupted } else { ToolCallState::Completed },
                    output: StoredOutput::new(&content, true, output.is_error, None, data),
                    is_error: output.is_error,
                    duration_ms,
                    blocked: None,
                }
            }
            Ok(Err(err)) => Settlement {
                state: ToolCallState::Failed,
                output: StoredOutput::new(&redactor.apply(&err.to_string()), true, true, Some(err.code()), Value::Null),
                is_error: true,
                duration_ms,
                blocked: matches!(err, ToolError::BlockedDestination { .. }).then(|| redactor.apply(&err.to_string())),
            },
            Err(_) => Settlement {
                state: ToolCallState::Failed,
                output: StoredOutput::new("the tool call timed out", false, true, Some("timeout"), Value::Null),
                is_error: true,
                duration_ms,
                blocked: None,
            },
        };
        self.settle(record, from, settlement).await
    }

    /// Writes a call's final state with its job counter, audit entry and events, in one transaction.
    pub(super) async fn settle(
        &mut self,
        record: ToolCallRecord,
        from: ToolCallState,
        settlement: Settlement,
    ) -> Result<CallEnd, Halt> {
        let end = ToolCallEnd {
            state: settlement.state,
            output: settlement.output.to_value(),
            is_error: settlement.is_error,
            duration_ms: settlement.duration_ms,
            cost_usd: 0.0,
        };
        let mut tx = self.svc.store.begin().await?;
        let settled = tx.finish_tool_call(record.id, from, &end).await?;
        if settlement.duration_ms.is_some() {
            let usage = JobUsage { tool_calls: 1, ..JobUsage::default() };
            tx.add_job_usage(self.ctx.job.id, &usage).await?;
        }
        if let Some(reason) = &settlement.blocked {
            tx.emit(self.event(
                EventType::ToolDenied,
                json!({"tool_ref": settled.tool_ref, "call_id": settled.call_id, "code": "blocked_destination", "reason": reason}),
            ));
        }
        self.record_outcome(&mut tx, &settled).await?;
        tx.commit().await?;
        self.finish_recording(settled).await;
        Ok(CallEnd { untrusted: settlement.output.untrusted })
    }

    /// The audit entry and `tool.result` event of a settled call (SPEC §7.6, §17.7).
    async fn record_outcome(&self, tx: &mut Tx, record: &ToolCallRecord) -> Result<(), Halt> {
        let output = StoredOutput::of(record);
        tx.audit(NewAudit {
            actor_type: "agent",
            actor_id: Some(self.agent.id.to_string()),
            action: "tool.call".into(),
            target_type: "tool_call",
            target_id: Some(record.id.to_string()),
            details: json!({"agent_id": self.agent.id, "job_id": self.ctx.job.id, "tool_ref": record.tool_ref,
                            "args_hash": record.input_hash, "approval_id": record.approval_id, "outcome": record.state,
                            "code": output.code, "cost_usd": record.cost_usd, "duration_ms": record.duration_ms}),
            ip: None,
            request_id: None,
        })
        .await?;
        let preview: String = output.content.chars().take(EVENT_PREVIEW_CHARS).collect();
        tx.emit(NewEvent {
            tool_ref: Some(record.tool_ref.clone()),
            ..self.event(
                EventType::ToolResult,
                json!({"call_id": record.call_id, "tool_ref": record.tool_ref, "state": record.state,
                       "is_error": record.is_error, "code": output.code, "duration_ms": record.duration_ms,
                       "preview": preview, "truncated": output.truncated}),
            )
        });
        Ok(())
    }

    /// After commit: the in-memory ledger, the session buffer and the metric.
    async fn finish_recording(&mut self, record: ToolCallRecord) {
        metrics::counter!("cortex_tool_calls_total", "tool" => record.tool_ref.clone(), "outcome" => record.state.as_str())
            .increment(1);
        let output = StoredOutput::of(&record);
        let data = json!({"call_id": record.call_id, "tool_ref": record.tool_ref, "state": record.state,
                          "is_error": record.is_error, "content": output.content, "code": output.code});
        let now = self.now();
        self.ledger.insert(record.call_id.clone(), record);
        self.buffer.append(RecordType::ToolResult, now, data);
    }

    /// The `tool.call` event of a call that starts (`via`: none, policy, approved) or waits for a human.
    pub(super) fn tool_call_event(&self, record: &ToolCallRecord, via: &str, risk: Option<RiskTier>) -> NewEvent {
        NewEvent {
            tool_ref: Some(record.tool_ref.clone()),
            ..self.event(
                EventType::ToolCall,
                json!({"call_id": record.call_id, "tool_ref": record.tool_ref, "input": record.input,
                       "state": record.state, "approval": via, "approval_id": record.approval_id, "risk": risk}),
            )
        }
    }
}

/// The policy's `data_scope`, checked (unknown keys are refused rather than ignored).
pub(super) fn data_scope(tool: &Resolved) -> Result<DataScope, String> {
    match &tool.policy.data_scope {
        Some(scope) => serde_json::from_value(scope.clone())
            .map_err(|err| format!("the tool policy's data_scope is invalid: {err}")),
        None => Ok(DataScope::default()),
    }
}
