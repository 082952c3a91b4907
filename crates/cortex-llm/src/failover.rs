//! Failover across the operator's declared candidates with in-call retries and one circuit breaker per
//! (provider, model) — SPEC §5.3.
//!
//! For each candidate in order: skip it if its breaker is open; call it; retry `transient`, `resource`
//! and `timeout` failures on the same candidate up to `max_in_call_retries` times with jittered
//! exponential backoff that honours `Retry-After` (unless its breaker opens meanwhile); then move on.
//! A half-open breaker admits exactly one call, the probe (SPEC Appendix B "Failover"); other calls go
//! to the next candidate, and when none serves they wait for the probe to settle and try again. Calls
//! refused the probe slot are never attempts, so they cannot count as failed probes.
//! `auth_failed`, `model_unavailable`, an unusable base URL and unknown providers move on at once; any other permanent
//! rejection is returned immediately, since a malformed request fails the same way everywhere. Only the
//! candidates given are ever called: there is no silent downgrade.
//!
//! Streaming and retries: deltas of a failed attempt may already have reached the caller. Before the next
//! attempt starts, the caller receives [`StreamEvent::Reset`] and must discard what it showed; the retry
//! then streams a fresh message from its beginning.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use cortex_core::agent::ModelRef;
use cortex_core::breaker::{Breaker, BreakerConfig, BreakerState, BreakerTransition};
use cortex_core::clock::Clock;
use cortex_core::job::ErrorClass;
use rand::Rng;
use tokio::sync::watch;
use tracing::Instrument;

use crate::error::LlmError;
use crate::types::{ChatRequest, Completion, LlmProvider, StreamEvent};

/// In-call retry schedule: `min(base × 2^(n−1), max) × U[1−jitter, 1+jitter]` before retry `n`, at least any
/// `Retry-After` the provider asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries on the same candidate after its first failure (3).
    pub max_in_call_retries: u32,
    /// Wait before the first retry (1 s).
    pub base_delay: Duration,
    /// Cap of the exponential backoff, and the longest `Retry-After` worth waiting for in-call (30 s).
    pub max_delay: Duration,
    /// Relative spread of each delay, 0.25 for ±25 %.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// SPEC §19: 3 retries, 1 s → 30 s, ±25 %.
    fn default() -> Self {
        Self {
            max_in_call_retries: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            jitter: 0.25,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based). `None` when the provider asked for a longer wait than
    /// `max_delay`: blocking the turn that long is worse than trying the next candidate or the job-level
    /// retry, which honours the same `Retry-After`.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let doubling = 2u32.saturating_pow(retry.saturating_sub(1));
        let backoff = self.base_delay.saturating_mul(doubling).min(self.max_delay);
        let jitter = self.jitter.clamp(0.0, 0.99);
        let backoff =
            if jitter > 0.0 { backoff.mul_f64(rand::rng().random_range(1.0 - jitter..=1.0 + jitter)) } else { backoff };
        match retry_after {
            Some(wait) if wait > self.max_delay => None,
            Some(wait) => Some(backoff.max(wait)),
            None => Some(backoff),
        }
    }
}

/// The successful outcome of a failover call.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    /// The model's answer.
    pub completion: Completion,
    /// Position of the serving candidate; later turns of the same attempt pass `candidates[candidate_index..]`
    /// to stay on the fallback (SPEC §5.3 stickiness).
    pub candidate_index: usize,
    /// Provider name of the serving candidate.
    pub provider: String,
    /// Model id of the serving candidate.
    pub model: String,
    /// Attempts that failed before this one, for the per-job LLM retry limit (SPEC §5.1).
    pub failed_attempts: u32,
}

/// Hooks for what the caller records: breaker events (`breaker.trip`) and failed attempts (an
/// `auth_failed` one means the provider's credential must be marked `error`).
pub trait FailoverObserver: Send + Sync {
    /// A breaker changed state; the caller records a `breaker.trip` event.
    fn breaker_transition(&self, provider: &str, model: &str, t: BreakerTransition);
    /// One attempt failed (including candidates without a provider); `auth_failed` means
    /// the provider's credential should be marked `error`.
    fn attempt_failed(&self, provider: &str, model: &str, err: &LlmError);
}

/// An observer that records nothing, for callers without an event log (tools, tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl FailoverObserver for NoopObserver {
    fn breaker_transition(&self, _provider: &str, _model: &str, _t: BreakerTransition) {}
    fn attempt_failed(&self, _provider: &str, _model: &str, _err: &LlmError) {}
}

/// Calls models with failover; one per process, shared by every job so breakers see all traffic.
pub struct FailoverClient {
    providers: RwLock<HashMap<String, Arc<dyn LlmProvider>>>,
    breakers: Mutex<HashMap<(String, String), BreakerEntry>>,
    clock: Arc<dyn Clock>,
    policy: RetryPolicy,
}

/// A breaker plus the state last reported, so every change (including the time-driven open → half-open)
/// is reported exactly once.
struct BreakerEntry {
    breaker: Breaker,
    reported: BreakerState,
    /// Bumped whenever a half-open probe settles, so calls refused while it ran can try again.
    probe_settled: watch::Sender<u64>,
}

/// What a candidate's breaker says to a call.
enum Admission<'a> {
    /// Go ahead (as the half-open probe, if `attempt.probe`).
    Admitted(Attempt<'a>),
    /// Half-open with its one probe in flight: try another candidate, or wait for the probe.
    ProbeInFlight(watch::Receiver<u64>),
    /// Open: skip this candidate.
    Refused,
}

impl FailoverClient {
    /// A client over `providers` keyed by name, with breakers timed by `clock`.
    pub fn new(providers: HashMap<String, Arc<dyn LlmProvider>>, clock: Arc<dyn Clock>, policy: RetryPolicy) -> Self {
        Self { providers: RwLock::new(providers), breakers: Mutex::new(HashMap::new()), clock, policy }
    }

    /// Adds or replaces a provider (credential created or rotated) without losing breaker state.
    pub fn set_provider(&self, provider: Arc<dyn LlmProvider>) {
        let name = provider.name().to_owned();
        self.providers.write().unwrap_or_else(PoisonError::into_inner).insert(name, provider);
    }

    /// Removes a provider (credential deleted); candidates naming it then fail with `no_credential`.
    pub fn remove_provider(&self, name: &str) {
        self.providers.write().unwrap_or_else(PoisonError::into_inner).remove(name);
    }

    /// Every breaker seen so far with its current state, sorted, for health endpoints.
    pub fn breaker_states(&self) -> Vec<(String, String, BreakerState)> {
        let now = self.clock.now();
        let mut states: Vec<_> = self
            .lock_breakers()
            .iter_mut()
            .map(|((provider, model), entry)| (provider.clone(), model.clone(), entry.breaker.state(now)))
            .collect();
        states.sort();
        states
    }

    /// Serves `request` from the first healthy candidate (SPEC §5.3); `request.model` is replaced by each
    /// candidate's model. When nothing serves it, the error is the last attempt's — except that
    /// `resource/providers_unavailable` is returned when no candidate could be tried because of open
    /// breakers, or when only permanent failures remain beside candidates skipped for open breakers (those
    /// may recover, so the job should retry later).
    pub async fn complete(
        &self,
        candidates: &[ModelRef],
        mut request: ChatRequest,
        on_event: &mut (dyn FnMut(StreamEvent) + Send),
        observer: &dyn FailoverObserver,
    ) -> Result<Served, LlmError> {
        let span = tracing::info_span!("llm.failover", candidates = candidates.len());
        async move {
            let mut call = CallState { on_event, observer, failed_attempts: 0, reset_pending: false };
            let mut last_error: Option<LlmError> = None;
            let mut skipped_open = false;
            // The first candidate found half-open with its probe in flight, to wait for if nothing serves.
            let mut awaited: Option<(usize, Arc<dyn LlmProvider>, watch::Receiver<u64>)> = None;
            for (candidate_index, candidate) in candidates.iter().enumerate() {
                let Some(provider) = self.provider(&candidate.provider) else {
                    let err = LlmError::NoProvider { provider: candidate.provider.clone() };
                    observer.attempt_failed(&candidate.provider, &candidate.model, &err);
                    last_error = Some(err);
                    continue;
                };
                request.model.clone_from(&candidate.model);
                match self.try_candidate(candidate, provider.as_ref(), &request, &mut call).await {
                    Outcome::Served(completion) => return Ok(served(completion, candidate_index, candidate, &call)),
                    Outcome::ProbeInFlight(settled) => {
                        if awaited.is_none() {
                            awaited = Some((candidate_index, provider, settled));
                        }
                    }
                    Outcome::Skipped => skipped_open = true,
                    Outcome::MoveOn(err) => last_error = Some(err),
                    Outcome::Stop(err) => return Err(err),
                }
            }
            // Nothing served, but a candidate is being probed: wait for that probe, then try it again
            // (as the next probe, or freely once it closed).
            while let Some((candidate_index, provider, mut settled)) = awaited.take() {
                let candidate = &candidates[candidate_index];
                // An error means the entry is gone, which never happens; trying again is right either way.
                let _ = settled.changed().await;
                request.model.clone_from(&candidate.model);
                match self.try_candidate(candidate, provider.as_ref(), &request, &mut call).await {
                    Outcome::Served(completion) => return Ok(served(completion, candidate_index, candidate, &call)),
                    Outcome::ProbeInFlight(settled) => awaited = Some((candidate_index, provider, settled)),
                    Outcome::Skipped => skipped_open = true,
                    Outcome::MoveOn(err) => last_error = Some(err),
                    Outcome::Stop(err) => return Err(err),
                }
            }
            Err(match last_error {
                Some(err) if !(skipped_open && err.class() == ErrorClass::Permanent) => err,
                _ => LlmError::Resource {
                    code: "providers_unavailable",
                    message: "every candidate provider is unavailable (circuit breakers open)".into(),
                    retry_after: None,
                },
            })
        }
        .instrument(span)
        .await
    }

    /// Calls one candidate, retrying in-call while the error and its breaker allow.
    async fn try_candidate(
        &self,
        candidate: &ModelRef,
        provider: &dyn LlmProvider,
        request: &ChatRequest,
        call: &mut CallState<'_>,
    ) -> Outcome {
        let mut retries = 0;
        let mut last_error = None;
        loop {
            let attempt = match self.begin_attempt(candidate, call.observer) {
                Admission::Admitted(attempt) => attempt,
                // Refused before any attempt: another candidate may serve, or the probe may heal this one.
                Admission::ProbeInFlight(settled) if last_error.is_none() => return Outcome::ProbeInFlight(settled),
                Admission::ProbeInFlight(_) | Admission::Refused => break,
            };
            if std::mem::take(&mut call.reset_pending) {
                (call.on_event)(StreamEvent::Reset);
            }
            let mut forwarded = false;
            let result = {
                let on_event = &mut *call.on_event;
                let mut forward = |event: StreamEvent| {
                    forwarded = true;
                    on_event(event);
                };
                provider.complete(request, &mut forward).await
            };
            let err = match result {
                Ok(completion) => {
                    attempt.settle(true);
                    return Outcome::Served(completion);
                }
                Err(err) => err,
            };
            // A definite 4xx answer proves the provider reachable; only health signals count against it.
            attempt.settle(!err.counts_against_breaker());
            call.observer.attempt_failed(&candidate.provider, &candidate.model, &err);
            tracing::warn!(
                provider = %candidate.provider, model = %candidate.model, code = err.code(), retries,
                "model attempt failed"
            );
            call.failed_attempts += 1;
            call.reset_pending |= forwarded;

            let delay = match next_step(&err) {
                Step::Stop => return Outcome::Stop(err),
                Step::NextCandidate => return Outcome::MoveOn(err),
                Step::Retry if retries < self.policy.max_in_call_retries => {
                    self.policy.delay(retries + 1, err.retry_after())
                }
                Step::Retry => None,
            };
            let Some(delay) = delay else { return Outcome::MoveOn(err) };
            last_error = Some(err);
            retries += 1;
            tokio::time::sleep(delay).await;
        }
        // The breaker refused: before any attempt it was open; after a retry it has just opened.
        match last_error {
            Some(err) => Outcome::MoveOn(err),
            None => {
                tracing::info!(provider = %candidate.provider, model = %candidate.model, "breaker open, skipping");
                Outcome::Skipped
            }
        }
    }

    fn provider(&self, name: &str) -> Option<Arc<dyn LlmProvider>> {
        self.providers.read().unwrap_or_else(PoisonError::into_inner).get(name).cloned()
    }

    fn lock_breakers(&self) -> MutexGuard<'_, HashMap<(String, String), BreakerEntry>> {
        self.breakers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the candidate's breaker for a slot. Only an admitted call is an attempt: a call refused the
    /// half-open probe slot builds none, so it can never count as a failed probe.
    fn begin_attempt<'a>(&'a self, candidate: &'a ModelRef, observer: &'a dyn FailoverObserver) -> Admission<'a> {
        let (acquired, probe, settled) = self.update_breaker(candidate, observer, |entry, now| {
            let half_open = entry.breaker.state(now) == BreakerState::HalfOpen;
            let acquired = entry.breaker.try_acquire(now);
            // Subscribing under the lock that settles probes: a probe ending right after this refusal is seen.
            let settled = (half_open && !acquired).then(|| entry.probe_settled.subscribe());
            (acquired, half_open, settled)
        });
        match (acquired, settled) {
            (true, _) => Admission::Admitted(Attempt { client: self, candidate, observer, probe, settled: false }),
            (false, Some(settled)) => Admission::ProbeInFlight(settled),
            (false, None) => Admission::Refused,
        }
    }

    /// Runs `change` on the candidate's breaker entry (creating it on first use), then reports any state
    /// change after the lock is released, so an observer may call back into this client.
    fn update_breaker<R>(
        &self,
        candidate: &ModelRef,
        observer: &dyn FailoverObserver,
        change: impl FnOnce(&mut BreakerEntry, cortex_core::Timestamp) -> R,
    ) -> R {
        let now = self.clock.now();
        let (result, transition) = {
            let mut breakers = self.lock_breakers();
            let entry = breakers.entry((candidate.provider.clone(), candidate.model.clone())).or_insert_with(|| {
                set_gauge(candidate, BreakerState::Closed);
                BreakerEntry {
                    breaker: Breaker::new(BreakerConfig::PROVIDER),
                    reported: BreakerState::Closed,
                    probe_settled: watch::channel(0).0,
                }
            });
            let result = change(entry, now);
            let state = entry.breaker.state(now);
            let transition = (state != entry.reported).then_some(BreakerTransition { from: entry.reported, to: state });
            entry.reported = state;
            (result, transition)
        };
        if let Some(transition) = transition {
            set_gauge(candidate, transition.to);
            tracing::warn!(
                provider = %candidate.provider, model = %candidate.model,
                from = %transition.from, to = %transition.to, "provider breaker changed state"
            );
            observer.breaker_transition(&candidate.provider, &candidate.model, transition);
        }
        result
    }
}

/// One admitted call. Only the half-open probe decides a half-open breaker: a call admitted while the
/// breaker was closed counts only while it is still closed. If the probe's future is dropped before it
/// settles (the caller aborted the stream), its slot would stay taken forever; the drop counts it as a
/// failed probe instead, which re-opens the breaker and lets a fresh probe through after the open period.
/// Every settled probe wakes the calls waiting for it.
struct Attempt<'a> {
    client: &'a FailoverClient,
    candidate: &'a ModelRef,
    observer: &'a dyn FailoverObserver,
    /// Admitted as the half-open probe.
    probe: bool,
    settled: bool,
}

impl Attempt<'_> {
    fn settle(mut self, success: bool) {
        self.settled = true;
        let probe = self.probe;
        self.client.update_breaker(self.candidate, self.observer, |entry, now| {
            let counts = if probe {
                entry.breaker.state(now) == BreakerState::HalfOpen
            } else {
                entry.breaker.state(now) == BreakerState::Closed
            };
            if counts {
                if success {
                    entry.breaker.record_success(now);
                } else {
                    entry.breaker.record_failure(now);
                }
            }
            if probe {
                entry.probe_settled.send_modify(|settled| *settled += 1);
            }
        });
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled && self.probe {
            self.client.update_breaker(self.candidate, self.observer, |entry, now| {
                if entry.breaker.state(now) == BreakerState::HalfOpen {
                    entry.breaker.record_failure(now);
                }
                entry.probe_settled.send_modify(|settled| *settled += 1);
            });
        }
    }
}

/// The state of one failover call shared across its candidates.
struct CallState<'a> {
    on_event: &'a mut (dyn FnMut(StreamEvent) + Send),
    observer: &'a dyn FailoverObserver,
    failed_attempts: u32,
    /// Deltas of a failed attempt reached the caller, so the next attempt starts with `StreamEvent::Reset`.
    reset_pending: bool,
}

/// How one candidate's turn ended.
enum Outcome {
    Served(Completion),
    /// Half-open with its probe in flight: nothing was tried; the receiver changes when the probe settles.
    ProbeInFlight(watch::Receiver<u64>),
    /// Its breaker was open: nothing was tried.
    Skipped,
    /// It failed in a way another candidate may not.
    MoveOn(LlmError),
    /// It failed in a way every candidate would.
    Stop(LlmError),
}

/// The answer of `candidate`, with what the call went through.
fn served(completion: Completion, candidate_index: usize, candidate: &ModelRef, call: &CallState<'_>) -> Served {
    Served {
        completion,
        candidate_index,
        provider: candidate.provider.clone(),
        model: candidate.model.clone(),
        failed_attempts: call.failed_attempts,
    }
}

/// What a failed attempt leads to.
enum Step {
    Retry,
    NextCandidate,
    Stop,
}

fn next_step(err: &LlmError) -> Step {
    match err {
        LlmError::Transient { .. } | LlmError::Resource { .. } | LlmError::Timeout { .. } => Step::Retry,
        LlmError::Auth { .. } | LlmError::NoProvider { .. } => Step::NextCandidate,
        // Specific to this candidate: another provider or model may well serve the request.
        LlmError::Rejected { code: "model_unavailable" | "invalid_provider_config", .. } => Step::NextCandidate,
        LlmError::Rejected { .. } => Step::Stop,
    }
}

/// `cortex_provider_breaker_state`: 0 closed, 1 half-open, 2 open.
fn set_gauge(candidate: &ModelRef, state: BreakerState) {
    let value = match state {
        BreakerState::Closed => 0.0,
        BreakerState::HalfOpen => 1.0,
        BreakerState::Open => 2.0,
    };
    metrics::gauge!(
        "cortex_provider_breaker_state",
        "provider" => candidate.provider.clone(), "model" => candidate.model.clone()
    )
    .set(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_cap_and_stay_within_jitter() {
        let policy = RetryPolicy::default();
        for _ in 0..200 {
            let first = policy.delay(1, None).unwrap();
            assert!(first >= Duration::from_millis(750) && first <= Duration::from_millis(1250), "{first:?}");
            let third = policy.delay(3, None).unwrap();
            assert!(third >= Duration::from_secs(3) && third <= Duration::from_secs(5), "{third:?}");
            let late = policy.delay(30, None).unwrap();
            assert!(late >= Duration::from_millis(22_500) && late <= Duration::from_millis(37_500), "{late:?}");
        }
    }

    #[test]
    fn retry_after_raises_the_delay_or_forbids_waiting() {
        let policy = RetryPolicy { jitter: 0.0, ..RetryPolicy::default() };
        assert_eq!(policy.delay(1, None), Some(Duration::from_secs(1)));
        assert_eq!(policy.delay(1, Some(Duration::from_secs(7))), Some(Duration::from_secs(7)));
        assert_eq!(policy.delay(5, Some(Duration::from_millis(10))), Some(Duration::from_secs(16)));
        assert_eq!(policy.delay(1, Some(Duration::from_secs(31))), None);
    }

    #[test]
    fn steps_follow_the_spec() {
        let step = |err: LlmError| match next_step(&err) {
            Step::Retry => "retry",
            Step::NextCandidate => "next",
            Step::Stop => "stop",
        };
        assert_eq!(step(LlmError::transient("rate_limit", "x")), "retry");
        assert_eq!(step(LlmError::timeout("x")), "retry");
        assert_eq!(
            step(LlmError::Resource { code: "quota_exceeded", message: "x".into(), retry_after: None }),
            "retry"
        );
        assert_eq!(step(LlmError::Auth { status: 401, message: "x".into() }), "next");
        assert_eq!(step(LlmError::Rejected { status: 404, code: "model_unavailable", message: "x".into() }), "next");
        assert_eq!(step(LlmError::Rejected { status: 400, code: "bad_request", message: "x".into() }), "stop");
        assert_eq!(step(LlmError::NoProvider { provider: "x".into() }), "next");
        let misconfigured = LlmError::Rejected { status: 0, code: "invalid_provider_config", message: "x".into() };
        assert_eq!(step(misconfigured), "next");
    }
}
