//! One model call of the loop (SPEC §5.1 b, §5.3–§5.5, §5.8): pick the candidates (sticky within the
//! attempt; unpriced ones dropped when a cost budget applies), assemble the request, reserve its worst case
//! on every budget, stream it through the failover client while deltas are coalesced into events, then in
//! **one** transaction settle the reservation to the actual usage and add usage and cost to the job, the
//! session and the ledger, with `llm.message`/`llm.usage`. That transaction is handed back open: the loop
//! commits it with the checkpoint or final answer the call led to, so a turn commits once after its call.
//!
//! An urgent steering instruction aborts the call in flight; the turn is re-issued with the instruction.

use std::sync::{Arc, Mutex, PoisonError};

use cortex_core::agent::ModelRef;
use cortex_core::breaker::BreakerTransition;
use cortex_core::event::{Actor, EventType};
use cortex_core::job::{ErrorClass, JobError};
use cortex_llm::{
    ChatRequest, Completion, FailoverObserver, LlmError, Message, ModelPrice, Served, StreamEvent, Usage,
};
use cortex_store::events::NewEvent;
use cortex_store::{Notification, Store, Tx};
use serde_json::json;
use tokio::sync::broadcast;
use tracing::Instrument;
use uuid::Uuid;

use super::deltas::{self, DeltaSink};
use super::halt::Halt;
use super::state::flatten_tool_messages;
use super::{LLM_RETRY_LIMIT, RateKind, Run};
use crate::budget::{self, Charge};
use crate::buffer::RecordType;
use crate::context::{self, Disclosure};
use crate::providers::LLM_KIND;

/// Appended to the last allowed turn's request (SPEC §5.1 e).
const FINAL_TURN_NOTE: &str = "[Runtime] This is the last turn of this job: tools are no longer available. Reply now \
     with your final answer to the user, based on what you have so far.";

/// What the failover client reported besides its result.
#[derive(Default)]
struct CallObserver {
    seen: Mutex<Observed>,
}

#[derive(Default)]
struct Observed {
    failed_attempts: u32,
    auth_failures: Vec<(String, String, String)>,
    transitions: Vec<(String, String, BreakerTransition)>,
}

impl CallObserver {
    fn take(&self) -> Observed {
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl FailoverObserver for CallObserver {
    fn breaker_transition(&self, provider: &str, model: &str, t: BreakerTransition) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.transitions.push((provider.to_owned(), model.to_owned(), t));
    }

    fn attempt_failed(&self, provider: &str, model: &str, err: &LlmError) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.failed_attempts += 1;
        if matches!(err, LlmError::Auth { .. }) {
            seen.auth_failures.push((provider.to_owned(), model.to_owned(), err.to_string()));
        }
    }
}

/// How a streamed call ended.
enum Called {
    /// With the streamed text not yet stored as a delta.
    Served(Served, Option<String>),
    Failed(LlmError),
    /// An urgent steering instruction arrived: the call was abandoned.
    Steered,
}

impl Run {
    /// Runs turn `state.turn + 1` against the model and returns its answer with the open transaction that
    /// settles it: the caller adds the checkpoint (or the final answer) the answer leads to and commits
    /// both at once, one transaction per turn fewer (see [`Run::commit_checkpoint`]).
    pub(super) async fn call_model(&mut self, last_turn: bool) -> Result<(Completion, Tx), Halt> {
        self.check_agent_rate(RateKind::Llm).await?;
        if self.state.totals.llm_retries >= LLM_RETRY_LIMIT {
            return Err(Halt::fail(JobError::new(
                ErrorClass::Transient,
                "llm_retry_limit",
                format!(
                    "{} model attempts failed in this attempt; retrying the job later",
                    self.state.totals.llm_retries
                ),
            )));
        }
        let turn = self.state.turn + 1;
        loop {
            let candidates = self.turn_candidates()?;
            let request = self.build_request(last_turn, &candidates[0])?;
            let prices: Vec<Option<ModelPrice>> = candidates.iter().map(|c| self.svc.providers.price(c)).collect();
            let estimated_input = request.estimated_input_tokens();
            let (tokens, usd) = budget::worst_case(estimated_input, request.max_tokens, &prices);
            let mut tx = self.svc.store.begin().await?;
            let reservation = match tx.reserve_budget(self.ctx.job.id, &self.budget.lines, tokens, usd).await? {
                Ok(reservation) => reservation,
                Err(refusal) => return Err(Halt::fail(budget::refusal_error(&refusal))),
            };
            tx.emit(self.event(
                EventType::LlmRequest,
                json!({"turn": turn, "candidates": candidates, "messages": request.messages.len(),
                       "tools": request.tools.iter().map(|tool| &tool.name).collect::<Vec<_>>(),
                       "max_tokens": request.max_tokens, "reserved_tokens": tokens, "reserved_usd": usd}),
            ));
            tx.commit().await?;
            let now = self.now();
            self.buffer.append(RecordType::LlmRequest, now, json!({"turn": turn, "request": request}));

            let observer = Arc::new(CallObserver::default());
            let span =
                tracing::info_span!("llm.call", turn, provider = %candidates[0].provider, model = %candidates[0].model);
            let called = self.stream(turn, &candidates, request, observer.clone()).instrument(span).await;
            let observed = observer.take();
            self.state.totals.llm_retries += observed.failed_attempts;
            self.record_observations(&observed).await?;
            match called {
                Called::Served(served, unflushed) => {
                    return self.settle_served(turn, reservation, served, unflushed).await;
                }
                Called::Failed(err) => {
                    let mut tx = self.svc.store.begin().await?;
                    tx.settle_budget(reservation, 0, 0.0).await?;
                    tx.commit().await?;
                    return Err(Halt::fail(err.to_job_error()));
                }
                Called::Steered => {
                    // The provider saw the input; charge it, then re-issue the turn with the instruction.
                    let usage =
                        Usage { tokens_in: estimated_input, tokens_out: 0, cache_read_tokens: 0, estimated: true };
                    let price = prices
                        .iter()
                        .flatten()
                        .copied()
                        .reduce(|a, b| if b.input_per_mtok > a.input_per_mtok { b } else { a });
                    let charge = Charge { turn, provider: None, model: None, usage, price, aborted: true };
                    let mut tx = self.svc.store.begin().await?;
                    self.charge(&mut tx, reservation, &charge).await?;
                    tx.emit(self.event(EventType::LlmDelta, json!({"turn": turn, "reset": true})));
                    tx.commit().await?;
                    self.inject_steering().await?;
                }
            }
        }
    }

    /// The candidates of this turn: from the sticky position on; unpriced ones dropped under a cost budget.
    fn turn_candidates(&self) -> Result<Vec<ModelRef>, Halt> {
        let start = self.state.candidate_index.min(self.candidates.len().saturating_sub(1));
        let candidates: Vec<ModelRef> = self.candidates[start..].to_vec();
        if !self.budget.limits_cost() {
            return Ok(candidates);
        }
        let priced: Vec<ModelRef> =
            candidates.iter().filter(|candidate| self.svc.providers.price(candidate).is_some()).cloned().collect();
        if priced.is_empty() {
            let names: Vec<String> = candidates.iter().map(|c| format!("{}/{}", c.provider, c.model)).collect();
            return Err(Halt::permanent(
                "unpriced_model",
                format!("a cost budget applies but {} has no price; set one for the provider", names.join(", ")),
            ));
        }
        Ok(priced)
    }

    /// Context assembly (SPEC §5.4) for the next call.
    fn build_request(&self, last_turn: bool, primary: &ModelRef) -> Result<ChatRequest, Halt> {
        let (tools, refs) = if last_turn {
            (Vec::new(), Vec::new())
        } else {
            (self.tools.specs(), self.tools.tools.iter().map(|tool| tool.tool_ref().to_owned()).collect())
        };
        let disclosure = Disclosure {
            tools: &refs,
            now: self.now(),
            surface: self.surface,
            web_search: refs.iter().any(|tool_ref| tool_ref == "web_search"),
            memory: refs.iter().any(|tool_ref| tool_ref.starts_with("memory_")),
        }
        .render();
        let system = context::system_text(
            &context::capped_system_prompt(&self.agent.system_prompt).0,
            &disclosure,
            self.memories.as_deref(),
        );
        let mut messages = self.state.messages(&self.ledger);
        if last_turn {
            messages = flatten_tool_messages(messages);
            messages.push(Message::User { text: FINAL_TURN_NOTE.to_owned() });
        }
        let fixed = system.chars().count()
            + context::tools_chars(&tools)
            + messages.iter().map(context::message_chars).sum::<usize>();
        let budget = context::budget_chars(&primary.model, self.max_tokens);
        if fixed > budget {
            return Err(Halt::permanent(
                "context_budget_exceeded",
                format!(
                    "the system prompt, tools and this job's messages need {fixed} characters; `{}` allows {budget}",
                    primary.model
                ),
            ));
        }
        let mut all = context::trim_history(&self.history, budget - fixed).to_vec();
        all.extend(messages);
        Ok(ChatRequest {
            model: primary.model.clone(),
            system: Some(system),
            messages: all,
            tools,
            max_tokens: self.max_tokens,
            temperature: self.agent.model_config.temperature,
            stream: true,
        })
    }

    /// Streams the call through the failover client, forwarding deltas, until it ends or urgent steering
    /// arrives.
    async fn stream(
        &self,
        turn: u32,
        candidates: &[ModelRef],
        request: ChatRequest,
        observer: Arc<CallObserver>,
    ) -> Called {
        let store = self.svc.store.clone();
        let notifications = store.subscribe();
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let failover = self.svc.providers.failover.clone();
        let candidates = candidates.to_vec();
        let call = async move {
            let mut forward = move |event: StreamEvent| {
                let _ = sender.send(event);
            };
            failover.complete(&candidates, request, &mut forward, observer.as_ref()).await
        };
        let sink = DeltaSink {
            store: store.clone(),
            agent_id: self.agent.id,
            job_id: self.ctx.job.id,
            session_id: self.session_id,
            turn,
            redactor: self.svc.secrets.current().stream(),
        };
        let both = async { tokio::join!(call, deltas::forward(sink, receiver)) };
        tokio::select! {
            (result, unflushed) = both => match result {
                Ok(served) => Called::Served(served, unflushed),
                Err(err) => Called::Failed(err),
            },
            () = urgent_steering(store, notifications, self.agent.id, self.ctx.job.id) => Called::Steered,
        }
    }

    /// Records what the failover client saw: refused credentials (marked `error`, with an operator notice)
    /// and breaker state changes.
    async fn record_observations(&self, observed: &Observed) -> Result<(), Halt> {
        if observed.auth_failures.is_empty() && observed.transitions.is_empty() {
            return Ok(());
        }
        let redactor = self.svc.secrets.current();
        let mut tx = self.svc.store.begin().await?;
        for (provider, model, message) in &observed.auth_failures {
            let message = redactor.apply(message);
            let message = &message;
            tx.mark_credential_error(LLM_KIND, provider, message).await?;
            tx.emit(NewEvent {
                actor: Actor::System,
                ..self.event(
                    EventType::Error,
                    json!({"code": "provider_auth_failed", "notice": "operator", "provider": provider, "model": model,
                           "message": format!("provider `{provider}` refused its credential; it is marked `error`: {message}")}),
                )
            });
        }
        for (provider, model, transition) in &observed.transitions {
            tx.emit(NewEvent {
                actor: Actor::System,
                ..self.event(
                    EventType::BreakerTrip,
                    json!({"provider": provider, "model": model, "from": transition.from, "to": transition.to}),
                )
            });
        }
        tx.commit().await?;
        Ok(())
    }

    /// Accounts for a served call in a transaction it returns uncommitted, and records it.
    async fn settle_served(
        &mut self,
        turn: u32,
        reservation: Uuid,
        served: Served,
        unflushed: Option<String>,
    ) -> Result<(Completion, Tx), Halt> {
        let mut completion = served.completion;
        // Model output never carries a secret further: not into events, the transcript, the next request,
        // the session, the job result or a channel reply.
        let redactor = self.svc.secrets.current();
        completion.text = redactor.apply(&completion.text);
        for call in &mut completion.tool_calls {
            call.arguments = redactor.apply(&call.arguments);
        }
        let serving = ModelRef { provider: served.provider.clone(), model: served.model.clone() };
        if let Some(index) = self.candidates.iter().position(|candidate| *candidate == serving) {
            self.state.candidate_index = index;
        }
        self.state.provider = Some(served.provider.clone());
        self.state.model = Some(served.model.clone());
        self.state.turn = turn;
        let price = self.svc.providers.price(&serving);
        let charge = Charge {
            turn,
            provider: Some(served.provider.clone()),
            model: Some(served.model.clone()),
            usage: completion.usage,
            price,
            aborted: false,
        };
        let mut tx = self.svc.store.begin().await?;
        if let Some(text) = unflushed {
            tx.emit(self.event(EventType::LlmDelta, json!({"turn": turn, "text": text})));
        }
        self.charge(&mut tx, reservation, &charge).await?;
        if self.svc.providers.take_use_record(&served.provider, self.now()) {
            tx.record_credential_success(LLM_KIND, &served.provider).await?;
        }
        tx.emit(self.event(
            EventType::LlmMessage,
            json!({"turn": turn, "text": completion.text, "tool_calls": completion.tool_calls,
                   "stop_reason": completion.stop_reason, "provider": served.provider, "model": served.model}),
        ));
        for steering_id in self.unacknowledged.drain(..) {
            tx.emit(NewEvent {
                session_id: self.session_id,
                actor: Actor::Agent,
                ..NewEvent::new(
                    self.agent.id,
                    Some(self.ctx.job.id),
                    EventType::SteerAcknowledged,
                    json!({"steering_id": steering_id, "turn": turn}),
                )
            });
        }
        let now = self.now();
        self.buffer.append(
            RecordType::LlmResponse,
            now,
            json!({"turn": turn, "provider": served.provider, "model": served.model, "completion": completion,
                       "failed_attempts": served.failed_attempts}),
        );
        Ok((completion, tx))
    }

    /// Settles the reservation to `charge` and accounts for it (see [`budget::charge_call`]).
    async fn charge(&mut self, tx: &mut Tx, reservation: Uuid, charge: &Charge) -> Result<(), Halt> {
        let charged = budget::charge_call(
            tx,
            budget::ChargeTarget { job_id: self.ctx.job.id, session_id: self.session_id, agent_slug: &self.agent.slug },
            reservation,
            charge,
            |event_type, payload| self.event(event_type, payload),
        )
        .await?;
        let totals = &mut self.state.totals;
        totals.tokens_in += charged.tokens_in;
        totals.tokens_out += charged.tokens_out;
        totals.cost_usd += charged.cost_usd;
        totals.llm_calls += 1;
        Ok(())
    }
}

/// Resolves when an urgent steering instruction is queued for the job (SPEC §5.6).
async fn urgent_steering(
    store: Store,
    mut notifications: broadcast::Receiver<Notification>,
    agent_id: Uuid,
    job_id: Uuid,
) {
    loop {
        let check = match notifications.recv().await {
            Ok(Notification::Steered { job_id: target }) => target == job_id,
            Ok(Notification::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => true,
            Ok(_) => false,
            Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
        };
        if check && store.has_urgent_steering(agent_id, job_id).await.unwrap_or(false) {
            return;
        }
    }
}
