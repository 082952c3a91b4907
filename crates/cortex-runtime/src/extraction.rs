//! The `memory_extract` job handler (SPEC §9.2–§9.3): turns a stretch of a session into memories.
//!
//! A run reads the session's messages after `extracted_through_seq` (at most [`MAX_MESSAGES`]; the rest
//! gets a follow-up job), finds up to 20 related existing memories, asks the extraction model for facts
//! under the contract of [`cortex_memory::extract`] (one repair request when the answer does not parse,
//! then a `transient` failure), checkpoints the parsed facts, files them (low confidence dropped,
//! duplicates skipped, near matches superseded, instruction-like text refused) and advances the session's
//! mark in the same transaction that re-plans its next extraction.
//!
//! It is an ordinary job: the engine retries it, the agent's budgets are reserved and settled around the
//! model call, and the cost lands on the job, the agent and the credential like any turn. A run that stops
//! after the model answered resumes from the checkpoint without calling the model again; a crash between
//! filing and advancing the mark files the same facts again, which the duplicate rule absorbs (filing is at
//! least once, exact repeats are never stored twice).

use std::sync::Arc;

use async_trait::async_trait;
use cortex_core::agent::{AgentStatus, ModelRef};
use cortex_core::event::{Actor, EventType};
use cortex_core::job::{ErrorClass, JobError};
use cortex_jobs::{CheckpointFailure, JobContext, JobHandler, Outcome, ResumePoint};
use cortex_llm::{ChatRequest, Completion, Message, ModelPrice, NoopObserver, StreamEvent};
use cortex_memory::extract::{self, Fact, Provenance, TranscriptLine};
use cortex_memory::{MemoryError, SearchQuery};
use cortex_store::StoreError;
use cortex_store::agents::Agent;
use cortex_store::events::NewEvent;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::Instrument;
use uuid::Uuid;

use crate::agent_loop::halt::Halt;
use crate::budget::{self, BudgetPlan, Charge, ChargeTarget};
use crate::runtime::Services;

/// Messages one run extracts; a longer backlog is left to the follow-up job the run queues.
pub(crate) const MAX_MESSAGES: usize = 200;
/// Output allowance of an extraction call.
const MAX_TOKENS: u32 = 4_096;
/// Characters of user text used to look up related memories.
const RELATED_QUERY_CHARS: usize = 2_000;

/// The checkpoint: what the model answered for which messages.
#[derive(Debug, Serialize, Deserialize)]
struct Answered {
    through_seq: i64,
    messages: usize,
    facts: Vec<Fact>,
}

/// The handler registered for `memory_extract` jobs.
pub(crate) struct ExtractionHandler {
    svc: Arc<Services>,
}

impl ExtractionHandler {
    pub(crate) fn new(svc: Arc<Services>) -> Self {
        Self { svc }
    }
}

#[async_trait]
impl JobHandler for ExtractionHandler {
    async fn run(&self, ctx: JobContext) -> Outcome {
        let span = tracing::info_span!("memory_extract", job_id = %ctx.job.id, agent_id = %ctx.job.agent_id);
        async {
            match self.extract(&ctx).await {
                Ok(result) => Outcome::Completed(result),
                Err(Halt(outcome)) => outcome,
            }
        }
        .instrument(span)
        .await
    }
}

impl ExtractionHandler {
    async fn extract(&self, ctx: &JobContext) -> Result<Value, Halt> {
        let store = &self.svc.store;
        let job = &ctx.job;
        let session_id =
            job.payload.get("session_id").and_then(Value::as_str).and_then(|id| id.parse::<Uuid>().ok()).ok_or_else(
                || Halt::permanent("invalid_payload", "a memory_extract job names its session in payload.session_id"),
            )?;
        let state = match store.extraction_state(session_id).await {
            Ok(state) => state,
            Err(StoreError::NotFound { .. }) => {
                return Ok(json!({"session_id": session_id, "skipped": "session_deleted"}));
            }
            Err(err) => return Err(err.into()),
        };
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
        if !agent.memory.extracts() {
            // Queued before the agent's memory switches were turned off: free the session's slot untouched.
            self.finish(session_id, job.id, state.extracted_through_seq).await?;
            return Ok(json!({"session_id": session_id, "skipped": "memory_switched_off"}));
        }
        let answered = match ctx.resume_point().await {
            ResumePoint::Checkpoint(value) => serde_json::from_value::<Answered>(value).ok(),
            ResumePoint::Fresh | ResumePoint::Corrupt(_) => None,
        };
        let answered = match answered {
            Some(answered) => answered,
            None => {
                let messages = store.list_messages(session_id, state.extracted_through_seq, MAX_MESSAGES).await?;
                let Some(last) = messages.last() else {
                    self.finish(session_id, job.id, state.extracted_through_seq).await?;
                    return Ok(
                        json!({"session_id": session_id, "messages": 0, "through_seq": state.extracted_through_seq}),
                    );
                };
                let through_seq = last.seq;
                let lines: Vec<TranscriptLine> = messages
                    .iter()
                    .map(|message| TranscriptLine {
                        seq: message.seq,
                        time: message.created_at,
                        role: message.role.clone(),
                        content: message.content.clone(),
                    })
                    .collect();
                let related = self.related(agent.id, &lines).await;
                let facts = self.ask_model(ctx, &agent, &extract::prompt(&lines, &related)).await?;
                let answered = Answered { through_seq, messages: lines.len(), facts };
                let value = serde_json::to_value(&answered)
                    .map_err(|err| Halt::permanent("checkpoint_invalid", err.to_string()))?;
                ctx.checkpoint(&value).await.map_err(|err| match err {
                    CheckpointFailure::LostOwnership => Halt::lost(),
                    CheckpointFailure::Store(err) => err.into(),
                    CheckpointFailure::Invalid(err) => Halt::permanent("checkpoint_too_large", err.to_string()),
                })?;
                answered
            }
        };
        let from = Provenance { agent_id: agent.id, session_id: Some(session_id), job_id: Some(job.id) };
        let summary = self.svc.memory.apply_facts(from, answered.facts).await.map_err(|err| match err {
            MemoryError::Store(err) => Halt::from(err),
            other => Halt::fail(JobError::new(ErrorClass::Transient, "memory_unavailable", other.to_string())),
        })?;
        self.finish(session_id, job.id, answered.through_seq).await?;
        let mut result = serde_json::to_value(&summary).unwrap_or_default();
        if let Value::Object(fields) = &mut result {
            fields.insert("session_id".into(), json!(session_id));
            fields.insert("messages".into(), json!(answered.messages));
            fields.insert("through_seq".into(), json!(answered.through_seq));
        }
        Ok(result)
    }

    /// Advances the session's mark and queues its next extraction if messages are waiting.
    async fn finish(&self, session_id: Uuid, job_id: Uuid, through_seq: i64) -> Result<(), Halt> {
        let mut tx = self.svc.store.begin().await?;
        tx.finish_extraction(session_id, job_id, through_seq).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Up to 20 existing memories related to what the users said (ids and content, for `supersedes`).
    async fn related(&self, agent_id: Uuid, lines: &[TranscriptLine]) -> Vec<(Uuid, String)> {
        let mut text = String::new();
        for line in lines.iter().filter(|line| line.role == "user") {
            if text.chars().count() >= RELATED_QUERY_CHARS {
                break;
            }
            text.push_str(&line.content);
            text.push('\n');
        }
        let text: String = text.chars().take(RELATED_QUERY_CHARS).collect();
        let query = SearchQuery { text, limit: extract::RELATED_MEMORIES, types: Vec::new(), tags: Vec::new() };
        match self.svc.memory.search(agent_id, &query).await {
            Ok(results) => results.items.into_iter().map(|item| (item.record.id, item.record.content)).collect(),
            Err(err) => {
                tracing::warn!(error = %err, "extraction runs without related memories");
                Vec::new()
            }
        }
    }

    /// Asks for the facts; one repair request when the answer does not parse.
    async fn ask_model(&self, ctx: &JobContext, agent: &Agent, prompt: &str) -> Result<Vec<Fact>, Halt> {
        let candidates = match &agent.model_config.extraction_model {
            Some(model) => {
                let primary = agent.model_config.candidates().swap_remove(0);
                vec![ModelRef { provider: primary.provider, model: model.clone() }]
            }
            None => agent.model_config.candidates(),
        };
        self.svc.providers.sync().await?;
        if !candidates.iter().any(|candidate| self.svc.providers.has(&candidate.provider)) {
            let names: Vec<&str> = candidates.iter().map(|candidate| candidate.provider.as_str()).collect();
            return Err(Halt::permanent(
                "no_credential",
                format!("no credential is configured for provider(s) {}", names.join(", ")),
            ));
        }
        let budget = BudgetPlan::for_job(&self.svc.store, agent, &ctx.job, ctx.clock.now()).await?;
        let mut messages = vec![Message::User { text: prompt.to_owned() }];
        for turn in 1..=2 {
            let request = ChatRequest {
                model: candidates[0].model.clone(),
                system: Some(extract::SYSTEM_PROMPT.to_owned()),
                messages: messages.clone(),
                tools: Vec::new(),
                max_tokens: crate::context::max_tokens(Some(MAX_TOKENS), &candidates[0].model),
                temperature: None,
                stream: true,
            };
            let completion = self.call(ctx, agent, &budget, &candidates, request, turn).await?;
            match extract::parse(&completion.text) {
                Ok(facts) => return Ok(facts),
                Err(problem) if turn == 1 => {
                    tracing::info!(problem, "extraction answer unusable; asking once more");
                    messages.push(Message::Assistant { text: completion.text, tool_calls: Vec::new() });
                    messages.push(Message::User {
                        text: format!(
                            "That answer cannot be used ({problem}). Answer again with the JSON object only, exactly \
                             as specified."
                        ),
                    });
                }
                Err(problem) => {
                    return Err(Halt::fail(JobError::new(
                        ErrorClass::Transient,
                        "extraction_unparseable",
                        format!("the extraction model's answer did not follow the contract twice: {problem}"),
                    )));
                }
            }
        }
        Err(Halt::permanent("extraction_unparseable", "no usable answer"))
    }

    /// One model call under the job's budgets, charged like a turn of the agent loop.
    async fn call(
        &self,
        ctx: &JobContext,
        agent: &Agent,
        budget: &BudgetPlan,
        candidates: &[ModelRef],
        request: ChatRequest,
        turn: u32,
    ) -> Result<Completion, Halt> {
        let store = &self.svc.store;
        let event = |event_type: EventType, payload: Value| NewEvent {
            actor: Actor::System,
            ..NewEvent::new(agent.id, Some(ctx.job.id), event_type, payload)
        };
        let prices: Vec<Option<ModelPrice>> =
            candidates.iter().map(|candidate| self.svc.providers.price(candidate)).collect();
        if budget.limits_cost() && prices.iter().all(Option::is_none) {
            return Err(Halt::permanent(
                "unpriced_model",
                "a cost budget applies but the extraction model has no price",
            ));
        }
        let (tokens, usd) = budget::worst_case(request.estimated_input_tokens(), request.max_tokens, &prices);
        let mut tx = store.begin().await?;
        let reservation = match tx.reserve_budget(ctx.job.id, &budget.lines, tokens, usd).await? {
            Ok(reservation) => reservation,
            Err(refusal) => return Err(Halt::fail(budget::refusal_error(&refusal))),
        };
        tx.emit(event(
            EventType::LlmRequest,
            json!({"turn": turn, "purpose": "memory_extract", "candidates": candidates, "messages": request.messages.len(),
                   "max_tokens": request.max_tokens, "reserved_tokens": tokens, "reserved_usd": usd}),
        ));
        tx.commit().await?;
        let mut ignore = |_: StreamEvent| {};
        let served = match self.svc.providers.failover.complete(candidates, request, &mut ignore, &NoopObserver).await {
            Ok(served) => served,
            Err(err) => {
                let mut tx = store.begin().await?;
                tx.settle_budget(reservation, 0, 0.0).await?;
                tx.commit().await?;
                return Err(Halt::fail(err.to_job_error()));
            }
        };
        let serving = ModelRef { provider: served.provider.clone(), model: served.model.clone() };
        let charge = Charge {
            turn,
            provider: Some(served.provider.clone()),
            model: Some(served.model.clone()),
            usage: served.completion.usage,
            price: self.svc.providers.price(&serving),
            aborted: false,
        };
        let mut tx = store.begin().await?;
        let target = ChargeTarget { job_id: ctx.job.id, session_id: None, agent_slug: &agent.slug };
        budget::charge_call(&mut tx, target, reservation, &charge, &event).await?;
        tx.emit(event(
            EventType::LlmMessage,
            json!({"turn": turn, "purpose": "memory_extract", "text": served.completion.text,
                   "provider": served.provider, "model": served.model}),
        ));
        tx.commit().await?;
        Ok(served.completion)
    }
}
