//! Waiting for a human (SPEC §7.2, §7.5).
//!
//! Suspending is one transaction: the call's ledger row (`awaiting_approval`), the approval request (with
//! its `created` audit entry and `approval.requested` event, written by the store), the checkpoint, and the
//! job's move to `waiting_for_approval`. Nothing runs and no tokens are spent while it waits.
//!
//! When the decision has moved the job back to the queue, the resumed run finds the row still
//! `awaiting_approval` and reads the decision: approved → in one transaction the approval's single
//! execution is claimed and the row moved to `running`, then the exact approved call (same tool, same
//! argument hash) runs once; a claim that fails means a previous run already took it, so the call is
//! treated as interrupted and never run twice. Rejected or expired → the row is `rejected` and the model is
//! told why; the loop continues. For `request_approval` the decision itself is the result.

use cortex_core::approval::{ApprovalStatus, RiskTier, ToolCallState};
use cortex_jobs::Outcome;
use cortex_llm::ToolCall;
use cortex_store::approvals::{Approval, NewApproval};
use cortex_store::jobs::Suspend;
use cortex_store::tool_calls::{NewToolCall, ToolCallRecord};
use serde_json::{Value, json};

use super::Run;
use super::halt::Halt;
use super::ledger::{StoredOutput, args_hash, redact};
use super::tool_step::{CallEnd, Settlement};
use crate::buffer::RecordType;
use crate::tools::{Callable, REQUEST_APPROVAL, Resolved};

/// TTL of a human request at a tier with no default (a p3 call under an `always` policy, or a p3
/// `request_approval`): the p2 default.
const FALLBACK_TTL_HOURS: i64 = 72;
/// Characters of the arguments quoted in an approval summary.
const SUMMARY_ARGS_CHARS: usize = 400;

impl Run {
    /// Records the call as waiting for a human and suspends the job; always ends the run.
    pub(super) async fn suspend_for_approval(
        &mut self,
        call: &ToolCall,
        key: &str,
        tool: &Resolved,
        input: &Value,
        risk: RiskTier,
    ) -> Result<CallEnd, Halt> {
        let tool_ref = tool.tool_ref().to_owned();
        let hash = args_hash(input);
        let redacted = redact(input);
        let (action_type, summary, detail) = match tool.callable {
            Callable::RequestApproval(_) => (
                "request",
                input.get("summary").and_then(Value::as_str).unwrap_or("approval requested").to_owned(),
                json!({"detail": input.get("detail"), "risk": risk, "call_id": call.id}),
            ),
            Callable::Tool(_) => {
                let arguments: String = redacted.to_string().chars().take(SUMMARY_ARGS_CHARS).collect();
                (
                    "tool",
                    format!("Call `{tool_ref}` with {arguments}"),
                    json!({"tool_ref": tool_ref, "arguments": redacted, "args_hash": hash, "call_id": call.id,
                           "turn": self.state.turn}),
                )
            }
        };
        let job_id = self.ctx.job.id;
        let mut tx = self.svc.store.begin().await?;
        let ttl = risk.default_ttl().unwrap_or_else(|| chrono::Duration::hours(FALLBACK_TTL_HOURS));
        let expires_at = tx.clock_now() + ttl;
        let mut record = tx
            .insert_tool_call(&NewToolCall {
                job_id,
                agent_id: self.agent.id,
                call_id: key.to_owned(),
                turn: self.state.turn,
                tool_ref: tool_ref.clone(),
                input: redacted,
                input_hash: hash.clone(),
                state: ToolCallState::AwaitingApproval,
                output: None,
                is_error: false,
                idempotent: tool.callable.tool().is_idempotent(input),
            })
            .await?;
        // The one-time token goes to notifications, which are not the runtime's; the API and dashboard
        // decide by id.
        let (approval, _token) = tx
            .insert_approval(&NewApproval {
                job_id,
                tool_call_id: Some(record.id),
                agent_id: self.agent.id,
                action_type,
                action_summary: summary,
                action_detail: detail,
                tool_ref: Some(tool_ref.clone()),
                args_hash: Some(hash),
                risk,
                expires_at,
            })
            .await?;
        tx.set_tool_call_approval(record.id, approval.id).await?;
        record.approval_id = Some(approval.id);
        tx.emit(self.tool_call_event(&record, "pending", Some(risk)));
        self.ledger.insert(record.call_id.clone(), record);
        self.suspend_in(tx, approval.id).await?;
        let now = self.now();
        self.buffer
            .append(
                RecordType::ApprovalRequest,
                now,
                json!({"approval_id": approval.id, "call_id": call.id, "tool_ref": tool_ref, "risk": risk, "expires_at": expires_at}),
            );
        Err(Halt(Outcome::Suspended))
    }

    /// Checkpoints and moves the job to `waiting_for_approval` in `tx`, then commits.
    async fn suspend_in(&mut self, mut tx: cortex_store::Tx, approval_id: uuid::Uuid) -> Result<(), Halt> {
        let sealed = self.sealed_checkpoint()?;
        if !tx.save_checkpoint(self.ctx.job.id, self.ctx.worker_id, &sealed).await? {
            return Err(Halt::lost());
        }
        tx.suspend(self.ctx.job.id, self.ctx.worker_id, Suspend::AwaitApproval, Some(approval_id)).await?;
        tx.commit().await?;
        let now = self.now();
        self.buffer.append(RecordType::Checkpoint, now, json!({"turn": self.state.turn, "crc": sealed.crc}));
        Ok(())
    }

    /// A call that waited for a human, after the job resumed.
    pub(super) async fn resume_after_decision(
        &mut self,
        call: &ToolCall,
        record: ToolCallRecord,
    ) -> Result<CallEnd, Halt> {
        let Some(approval_id) = record.approval_id else { return self.interrupt(record).await };
        let approval = self.svc.store.get_approval(approval_id).await?;
        if approval.status == ApprovalStatus::Pending {
            // Resumed without a decision (e.g. a repaired queue): wait again for the same request.
            let tx = self.svc.store.begin().await?;
            self.suspend_in(tx, approval_id).await?;
            return Err(Halt(Outcome::Suspended));
        }
        let now = self.now();
        self.buffer
            .append(
                RecordType::ApprovalDecision,
                now,
                json!({"approval_id": approval.id, "status": approval.status, "reason": approval.reason, "call_id": call.id}),
            );
        let request = record.tool_ref == REQUEST_APPROVAL;
        let reason = approval.reason.clone().unwrap_or_else(|| "none given".to_owned());
        match (approval.status, request) {
            (ApprovalStatus::Approved, true) => {
                let mut tx = self.svc.store.begin().await?;
                tx.claim_approved_execution(approval.id).await?;
                tx.commit().await?;
                let message = format!("Approved by a human. Reason: {reason}");
                self.decide(record, ToolCallState::Completed, &message, false, "approved").await
            }
            (ApprovalStatus::Approved, false) => self.run_approved(call, record, &approval).await,
            (ApprovalStatus::Expired, _) => {
                let message = "The approval request expired before anyone decided; nothing was done.";
                self.decide(record, ToolCallState::Rejected, message, !request, "approval_expired").await
            }
            (_, true) => {
                let message = format!("A human rejected your request. Reason: {reason}");
                self.decide(record, ToolCallState::Rejected, &message, false, "approval_rejected").await
            }
            (_, false) => {
                let message = format!("The approver rejected this call; it was not executed. Reason: {reason}");
                self.decide(record, ToolCallState::Rejected, &message, true, "approval_rejected").await
            }
        }
    }

    /// Settles a waiting call with the decision as its result.
    async fn decide(
        &mut self,
        record: ToolCallRecord,
        state: ToolCallState,
        message: &str,
        is_error: bool,
        code: &str,
    ) -> Result<CallEnd, Halt> {
        let settlement = Settlement {
            state,
            output: StoredOutput::new(message, false, false, Some(code), Value::Null),
            is_error,
            duration_ms: None,
            blocked: None,
        };
        self.settle(record, ToolCallState::AwaitingApproval, settlement).await
    }

    /// Runs the exact approved call once.
    async fn run_approved(
        &mut self,
        call: &ToolCall,
        record: ToolCallRecord,
        approval: &Approval,
    ) -> Result<CallEnd, Halt> {
        let input = call.parse_arguments().ok();
        let exact = input.as_ref().is_some_and(|input| Some(args_hash(input)) == approval.args_hash)
            && approval.tool_ref.as_deref() == Some(record.tool_ref.as_str());
        let tool = self.tools.by_ref(&record.tool_ref).cloned();
        let (Some(input), true, Some(tool)) = (input, exact, tool) else {
            let message = "The approved call cannot run: the tool is no longer available or the call differs from what was approved.";
            return self.decide(record, ToolCallState::Failed, message, true, "approval_mismatch").await;
        };
        let (Callable::Tool(implementation), Ok(scope)) = (&tool.callable, super::tool_step::data_scope(&tool)) else {
            let message = "The approved call cannot run with the tool's current policy.";
            return self.decide(record, ToolCallState::Failed, message, true, "approval_mismatch").await;
        };
        let implementation = implementation.clone();
        let mut tx = self.svc.store.begin().await?;
        if !tx.claim_approved_execution(approval.id).await? {
            // Another run claimed this approval's single execution: it may have run; never run it twice.
            drop(tx);
            return self.interrupt(record).await;
        }
        tx.move_tool_call(record.id, ToolCallState::AwaitingApproval, ToolCallState::Running).await?;
        let running = ToolCallRecord { state: ToolCallState::Running, ..record };
        tx.emit(self.tool_call_event(&running, "approved", Some(approval.risk)));
        tx.commit().await?;
        self.ledger.insert(running.call_id.clone(), running.clone());
        self.invoke(running, implementation, input, scope, ToolCallState::Running).await
    }
}
