//! The agentic loop as a job handler (SPEC §5.1): one run of one job attempt.
//!
//! A run loads the job, its agent, the current message and session history, and its checkpoint (or
//! rebuilds one from the tool-call ledger), then loops: inject queued steering → reserve budget → call the
//! model with streaming → final answer, or run the requested tools one by one through policy, approval
//! and the tool-call ledger → checkpoint → next turn. The last allowed turn offers no tools and asks
//! for a final answer.
//!
//! What leaves the loop early is a [`halt::Halt`] carrying the handler's [`Outcome`]: classified failures
//! (retried by the engine), `Suspended` after this run moved the job to `waiting_for_approval` in the
//! same transaction as its checkpoint, `Release` at a shutdown turn boundary. The handler never ends an
//! attempt itself; the engine records completions and failures.
//!
//! Submodules: `state` (the checkpoint), `ledger` (tool-call rows), `model_call` (budget, streaming,
//! failover, accounting), `deltas` (coalesced `llm.delta`), `tool_step` (the per-call policy pipeline and
//! execution), `approval_gate` (suspending for a human and resuming after the decision).

mod approval_gate;
mod deltas;
pub(crate) mod halt;
mod ledger;
mod model_call;
mod state;
mod tool_step;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use cortex_core::agent::{AgentStatus, ModelRef};
use cortex_core::checkpoint::{self, SealedCheckpoint};
use cortex_core::event::{Actor, EventType};
use cortex_core::job::{ErrorClass, JobError};
use cortex_jobs::{JobContext, JobHandler, Outcome, ResumePoint};
use cortex_llm::Message;
use cortex_memory::SearchQuery;
use cortex_store::agents::Agent;
use cortex_store::events::NewEvent;
use cortex_store::tool_calls::ToolCallRecord;
use cortex_store::{StoreError, Tx};
use cortex_tools::hygiene::wrap_untrusted;
use serde_json::{Value, json};
use tracing::Instrument;
use uuid::Uuid;

use self::halt::Halt;
use self::state::{FinalAnswer, Item, LoopState};
use crate::budget::BudgetPlan;
use crate::buffer::{BufferMeta, RecordType, SessionBuffer};
use crate::context;
use crate::runtime::Services;
use crate::tools::ToolSet;

/// The source label of a user message relayed from someone who is not an operator.
const UNTRUSTED_SENDER: &str = "chat:untrusted_sender";

/// Tool errors that fail a job (SPEC §5.1).
const TOOL_ERROR_LIMIT: u32 = 10;
/// Tool calls a job may make (SPEC §5.1).
const TOOL_CALL_LIMIT: u32 = 50;
/// Failed model attempts (retries, failovers) allowed per job attempt (SPEC §5.1).
const LLM_RETRY_LIMIT: u32 = 5;

/// The handler registered for `chat` and `task` jobs.
pub(crate) struct AgentHandler {
    services: Arc<Services>,
}

impl AgentHandler {
    pub(crate) fn new(services: Arc<Services>) -> AgentHandler {
        AgentHandler { services }
    }
}

#[async_trait]
impl JobHandler for AgentHandler {
    async fn run(&self, ctx: JobContext) -> Outcome {
        let span = tracing::info_span!("agent_run", job_id = %ctx.job.id, agent_id = %ctx.job.agent_id, attempt = ctx.job.attempt);
        async {
            let mut run = match Run::start(self.services.clone(), ctx).await {
                Ok(run) => run,
                Err(Halt(outcome)) => return redacted(&self.services, outcome).await,
            };
            let outcome = run.execute().await.unwrap_or_else(|Halt(outcome)| outcome);
            let outcome = redacted(&self.services, outcome).await;
            run.end(&outcome).await;
            outcome
        }
        .instrument(span)
        .await
    }
}

/// The outcome with every secret form removed from its result and error text (SPEC Appendix B): what the
/// engine stores becomes `GET /jobs/{id}`, events and channel failure notices.
async fn redacted(svc: &Services, outcome: Outcome) -> Outcome {
    let redactor = match svc.secrets.refresh().await {
        Ok(redactor) => redactor,
        Err(err) => {
            tracing::warn!(error = %err, "secret set not refreshed; redacting with the previous one");
            svc.secrets.current()
        }
    };
    match outcome {
        Outcome::Completed(result) => Outcome::Completed(redactor.apply_json(&result)),
        Outcome::Failed(mut error) => {
            error.message = redactor.apply(&error.message);
            Outcome::Failed(error)
        }
        other => other,
    }
}

/// Whether a final answer may already be in the session (a run resumed after it was stored).
enum Answer {
    /// Produced by this run, with the open transaction settling the call that produced it: the answer, the
    /// checkpoint holding it and that settlement are committed together, so it cannot be stored yet.
    New(Box<Tx>),
    /// Restored from a checkpoint: look before storing.
    MaybeStored,
}

/// Which per-agent rolling rate limit to check.
#[derive(Debug, Clone, Copy)]
enum RateKind {
    Llm,
    Tool,
}

/// Everything one run works with.
pub(super) struct Run {
    svc: Arc<Services>,
    ctx: JobContext,
    agent: Agent,
    session_id: Option<Uuid>,
    surface: &'static str,
    state: LoopState,
    tools: ToolSet,
    /// This job's tool calls by key.
    ledger: HashMap<String, ToolCallRecord>,
    /// Session history before the current message (untrimmed window).
    history: Vec<Message>,
    budget: BudgetPlan,
    /// The primary model then the declared fallbacks.
    candidates: Vec<ModelRef>,
    max_tokens: u32,
    buffer: SessionBuffer,
    /// Steering injected since the last model call, acknowledged when that call completes.
    unacknowledged: Vec<Uuid>,
    /// Recalled memories for this attempt (the framed block of the system text), if any.
    memories: Option<String>,
}

impl Run {
    /// Loads the job's world and its resume point; pre-flight failures end the run here.
    async fn start(svc: Arc<Services>, ctx: JobContext) -> Result<Run, Halt> {
        let store = svc.store.clone();
        let job = ctx.job.clone();
        let agent = match store.get_agent_by_id(job.agent_id).await {
            Ok(agent) => agent,
            Err(StoreError::NotFound { .. }) => {
                return Err(Halt::permanent("agent_not_found", "the job's agent no longer exists"));
            }
            Err(err) => return Err(err.into()),
        };
        if agent.status != AgentStatus::Active {
            return Err(Halt::permanent("agent_not_active", format!("agent `{}` is {}", agent.slug, agent.status)));
        }
        // Independent reads run together; each is small, together they are most of a run's start-up.
        let (synced, tools, conversation, records, resume) = tokio::join!(
            svc.providers.sync(),
            svc.tools.tool_set(&agent),
            conversation(&store, &job),
            store.tool_calls_of_job(job.id),
            ctx.resume_point(),
        );
        synced?;
        svc.secrets.refresh().await?;
        let (tools, (user_text, history), records) = (tools?, conversation?, records?);
        let memories = if agent.memory.enabled { recall(&svc, agent.id, &user_text).await } else { None };
        let user_text = if job.untrusted_input() { wrap_untrusted(UNTRUSTED_SENDER, &user_text) } else { user_text };
        let candidates = agent.model_config.candidates();
        if !candidates.iter().any(|candidate| svc.providers.has(&candidate.provider)) {
            let names: Vec<&str> = candidates.iter().map(|candidate| candidate.provider.as_str()).collect();
            return Err(Halt::permanent(
                "no_credential",
                format!("no credential is configured for provider(s) {}", names.join(", ")),
            ));
        }
        let mut state = match resume {
            ResumePoint::Checkpoint(value) => serde_json::from_value::<LoopState>(value).unwrap_or_else(|err| {
                tracing::warn!(error = %err, "checkpoint has an unknown layout; rebuilding from the ledger");
                LoopState::rebuild(job.attempt, &user_text, &records, |tool_ref| tools.wire_name_of(tool_ref))
            }),
            ResumePoint::Fresh | ResumePoint::Corrupt(_) if records.is_empty() => {
                LoopState::fresh(job.attempt, &user_text)
            }
            ResumePoint::Fresh | ResumePoint::Corrupt(_) => {
                LoopState::rebuild(job.attempt, &user_text, &records, |tool_ref| tools.wire_name_of(tool_ref))
            }
        };
        state.untrusted |= job.untrusted_input();
        state.begin_attempt(job.attempt);
        let now = ctx.clock.now();
        let budget = BudgetPlan::for_job(&store, &agent, &job, now).await?;
        let primary = candidates[0].clone();
        let max_tokens = context::max_tokens(agent.model_config.max_tokens, &primary.model);
        let meta = BufferMeta {
            job_id: job.id,
            agent_id: agent.id,
            session_id: job.session_id,
            attempt: job.attempt,
            provider: primary.provider.clone(),
            model: primary.model.clone(),
            started_at: now,
        };
        let buffer = SessionBuffer::open(&svc.data_dir, meta);
        let tool_refs: Vec<&str> = tools.tools.iter().map(|tool| tool.tool_ref()).collect();
        buffer.append(
            RecordType::SessionStart,
            now,
            json!({"attempt": job.attempt, "turn": state.turn, "resumed": state.turn > 0 || !records.is_empty(),
                       "tools": tool_refs, "unresolved_tools": tools.unresolved, "candidates": candidates}),
        );
        let surface = match job.kind {
            cortex_core::job::JobKind::Chat => "chat",
            _ => "task",
        };
        let ledger = records.into_iter().map(|record| (record.call_id.clone(), record)).collect();
        let mut run = Run {
            session_id: job.session_id,
            svc,
            ctx,
            agent,
            surface,
            state,
            tools,
            ledger,
            history,
            budget,
            candidates,
            max_tokens,
            buffer,
            unacknowledged: Vec::new(),
            memories,
        };
        run.warn_truncated_prompt().await?;
        Ok(run)
    }

    /// The loop; returns the outcome to report.
    async fn execute(&mut self) -> Result<Outcome, Halt> {
        if let Some(answer) = self.state.final_answer.clone() {
            return self.finish(answer, Answer::MaybeStored).await;
        }
        let pending = self.state.pending_calls();
        if !pending.is_empty() {
            self.run_tool_calls(pending).await?;
            self.checkpoint().await?;
        }
        let max_turns = self.agent.resource_limits.max_turns.max(1);
        loop {
            if self.ctx.shutdown.is_cancelled() {
                self.checkpoint().await?;
                return Ok(Outcome::Release);
            }
            let last_turn = self.state.turn + 1 >= max_turns;
            self.inject_steering().await?;
            let (completion, settlement) = self.call_model(last_turn).await?;
            if last_turn || completion.tool_calls.is_empty() {
                let stop_reason =
                    if last_turn { "max_turns".to_owned() } else { stop_reason_name(&completion.stop_reason) };
                let answer = FinalAnswer { text: completion.text, stop_reason };
                self.state.final_answer = Some(answer.clone());
                return self.finish(answer, Answer::New(Box::new(settlement))).await;
            }
            let calls = state::unique_call_ids(completion.tool_calls);
            self.state.transcript.push(Item::Assistant { text: completion.text, tool_calls: calls.clone() });
            self.commit_checkpoint(settlement).await?;
            self.run_tool_calls(calls).await?;
            self.checkpoint().await?;
        }
    }

    /// Stores the answer once (a resumed run finds it already stored) with the final checkpoint, and
    /// completes.
    async fn finish(&mut self, answer: FinalAnswer, known: Answer) -> Result<Outcome, Halt> {
        let store = &self.svc.store;
        let job_id = self.ctx.job.id;
        let (stored, mut tx) = match known {
            Answer::New(settlement) => (self.session_id.is_none(), *settlement),
            Answer::MaybeStored => {
                let stored = match self.session_id {
                    None => true,
                    Some(_) => store.message_of_job(job_id, "assistant").await?.is_some(),
                };
                (stored, store.begin().await?)
            }
        };
        let sealed = match self.sealed_checkpoint() {
            Ok(sealed) => sealed,
            Err(halt) => return Err(halt_keeping(tx, halt).await),
        };
        if !tx.save_checkpoint(job_id, self.ctx.worker_id, &sealed).await? {
            return Err(halt_keeping(tx, Halt::lost()).await);
        }
        if let Some(session_id) = self.session_id.filter(|_| !stored) {
            match tx.append_message(session_id, "assistant", &answer.text, Some(job_id), None).await {
                Ok(_) => {}
                Err(StoreError::StaleState { .. }) => tracing::warn!("session closed before the answer was stored"),
                Err(err) => return Err(err.into()),
            }
        }
        tx.expire_steering_of_job(job_id).await?;
        tx.commit().await?;
        let now = self.now();
        self.buffer.append(RecordType::Checkpoint, now, json!({"turn": self.state.turn, "crc": sealed.crc}));
        Ok(Outcome::Completed(json!({"response": answer.text, "stop_reason": answer.stop_reason})))
    }

    /// Closes the buffer with the outcome; undelivered steering expires when the job will not run again.
    async fn end(&mut self, outcome: &Outcome) {
        let now = self.now();
        let summary = match outcome {
            Outcome::Completed(result) => json!({"outcome": "completed", "stop_reason": result["stop_reason"]}),
            Outcome::Failed(error) => {
                self.buffer.append(
                    RecordType::Error,
                    now,
                    json!({"class": error.class, "code": error.code, "message": error.message}),
                );
                if !error.retryable {
                    let expired = async {
                        let mut tx = self.svc.store.begin().await?;
                        tx.expire_steering_of_job(self.ctx.job.id).await?;
                        tx.commit().await
                    };
                    if let Err(err) = expired.await {
                        tracing::warn!(error = %err, "could not expire steering of a failed job");
                    }
                }
                json!({"outcome": "failed", "code": error.code})
            }
            Outcome::Suspended => json!({"outcome": "suspended"}),
            Outcome::Release => json!({"outcome": "released"}),
        };
        self.buffer.append(RecordType::SessionEnd, now, summary);
        self.buffer.close().await;
    }

    fn now(&self) -> cortex_core::Timestamp {
        self.ctx.clock.now()
    }

    /// An event of this job, attributed to the agent.
    fn event(&self, event_type: EventType, payload: Value) -> NewEvent {
        NewEvent {
            session_id: self.session_id,
            actor: Actor::Agent,
            ..NewEvent::new(self.agent.id, Some(self.ctx.job.id), event_type, payload)
        }
    }

    /// Writes events in their own transaction.
    async fn emit(&self, events: Vec<NewEvent>) -> Result<(), Halt> {
        let mut tx = self.svc.store.begin().await?;
        for event in events {
            tx.emit(event);
        }
        tx.commit().await?;
        Ok(())
    }

    /// The state as a sealed checkpoint.
    fn sealed_checkpoint(&self) -> Result<SealedCheckpoint, Halt> {
        checkpoint::seal(&self.state.checkpoint_value(&self.ledger))
            .map_err(|err| Halt::permanent("checkpoint_too_large", err.to_string()))
    }

    /// Saves the state (turn boundary, SPEC §4.8) and refreshes the job's heartbeat.
    async fn checkpoint(&mut self) -> Result<(), Halt> {
        let tx = self.svc.store.begin().await?;
        self.commit_checkpoint(tx).await
    }

    /// Saves the state in `tx` and commits it. `tx` may already hold the settlement of the model call
    /// that produced this state: then the turn commits once, and a crash before that commit leaves neither
    /// (as a crash before a separate settlement's commit did: the call is not charged and the turn runs
    /// again). When the state cannot be saved, what `tx` holds is still committed.
    async fn commit_checkpoint(&mut self, mut tx: Tx) -> Result<(), Halt> {
        let sealed = match self.sealed_checkpoint() {
            Ok(sealed) => sealed,
            Err(halt) => return Err(halt_keeping(tx, halt).await),
        };
        if !tx.save_checkpoint(self.ctx.job.id, self.ctx.worker_id, &sealed).await? {
            return Err(halt_keeping(tx, Halt::lost()).await);
        }
        tx.emit(self.event(
            EventType::Checkpoint,
            json!({"turn": self.state.turn, "crc": sealed.crc, "bytes": sealed.json.len()}),
        ));
        tx.commit().await?;
        let now = self.now();
        self.buffer.append(RecordType::Checkpoint, now, json!({"turn": self.state.turn, "crc": sealed.crc}));
        Ok(())
    }

    /// Moves queued steering into the transcript before the next model call, durably (SPEC §5.6).
    async fn inject_steering(&mut self) -> Result<(), Halt> {
        let turn = self.state.turn + 1;
        if !self.svc.store.has_queued_steering(self.agent.id, self.ctx.job.id).await? {
            return Ok(());
        }
        let mut tx = self.svc.store.begin().await?;
        let taken = tx.take_queued_steering(self.agent.id, self.ctx.job.id, turn).await?;
        if taken.is_empty() {
            return Ok(());
        }
        for steering in &taken {
            self.state.transcript.push(Item::Steering { id: steering.id, text: steering.instruction.clone() });
            self.state.steering_ids.push(steering.id);
            self.unacknowledged.push(steering.id);
            tx.emit(self.event(
                EventType::SteerInjected,
                json!({"steering_id": steering.id, "priority": steering.priority, "turn": turn}),
            ));
        }
        let sealed = self.sealed_checkpoint()?;
        if !tx.save_checkpoint(self.ctx.job.id, self.ctx.worker_id, &sealed).await? {
            return Err(Halt::lost());
        }
        tx.commit().await?;
        let now = self.now();
        for steering in taken {
            self.buffer
                .append(
                    RecordType::Steering,
                    now,
                    json!({"steering_id": steering.id, "priority": steering.priority, "instruction": steering.instruction, "turn": turn}),
                );
        }
        Ok(())
    }

    /// Emits the system-prompt truncation warning once per job (SPEC §5.4).
    async fn warn_truncated_prompt(&mut self) -> Result<(), Halt> {
        if self.state.prompt_warned || !context::capped_system_prompt(&self.agent.system_prompt).1 {
            return Ok(());
        }
        self.state.prompt_warned = true;
        self.emit(vec![self.event(
            EventType::Error,
            json!({"severity": "warning", "code": "system_prompt_truncated",
                   "message": format!("the system prompt is longer than {} characters and was truncated", context::SYSTEM_PROMPT_CAP)}),
        )])
        .await
    }

    /// Fails with class `resource` when the agent's optional rolling rate limit is used up (SPEC §5.1).
    async fn check_agent_rate(&self, kind: RateKind) -> Result<(), Halt> {
        let Some(rate) = &self.agent.resource_limits.rate else { return Ok(()) };
        let limit = match kind {
            RateKind::Llm => rate.llm_calls,
            RateKind::Tool => rate.tool_calls,
        };
        let Some(limit) = limit else { return Ok(()) };
        let window = chrono::Duration::seconds(i64::from(rate.window_seconds));
        let since = self.now() - window;
        let store = &self.svc.store;
        let used = match kind {
            RateKind::Llm => store.count_agent_llm_calls_since(self.agent.id, since).await?,
            RateKind::Tool => store.count_agent_tool_calls_since(self.agent.id, since).await?,
        };
        if used < i64::from(limit) {
            return Ok(());
        }
        Err(Halt::fail(
            JobError::new(
                ErrorClass::Resource,
                "agent_rate_limited",
                format!(
                    "agent `{}` used {used} of {limit} {kind:?} calls allowed per {} s",
                    self.agent.slug, rate.window_seconds
                ),
            )
            .with_retry_after(Some(u64::from(rate.window_seconds))),
        ))
    }
}

/// Commits what `tx` holds (a served call's settlement: the provider was paid for the call whatever
/// happens next) and returns `halt`, the reason the run stops.
async fn halt_keeping(tx: Tx, halt: Halt) -> Halt {
    match tx.commit().await {
        Ok(()) => halt,
        Err(err) => err.into(),
    }
}

/// The message a job answers and the session history before it (none for task jobs).
async fn conversation(
    store: &cortex_store::Store,
    job: &cortex_store::jobs::Job,
) -> Result<(String, Vec<Message>), Halt> {
    match job.session_id {
        Some(session_id) => {
            let Some(message) = store.message_of_job(job.id, "user").await? else {
                return Err(Halt::permanent("no_user_message", "the chat job has no user message"));
            };
            let window = store.conversation_before(session_id, message.seq, context::HISTORY_MESSAGES).await?;
            Ok((message.content, context::history_messages(&window)))
        }
        None => match job.prompt() {
            Some(prompt) => Ok((prompt.to_owned(), Vec::new())),
            None => Err(Halt::permanent("missing_prompt", "the task job has no payload.prompt")),
        },
    }
}

/// The memory block of a turn (SPEC §5.4, §9.6): the agent's best memories for the user's message that
/// score at least 0.35, within the block budget. A failing search never fails the turn; returning the
/// memories to the model counts as a recall, recorded in the background.
async fn recall(svc: &Services, agent_id: Uuid, text: &str) -> Option<String> {
    let query =
        SearchQuery { text: text.to_owned(), limit: context::MEMORY_COUNT, types: Vec::new(), tags: Vec::new() };
    let results = match svc.memory.search(agent_id, &query).await {
        Ok(results) => results,
        Err(err) => {
            tracing::warn!(error = %err, "memories not recalled for this turn");
            return None;
        }
    };
    let kept: Vec<_> = results.items.into_iter().filter(|item| item.score >= context::MEMORY_MIN_SCORE).collect();
    let lines: Vec<(String, String)> =
        kept.iter().map(|item| (item.record.memory_type.clone(), item.record.content.clone())).collect();
    let (block, count) = context::memory_block(&lines)?;
    svc.memory.recalled(agent_id, kept.iter().take(count).map(|item| item.record.id).collect());
    Some(block)
}

/// The `stop_reason` of a final answer.
fn stop_reason_name(reason: &cortex_llm::StopReason) -> String {
    match reason {
        cortex_llm::StopReason::EndTurn | cortex_llm::StopReason::ToolUse => "end_turn".to_owned(),
        cortex_llm::StopReason::MaxTokens => "max_tokens".to_owned(),
        cortex_llm::StopReason::Other(other) => other.clone(),
    }
}
