//! The inbound pipeline (SPEC §8.6): a recorded inbound message → channel user → agent → access check →
//! session per (user, agent, chat) → chat job, with the reply queued in the outbox when the job ends.
//!
//! Each inbound row leaves `received` exactly once: the guarded update that marks it `routed` (or
//! `refused`/`ignored`) is in the same transaction as the job, the session message and any notice it
//! queues, so a replayed message, a second router (another process) or a crash mid-way never yields a
//! second job or a lost one. Notices (refusals, `/help`) go through the outbox like every reply.
//!
//! Sessions are keyed by chat: a user's session with an agent is per chat (`origin` names platform,
//! channel and chat), and commands only ever touch the sender's own session in that chat — a user in a
//! group can never continue, reset or stop another user's conversation.

use cortex_core::agent::{AgentStatus, HealthState};
use cortex_core::job::JobKind;
use cortex_core::role::Role;
use cortex_store::agents::Agent;
use cortex_store::channel_access::Binding;
use cortex_store::channels::{Channel, InboundOutcome, InboundRecord};
use cortex_store::jobs::NewJob;
use cortex_store::outbox::NewOutbox;
use cortex_store::{Store, StoreError, Tx};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::access::{self, Admission, Gate};
use crate::adapter::ChannelAdapter;
use crate::types::{ChatKind, ChatRef, Inbound, InboundEvent};

const HELP: &str = "Commands:\n/new — start a new conversation\n/stop — stop the current answer\n/pair CODE — redeem a pairing code\n/help — this list";
const NO_AGENT: &str = "No agent is assigned to this chat.";
const AGENT_UNAVAILABLE: &str = "This agent is not available right now.";

/// Where replies to a chat go: the outbox `target` of a channel reply.
pub fn reply_target(chat: &ChatRef, reply_to: Option<&str>) -> Value {
    json!({"chat": chat, "reply_to": reply_to})
}

/// Routes recorded inbound events of one channel.
pub struct Router {
    store: Store,
}

/// What routing decided before anything is written.
enum Decision {
    /// Create the chat job; `read_only`: the sender holds a `read` grant (read-only tools only).
    Job { agent: Box<Agent>, untrusted: bool, read_only: bool },
    /// Queue this notice and mark the row `refused`.
    Refuse { notice: Option<String>, key: String, detail: &'static str },
    /// Mark the row `ignored`, no reply.
    Ignore(&'static str),
    /// A command answered with a notice (the row is `routed`); `cancel` are the sender's own jobs to
    /// stop once it is recorded.
    Command { notice: String, cancel: Vec<Uuid> },
}

impl Router {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Routes every row of the channel still waiting; returns how many were handled. A row that fails
    /// for a reason other than the database is marked `failed` with the reason (never retried forever).
    pub async fn route_pending(&self, channel: &Channel, adapter: &dyn ChannelAdapter) -> Result<usize, StoreError> {
        let rows = self.store.unrouted_inbound(channel.id, 100).await?;
        let count = rows.len();
        for row in rows {
            let id = row.id;
            if let Err(err) = self.route(channel, adapter, row).await {
                if err.is_unavailable() {
                    return Err(err);
                }
                tracing::warn!(inbound_id = %id, error = %err, "routing an inbound message failed");
                let mut tx = self.store.begin().await?;
                let outcome = InboundOutcome { status: "failed", detail: Some(err.to_string()), ..Default::default() };
                tx.finish_inbound(id, &outcome).await?;
                tx.commit().await?;
            }
        }
        Ok(count)
    }

    async fn route(
        &self,
        channel: &Channel,
        adapter: &dyn ChannelAdapter,
        row: InboundRecord,
    ) -> Result<(), StoreError> {
        let event: InboundEvent = serde_json::from_value(row.event.clone())
            .map_err(|err| StoreError::Corrupt(format!("inbound_message.event: {err}")))?;
        let message = match event {
            InboundEvent::Message(message) => message,
            InboundEvent::Interaction(press) => {
                let result = crate::approvals::on_press(&self.store, channel, adapter, &press).await?;
                return self.finish(row.id, result.outcome, result.notice).await;
            }
        };
        if channel.inbound_policy == "allowlist"
            && !self.store.is_allowlisted(channel.id, &message.sender.platform_user_id).await?
        {
            let outcome = InboundOutcome {
                status: "refused",
                detail: Some("sender not on the channel allowlist".into()),
                ..Default::default()
            };
            // At most one "not authorised" notice per chat and hour.
            let hour = self.store.clock().now().timestamp() / 3600;
            let notice = NewOutbox {
                channel_id: Some(channel.id),
                target: reply_target(&message.chat, Some(&message.platform_message_id)),
                payload: json!({"kind": "notice", "text": access::NOT_ALLOWLISTED}),
                idempotency_key: format!("not-allowlisted:{}:{}:{hour}", channel.id, message.chat.chat_id),
                job_id: None,
            };
            return self.finish(row.id, outcome, Some(notice)).await;
        }
        let binding = self.store.resolve_binding(channel.id, &channel.channel_type, &message.chat.chat_id).await?;
        let agent_id = binding.as_ref().map(|binding| binding.agent_id).or(channel.default_agent_id);

        let mut tx = self.store.begin().await?;
        let (user_id, role) =
            tx.channel_user(channel.id, &message.sender.platform_user_id, &message.sender.display_name).await?;
        let decision = match agent_id {
            None => {
                // At most one such notice per chat and hour: the outbox key dedupes the rest.
                let hour = self.store.clock().now().timestamp() / 3600;
                Decision::Refuse {
                    notice: Some(NO_AGENT.into()),
                    key: format!("no-agent:{}:{}:{hour}", channel.id, message.chat.chat_id),
                    detail: "no agent is assigned to this chat",
                }
            }
            Some(agent_id) => {
                let sender = Sender { user_id, role };
                self.decide(&mut tx, channel, &message, binding.as_ref(), agent_id, sender, row.id).await?
            }
        };
        let reply = |text: String, key: String| NewOutbox {
            channel_id: Some(channel.id),
            target: reply_target(&message.chat, Some(&message.platform_message_id)),
            payload: json!({"kind": "notice", "text": text}),
            idempotency_key: key,
            job_id: None,
        };
        let agent_of =
            |agent: Option<Uuid>| InboundOutcome { user_id: Some(user_id), agent_id: agent, ..Default::default() };
        match decision {
            Decision::Ignore(detail) => {
                let outcome = InboundOutcome { status: "ignored", detail: Some(detail.into()), ..agent_of(agent_id) };
                self.finish_in(tx, row.id, outcome, None).await
            }
            Decision::Refuse { notice, key, detail } => {
                let outcome = InboundOutcome { status: "refused", detail: Some(detail.into()), ..agent_of(agent_id) };
                self.finish_in(tx, row.id, outcome, notice.map(|text| reply(text, key))).await
            }
            Decision::Command { notice, cancel } => {
                let outcome = InboundOutcome { status: "routed", detail: Some("command".into()), ..agent_of(agent_id) };
                self.finish_in(tx, row.id, outcome, Some(reply(notice, format!("inbound:{}:reply", row.id)))).await?;
                for job_id in cancel {
                    match cortex_jobs::cancel_job(&self.store, job_id).await {
                        Ok(_) | Err(cortex_jobs::OpError::InvalidState { .. }) => {}
                        Err(err) => tracing::warn!(%job_id, error = %err, "/stop could not cancel a job"),
                    }
                }
                Ok(())
            }
            Decision::Job { agent, untrusted, read_only } => {
                let origin = origin(channel, &message.chat);
                let session = match self.store.open_session_from(agent.id, user_id, &origin).await? {
                    Some(session) => session.id,
                    None => tx.insert_session(agent.id, Some(user_id), &origin).await?.id,
                };
                let surface =
                    json!({"surface": channel.channel_type, "channel_id": channel.id, "chat_id": message.chat.chat_id});
                let (job, _) = tx
                    .insert_job(&NewJob {
                        agent_id: agent.id,
                        session_id: Some(session),
                        kind: JobKind::Chat,
                        priority: 0,
                        payload: json!({
                            "surface": channel.channel_type,
                            "untrusted_input": untrusted,
                            "access": if read_only { "read" } else { "write" },
                            "reply": {
                                "channel_id": channel.id,
                                "target": reply_target(&message.chat, Some(&message.platform_message_id)),
                            },
                        }),
                        max_attempts: 3,
                        timeout_seconds: agent.resource_limits.timeout_seconds,
                        run_at: None,
                        parent_job_id: None,
                        delegation_depth: 0,
                        idempotency_key: None,
                        created_by: Some(format!("channel_user:{user_id}")),
                    })
                    .await?;
                let text = with_attachments(&message);
                tx.append_message(session, "user", &text, Some(job.id), Some(&surface)).await?;
                let outcome = InboundOutcome { status: "routed", job_id: Some(job.id), ..agent_of(Some(agent.id)) };
                self.finish_in(tx, row.id, outcome, None).await?;
                if let Err(err) = adapter.typing(&message.chat).await {
                    tracing::debug!(error = %err, "typing indicator failed");
                }
                Ok(())
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &self,
        tx: &mut Tx,
        channel: &Channel,
        message: &Inbound,
        binding: Option<&Binding>,
        agent_id: Uuid,
        sender: Sender,
        row_id: Uuid,
    ) -> Result<Decision, StoreError> {
        let user_id = sender.user_id;
        let agent = self.store.get_agent(&agent_id.to_string()).await?;
        let refuse = |notice: &str, detail: &'static str| Decision::Refuse {
            notice: Some(notice.into()),
            key: format!("inbound:{row_id}:reply"),
            detail,
        };
        if agent.status != AgentStatus::Active || agent.health_state == HealthState::Quarantined {
            return Ok(refuse(AGENT_UNAVAILABLE, "agent not active"));
        }
        // Groups: answer when addressed, unless the chat is bound with `respond_to: all`.
        let respond_to_all = binding.and_then(|binding| binding.respond_to.as_deref()) == Some("all");
        if message.chat.kind == ChatKind::Group && !message.is_mention && !respond_to_all {
            return Ok(Decision::Ignore("group message not addressed to the bot"));
        }
        let trusted = sender.role.includes(Role::Operator);
        let explicitly_bound = binding.is_some_and(|binding| binding.agent_id == agent.id);
        let gate = Gate { channel_id: channel.id, message, user_id, trusted, explicitly_bound };
        let read_only = match access::admit(tx, &self.store, &agent, &gate).await? {
            Admission::Admitted { read_only } => read_only,
            Admission::Paired(notice) => return Ok(Decision::Command { notice: notice.into(), cancel: Vec::new() }),
            Admission::Refused { notice, detail } => {
                return Ok(Decision::Refuse { notice, key: format!("inbound:{row_id}:reply"), detail });
            }
        };
        if let Some((notice, cancel)) = self.command(tx, channel, message, &agent, user_id).await? {
            return Ok(Decision::Command { notice, cancel });
        }
        Ok(Decision::Job { agent: Box::new(agent), untrusted: !trusted, read_only })
    }

    /// `/help`, `/new`, `/stop` (and Telegram's `/start`); `None` for anything else. They act only on the
    /// sender's own session in this chat.
    async fn command(
        &self,
        tx: &mut Tx,
        channel: &Channel,
        message: &Inbound,
        agent: &Agent,
        user_id: Uuid,
    ) -> Result<Option<(String, Vec<Uuid>)>, StoreError> {
        let Some(word) = message.text.split_whitespace().next().filter(|word| word.starts_with('/')) else {
            return Ok(None);
        };
        let command = word.split('@').next().unwrap_or(word).to_ascii_lowercase();
        let origin = origin(channel, &message.chat);
        let own_session = || self.store.open_session_from(agent.id, user_id, &origin);
        Ok(match command.as_str() {
            "/help" | "/start" => Some((HELP.to_owned(), Vec::new())),
            "/new" => {
                if let Some(session) = own_session().await? {
                    tx.close_session(session.id, false).await?;
                }
                Some(("Started a new conversation.".to_owned(), Vec::new()))
            }
            "/stop" => {
                let jobs = match own_session().await? {
                    Some(session) => self.store.unfinished_session_jobs(session.id).await?,
                    None => Vec::new(),
                };
                let notice = if jobs.is_empty() { "Nothing to stop." } else { "Stopping." };
                Some((notice.to_owned(), jobs))
            }
            _ => None,
        })
    }

    async fn finish(&self, id: Uuid, outcome: InboundOutcome, notice: Option<NewOutbox>) -> Result<(), StoreError> {
        let tx = self.store.begin().await?;
        self.finish_in(tx, id, outcome, notice).await
    }

    /// Marks the row and queues the notice; rolls everything back when another router got there first.
    async fn finish_in(
        &self,
        mut tx: Tx,
        id: Uuid,
        outcome: InboundOutcome,
        notice: Option<NewOutbox>,
    ) -> Result<(), StoreError> {
        if !tx.finish_inbound(id, &outcome).await? {
            return Ok(());
        }
        if let Some(notice) = notice {
            tx.enqueue_outbox(&notice).await?;
        }
        tx.commit().await
    }
}

/// Who sent a message, as the router sees them.
struct Sender {
    user_id: Uuid,
    role: Role,
}

/// The session origin of a chat: one conversation per (user, agent, chat).
fn origin(channel: &Channel, chat: &ChatRef) -> String {
    match &chat.thread_id {
        Some(thread) => format!("{}:{}:{}:{thread}", channel.channel_type, channel.id, chat.chat_id),
        None => format!("{}:{}:{}", channel.channel_type, channel.id, chat.chat_id),
    }
}

/// The message as the agent reads it: its text, then a note naming each attachment by reference.
fn with_attachments(message: &Inbound) -> String {
    let note = crate::types::attachments_note(&message.attachments);
    match (message.text.is_empty(), note.is_empty()) {
        (_, true) => message.text.clone(),
        (true, false) => note,
        (false, false) => format!("{}\n\n{note}", message.text),
    }
}
