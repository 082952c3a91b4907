//! The automatic agent breaker (SPEC §5.7): **3** consecutive final job failures of an agent whose class
//! counts (`transient`, `timeout`, `resource`, `unknown`) quarantine it, with a reason, a `breaker.trip`
//! event, an `agent.health` event (the dashboard's live page), an audit entry and a notice to the agent's
//! `approval_notify` chats.
//!
//! The decision is made in the transaction that makes a job's failure final (see
//! [`crate::settle_failure`]): it locks the agent row, then counts the agent's newest finished jobs since
//! `health_reset_at` (set by release) from the store. Failures of two workers racing for one agent are
//! counted one after the other, so the third trips the breaker exactly once. A success breaks the run;
//! `permanent` failures (configuration errors, cancellation) are skipped — they neither count nor reset.
//! Retried attempts do not count: only the job's final failure does. A quarantined agent's jobs are not
//! claimed (the claim query), so nothing more fails until an operator releases it.

use cortex_core::agent::{BREAKER_THRESHOLD, HealthState};
use cortex_core::event::EventType;
use cortex_core::job::JobError;
use cortex_store::audit::NewAudit;
use cortex_store::events::NewEvent;
use cortex_store::jobs::Job;
use cortex_store::{Result, Tx};
use serde_json::json;

/// Longest error message quoted in the quarantine reason (the reason is shown on the agent page and in
/// chat notices).
const MESSAGE_MAX: usize = 200;

/// Whether the automatic breaker runs; off with `CORTEX_DISABLE_QUARANTINE=true` (manual quarantine still
/// works).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoQuarantine {
    On,
    Off,
}

/// Counts the final failure of `job` (already recorded in `tx`) toward its agent's breaker and trips it
/// when this failure makes [`BREAKER_THRESHOLD`] in a row.
pub(crate) async fn count_final_failure(tx: &mut Tx, job: &Job, error: &JobError, auto: AutoQuarantine) -> Result<()> {
    if auto == AutoQuarantine::Off || !error.class.counts_toward_agent_breaker() {
        return Ok(());
    }
    let agent = tx.lock_agent_health(job.agent_id).await?;
    if agent.health_state == HealthState::Quarantined {
        return Ok(());
    }
    let failures = tx.agent_failure_streak(job.agent_id, agent.health_reset_at, BREAKER_THRESHOLD).await?;
    if failures < BREAKER_THRESHOLD {
        return Ok(());
    }
    let message: String = error.message.chars().take(MESSAGE_MAX).collect();
    let reason =
        format!("agent breaker: {failures} consecutive failed jobs; last {}/{}: {message}", error.class, error.code);
    tx.set_agent_health(job.agent_id, HealthState::Quarantined, Some(&reason), None).await?;
    let error_json = json!({"class": error.class, "code": error.code, "message": message});
    tx.audit(NewAudit {
        actor_type: "system",
        actor_id: None,
        action: "agent.breaker_trip".into(),
        target_type: "agent",
        target_id: Some(job.agent_id.to_string()),
        details: json!({"from": agent.health_state, "to": HealthState::Quarantined, "reason": reason,
                        "consecutive_failures": failures, "job_id": job.id, "error": error_json}),
        ip: None,
        request_id: None,
    })
    .await?;
    tx.emit(NewEvent::new(
        job.agent_id,
        Some(job.id),
        EventType::BreakerTrip,
        json!({"reason": reason, "consecutive_failures": failures, "threshold": BREAKER_THRESHOLD,
               "error": error_json}),
    ));
    tx.emit(NewEvent::new(
        job.agent_id,
        None,
        EventType::AgentHealth,
        json!({"from": agent.health_state, "to": HealthState::Quarantined, "reason": reason,
               "action": "breaker.trip"}),
    ));
    tx.queue_operator_notice(
        job.agent_id,
        &format!("breaker:{}", job.id),
        &format!("Agent quarantined: {reason}. An operator can release it from the agent's page."),
    )
    .await?;
    tracing::warn!(agent_id = %job.agent_id, job_id = %job.id, %reason, "agent breaker tripped; agent quarantined");
    Ok(())
}
