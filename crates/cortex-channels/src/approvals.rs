//! Approvals in chat (SPEC §7.3, §7.7): the notice with Approve / Reject / Details buttons that the
//! outbox sends to the chat that started a waiting job, and what a press on one of those buttons does.
//!
//! The notice is an outbox row written in the transaction that creates the request
//! (`Tx::insert_approval`); the sender renders it from the request when it sends, so a notice sent
//! after a decision already shows the outcome. Button payloads carry only `apr:<a|r|d>:<32 hex>`.
//!
//! A press decides only when the presser's platform identity maps to a user with the `approver` or
//! `admin` role (and, when the request names an approver, only that user or an admin); anyone else is
//! told "not allowed", an `unauthorized_attempt` entry is written to the request's audit trail, and
//! nothing changes. The decision goes through [`cortex_jobs::approvals::decide`], the code path of
//! `POST /approvals/{id}/decide`, so it is final and race-safe: a double press, a replayed interaction
//! or a request decided elsewhere yields one decision and a polite answer. The button message is then
//! edited to show the outcome and who decided (WhatsApp cannot edit: the outcome is queued as a notice).

use cortex_core::approval::{ApprovalStatus, DecidedVia, Decision, RiskTier};
use cortex_core::role::Role;
use cortex_jobs::approvals::{DecisionError, decide};
use cortex_store::approvals::{Approval, Decider};
use cortex_store::audit::NewAudit;
use cortex_store::channels::{Channel, InboundOutcome};
use cortex_store::outbox::NewOutbox;
use cortex_store::{Store, StoreError};
use serde_json::json;
use uuid::Uuid;

use crate::adapter::ChannelAdapter;
use crate::types::{Button, ButtonPress, OutboundMessage, Platform};

/// Characters of the call's arguments quoted in a notice.
const ARGUMENT_CHARS: usize = 1200;
/// Characters of the answer to a "Details" press (Telegram shows at most 200 in a callback answer).
const DETAIL_CHARS: usize = 190;

/// What a button asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Approve,
    Reject,
    Details,
}

/// The payload of a button: `apr:<a|r|d>:<approval id as 32 hex>` (fits Telegram's 64 bytes).
pub fn button_data(action: Action, approval_id: Uuid) -> String {
    let letter = match action {
        Action::Approve => 'a',
        Action::Reject => 'r',
        Action::Details => 'd',
    };
    format!("apr:{letter}:{}", approval_id.simple())
}

/// Reads a button payload; `None` for anything that is not an approval button.
pub fn parse_button(data: &str) -> Option<(Action, Uuid)> {
    let rest = data.strip_prefix("apr:")?;
    let (letter, id) = rest.split_once(':')?;
    let action = match letter {
        "a" => Action::Approve,
        "r" => Action::Reject,
        "d" => Action::Details,
        _ => return None,
    };
    (id.len() == 32).then_some(())?;
    Some((action, Uuid::try_parse(id).ok()?))
}

fn badge(risk: RiskTier) -> &'static str {
    match risk {
        RiskTier::P0 => "🛑",
        RiskTier::P1 => "⚠️",
        RiskTier::P2 => "🟡",
        RiskTier::P3 => "🟢",
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The action as the approver reads it: the tool and its (already redacted) arguments, or the summary
/// of a `request_approval` / whole-job gate.
fn action_text(approval: &Approval) -> String {
    match (&approval.tool_ref, approval.action_detail.get("arguments")) {
        (Some(tool), Some(arguments)) if approval.action_type == "tool" => {
            format!("Tool call: `{tool}`\nArguments: `{}`", truncate(&arguments.to_string(), ARGUMENT_CHARS))
        }
        _ => truncate(&approval.action_summary, ARGUMENT_CHARS),
    }
}

/// The line that replaces the buttons once the request is no longer pending.
fn outcome_line(approval: &Approval, decider: Option<&str>) -> Option<String> {
    let by = match (decider, approval.decided_via) {
        (Some(name), _) => format!(" by {name}"),
        (None, Some(via)) => format!(" (via {via})"),
        (None, None) => String::new(),
    };
    match approval.status {
        ApprovalStatus::Pending => None,
        ApprovalStatus::Approved => Some(format!("✅ Approved{by}")),
        ApprovalStatus::Rejected => Some(format!("❌ Rejected{by}")),
        ApprovalStatus::Expired => Some("⌛ Expired without a decision".to_owned()),
    }
}

/// The notice text and, while the request is pending, its buttons.
pub fn notice(approval: &Approval, agent_name: &str, decider: Option<&str>) -> (String, Vec<Button>) {
    let short_job: String = approval.job_id.simple().to_string().chars().take(8).collect();
    let mut text = format!(
        "{} Approval needed ({}) — agent {agent_name}\n\n{}\n\nJob {short_job} · expires {}",
        badge(approval.risk),
        approval.risk,
        action_text(approval),
        approval.expires_at.format("%Y-%m-%d %H:%M UTC"),
    );
    match outcome_line(approval, decider) {
        Some(line) => {
            text.push_str("\n\n");
            text.push_str(&line);
            (text, Vec::new())
        }
        None => {
            let button = |label: &str, action| Button { label: label.into(), data: button_data(action, approval.id) };
            let buttons = vec![
                button("Approve", Action::Approve),
                button("Reject", Action::Reject),
                button("Details", Action::Details),
            ];
            (text, buttons)
        }
    }
}

/// Renders the notice of `approval_id` as it stands now (used by the outbox sender).
pub async fn render(store: &Store, approval_id: Uuid) -> Result<(String, Vec<Button>), StoreError> {
    let approval = store.get_approval(approval_id).await?;
    let agent = store.get_agent(&approval.agent_id.to_string()).await?;
    Ok(notice(&approval, &agent.name, None))
}

fn via(platform: Platform) -> DecidedVia {
    match platform {
        Platform::Telegram => DecidedVia::Telegram,
        Platform::Discord => DecidedVia::Discord,
        Platform::Slack => DecidedVia::Slack,
        Platform::WhatsApp => DecidedVia::Whatsapp,
    }
}

/// What handling a press decided: how the inbound row ends, and a notice to queue with it (WhatsApp,
/// which has no interaction answers or edits).
pub struct PressResult {
    pub outcome: InboundOutcome,
    pub notice: Option<NewOutbox>,
}

/// Acts on a recorded button press of `channel`.
pub async fn on_press(
    store: &Store,
    channel: &Channel,
    adapter: &dyn ChannelAdapter,
    press: &ButtonPress,
) -> Result<PressResult, StoreError> {
    let ignored = |detail: &str| PressResult {
        outcome: InboundOutcome { status: "ignored", detail: Some(detail.into()), ..Default::default() },
        notice: None,
    };
    let Some((action, approval_id)) = parse_button(&press.data) else {
        answer(adapter, press, None).await;
        return Ok(ignored("not an approval button"));
    };
    let approval = match store.get_approval(approval_id).await {
        Ok(approval) => approval,
        Err(StoreError::NotFound { .. }) => {
            answer(adapter, press, Some("This request no longer exists.")).await;
            return Ok(ignored("unknown approval"));
        }
        Err(err) => return Err(err),
    };
    let mut tx = store.begin().await?;
    let (user_id, role) =
        tx.channel_user(channel.id, &press.sender.platform_user_id, &press.sender.display_name).await?;
    tx.commit().await?;
    let platform = adapter.platform();
    let actor = json!({
        "type": "channel_user", "user_id": user_id, "display_name": press.sender.display_name, "role": role,
        "surface": platform, "channel_id": channel.id, "platform_user_id": press.sender.platform_user_id,
    });
    let routed = |detail: String, reply: Option<String>| PressResult {
        outcome: InboundOutcome {
            status: "routed",
            user_id: Some(user_id),
            detail: Some(detail),
            ..Default::default()
        },
        notice: reply.map(|text| notice_row(channel, press, text)),
    };

    if action == Action::Details {
        let details = truncate(&action_text(&approval).replace('`', ""), DETAIL_CHARS);
        let reply = answer_or_notice(adapter, press, &details).await;
        return Ok(routed("approval details".into(), reply));
    }
    let may_decide = role.includes(Role::Approver)
        && approval.approver_user_id.is_none_or(|approver| approver == user_id || role == Role::Admin);
    if !may_decide {
        let mut tx = store.begin().await?;
        let details = json!({"action": if action == Action::Approve { "approve" } else { "reject" }});
        tx.append_approval_audit(approval.id, "unauthorized_attempt", actor, details).await?;
        tx.commit().await?;
        let reply = answer_or_notice(adapter, press, "You are not allowed to decide this request.").await;
        return Ok(PressResult {
            outcome: InboundOutcome {
                status: "refused",
                user_id: Some(user_id),
                detail: Some("not an approver".into()),
                ..Default::default()
            },
            notice: reply.map(|text| notice_row(channel, press, text)),
        });
    }

    let decision = if action == Action::Approve { Decision::Approve } else { Decision::Reject };
    let decider = Decider { user_id: Some(user_id), api_key_id: None, via: via(platform), actor };
    let (current, answer_text, decider_name) = match decide(store, approval.id, decision, &decider, None).await {
        Ok(decided) => {
            let mut tx = store.begin().await?;
            tx.audit(NewAudit {
                actor_type: "channel_user",
                actor_id: Some(user_id.to_string()),
                action: "approval.decide".into(),
                target_type: "approval",
                target_id: Some(decided.id.to_string()),
                details: json!({"decision": decision, "via": via(platform), "channel_id": channel.id}),
                ip: None,
                request_id: None,
            })
            .await?;
            tx.commit().await?;
            let text = if decision == Decision::Approve { "Approved." } else { "Rejected." };
            (decided, text.to_owned(), Some(press.sender.display_name.as_str()))
        }
        Err(DecisionError::AlreadyDecided(status)) => {
            (store.get_approval(approval.id).await?, format!("This request was already {status}."), None)
        }
        Err(DecisionError::Expired) => {
            (store.get_approval(approval.id).await?, "This request expired before the decision.".to_owned(), None)
        }
        Err(DecisionError::NotFound) => {
            answer(adapter, press, Some("This request no longer exists.")).await;
            return Ok(ignored("unknown approval"));
        }
        Err(DecisionError::Store(err)) => return Err(err),
    };
    let reply = answer_or_notice(adapter, press, &answer_text).await;
    let agent = store.get_agent(&current.agent_id.to_string()).await?;
    let (text, buttons) = notice(&current, &agent.name, decider_name);
    if let Some(message_id) = press.message_id.as_deref().filter(|_| platform != Platform::WhatsApp) {
        let edited = OutboundMessage { buttons, ..OutboundMessage::text(press.chat.clone(), text) };
        if let Err(err) = adapter.edit(message_id, &edited).await {
            tracing::info!(approval_id = %current.id, error = %err, "editing the approval notice failed");
        }
    }
    let reply = match (platform, decider_name) {
        // WhatsApp cannot edit the notice: the chat learns the outcome from a new message.
        (Platform::WhatsApp, Some(name)) => outcome_line(&current, Some(name)),
        _ => reply,
    };
    Ok(routed(format!("approval {}", current.status), reply))
}

/// Acknowledges a press; failures are logged (the press stays recorded either way).
async fn answer(adapter: &dyn ChannelAdapter, press: &ButtonPress, text: Option<&str>) {
    if let Err(err) = adapter.answer_interaction(press, text).await {
        tracing::debug!(error = %err, "answering a button press failed");
    }
}

/// Answers a press with `text`; on WhatsApp, which has no interaction answers, returns the text to
/// queue as a notice instead.
async fn answer_or_notice(adapter: &dyn ChannelAdapter, press: &ButtonPress, text: &str) -> Option<String> {
    if adapter.platform() == Platform::WhatsApp {
        return Some(text.to_owned());
    }
    answer(adapter, press, Some(text)).await;
    None
}

fn notice_row(channel: &Channel, press: &ButtonPress, text: String) -> NewOutbox {
    NewOutbox {
        channel_id: Some(channel.id),
        target: crate::router::reply_target(&press.chat, None),
        payload: json!({"kind": "notice", "text": text}),
        idempotency_key: format!("press:{}:{}:reply", channel.id, press.platform_interaction_id),
        job_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn button_payloads_fit_telegram_and_round_trip() {
        let id = Uuid::now_v7();
        for action in [Action::Approve, Action::Reject, Action::Details] {
            let data = button_data(action, id);
            assert!(data.len() <= 64, "{data}");
            assert_eq!(parse_button(&data), Some((action, id)));
        }
        assert_eq!(parse_button("apr:x:0"), None);
        assert_eq!(parse_button("a:1"), None);
        assert_eq!(parse_button(&format!("apr:a:{id}")), None, "only the 32-hex form");
    }
}
