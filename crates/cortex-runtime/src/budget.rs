//! Which budgets apply to a job's model calls (SPEC §5.1 step 5) and how a call's worst case is sized.
//!
//! Every applicable limit becomes a [`BudgetLine`] reserved atomically by the store: the job's token budget
//! and optional USD cap, the session's token budget, the agent's per-day and per-month token and USD limits,
//! and — when the job was created with an API key that carries a `budget` document — that key's per-day and
//! per-month limits. Each source is one small function, so further sources (per-user budgets) plug in the
//! same way.

use cortex_core::Timestamp;
use cortex_core::event::EventType;
use cortex_core::job::{ErrorClass, JobError};
use cortex_llm::{ModelPrice, Usage, cost_usd};
use cortex_store::Tx;
use cortex_store::agents::Agent;
use cortex_store::budgets::{
    BudgetLine, BudgetRefusal, BudgetScope, LimitKind, SettledLine, TOTAL_PERIOD, day_period, month_period,
};
use cortex_store::credentials::CredentialUsage;
use cortex_store::events::NewEvent;
use cortex_store::jobs::{Job, JobUsage};
use cortex_store::{Store, StoreError};

use crate::providers::LLM_KIND;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

/// Share of a limit at which a `cost.alert` warning is emitted (SPEC §19).
pub(crate) const ALERT_SHARE: f64 = 0.8;
/// Safety margin on estimated input tokens: the chars/4 estimate runs low on code and non-Latin text.
const INPUT_ESTIMATE_MARGIN: f64 = 1.25;

/// The limits of an API key's `budget` document.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct KeyBudget {
    tokens_per_day: Option<i64>,
    tokens_per_month: Option<i64>,
    usd_per_day: Option<f64>,
    usd_per_month: Option<f64>,
}

/// The lines every model call of a job is charged to.
#[derive(Debug, Clone)]
pub(crate) struct BudgetPlan {
    pub lines: Vec<BudgetLine>,
}

impl BudgetPlan {
    /// Gathers the lines of `job` run by `agent` at `now`.
    pub(crate) async fn for_job(
        store: &Store,
        agent: &Agent,
        job: &Job,
        now: Timestamp,
    ) -> Result<BudgetPlan, StoreError> {
        let limits = &agent.resource_limits;
        let mut lines = vec![BudgetLine {
            scope: BudgetScope::Job,
            scope_id: job.id,
            period: TOTAL_PERIOD.into(),
            token_limit: Some(to_i64(limits.token_budget)),
            usd_limit: limits.cost_budget_usd_per_job,
        }];
        if let Some(session_id) = job.session_id {
            lines.push(BudgetLine {
                scope: BudgetScope::Session,
                scope_id: session_id,
                period: TOTAL_PERIOD.into(),
                token_limit: Some(to_i64(limits.session_token_budget)),
                usd_limit: None,
            });
        }
        lines.extend(periodic(
            BudgetScope::Agent,
            agent.id,
            now,
            [limits.token_budget_per_day.map(to_i64), limits.token_budget_per_month.map(to_i64)],
            [limits.cost_budget_usd_per_day, limits.cost_budget_usd_per_month],
        ));
        if let Some(key_id) = api_key_of(job)
            && let Some(document) = store.api_key_budget(key_id).await?
        {
            let budget: KeyBudget = serde_json::from_value(document).unwrap_or_else(|err| {
                tracing::warn!(%key_id, error = %err, "ignoring an unreadable API key budget");
                KeyBudget::default()
            });
            lines.extend(periodic(
                BudgetScope::ApiKey,
                key_id,
                now,
                [budget.tokens_per_day, budget.tokens_per_month],
                [budget.usd_per_day, budget.usd_per_month],
            ));
        }
        Ok(BudgetPlan { lines })
    }

    /// Whether any line limits spend in USD (then unpriced models fail closed).
    pub(crate) fn limits_cost(&self) -> bool {
        self.lines.iter().any(|line| line.usd_limit.is_some())
    }
}

/// Day and month lines of one scope: always recorded (usage views read them), limited when configured.
fn periodic(
    scope: BudgetScope,
    scope_id: Uuid,
    now: Timestamp,
    tokens: [Option<i64>; 2],
    usd: [Option<f64>; 2],
) -> [BudgetLine; 2] {
    let [day_tokens, month_tokens] = tokens;
    let [day_usd, month_usd] = usd;
    [
        BudgetLine { scope, scope_id, period: day_period(now), token_limit: day_tokens, usd_limit: day_usd },
        BudgetLine { scope, scope_id, period: month_period(now), token_limit: month_tokens, usd_limit: month_usd },
    ]
}

/// The API key a job was created with (`created_by = "api_key:<uuid>"`).
fn api_key_of(job: &Job) -> Option<Uuid> {
    job.created_by.as_deref()?.strip_prefix("api_key:")?.parse().ok()
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Worst case of one call: estimated input (with margin) plus the whole output allowance, priced at the
/// most expensive of the candidates that may serve it.
pub(crate) fn worst_case(estimated_input: u64, max_tokens: u32, prices: &[Option<ModelPrice>]) -> (i64, f64) {
    let tokens_in = (estimated_input as f64 * INPUT_ESTIMATE_MARGIN).ceil() as u64;
    let usage = Usage { tokens_in, tokens_out: u64::from(max_tokens), cache_read_tokens: 0, estimated: true };
    let usd = prices.iter().flatten().map(|price| cost_usd(price, &usage)).fold(0.0, f64::max);
    (to_i64(tokens_in + u64::from(max_tokens)), usd)
}

/// The job error for a refused reservation (SPEC §4.6 codes).
pub(crate) fn refusal_error(refusal: &BudgetRefusal) -> JobError {
    let (code, unit) = match refusal.kind {
        LimitKind::Tokens => ("token_budget_exceeded", "tokens"),
        LimitKind::Usd => ("cost_budget_exceeded", "USD"),
    };
    let line = &refusal.line;
    JobError::new(
        ErrorClass::Permanent,
        code,
        format!(
            "the {} budget for {} ({} {unit}) would be exceeded: {:.4} spent, {:.4} reserved by calls in flight, this call needs up to {:.4}",
            line.scope.as_str(),
            line.period,
            refusal.limit,
            refusal.spent,
            refusal.reserved,
            refusal.requested,
        ),
    )
}

/// `cost.alert` payloads for every limit a settlement pushed across the warning share.
pub(crate) fn alerts(settled: &[SettledLine]) -> Vec<Value> {
    let mut alerts = Vec::new();
    for line in settled {
        let crossings = [
            (
                LimitKind::Tokens,
                line.line.token_limit.map(|limit| limit as f64),
                line.tokens_before as f64,
                line.tokens_after as f64,
            ),
            (LimitKind::Usd, line.line.usd_limit, line.usd_before, line.usd_after),
        ];
        for (kind, limit, before, after) in crossings {
            let Some(limit) = limit.filter(|limit| *limit > 0.0) else { continue };
            if before < limit * ALERT_SHARE && after >= limit * ALERT_SHARE {
                alerts.push(json!({
                    "scope": line.line.scope.as_str(), "scope_id": line.line.scope_id, "period": line.line.period,
                    "kind": kind, "spent": after, "limit": limit, "share": after / limit,
                }));
            }
        }
    }
    alerts
}

/// Usage to charge for one model call.
pub(crate) struct Charge {
    pub turn: u32,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub usage: Usage,
    pub price: Option<ModelPrice>,
    pub aborted: bool,
}

/// Who a call is charged to.
pub(crate) struct ChargeTarget<'a> {
    pub job_id: Uuid,
    pub session_id: Option<Uuid>,
    /// For the metrics labels.
    pub agent_slug: &'a str,
}

/// What a charge added.
pub(crate) struct Charged {
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
}

/// Settles the reservation to `charge` and adds it to the job, the session and the credential's ledger,
/// with `llm.usage` and a `cost.alert` for limits it pushed past 80 % — the same cost everywhere (SPEC
/// §5.8), in the caller's transaction. `event` builds the events with the caller's attribution.
pub(crate) async fn charge_call(
    tx: &mut Tx,
    target: ChargeTarget<'_>,
    reservation: Uuid,
    charge: &Charge,
    event: impl Fn(EventType, Value) -> NewEvent,
) -> Result<Charged, StoreError> {
    let usage = &charge.usage;
    let cost = charge.price.map_or(0.0, |price| cost_usd(&price, usage));
    let tokens_in = i64::try_from(usage.tokens_in).unwrap_or(i64::MAX);
    let tokens_out = i64::try_from(usage.tokens_out).unwrap_or(i64::MAX);
    let settled = tx.settle_budget(reservation, tokens_in.saturating_add(tokens_out), cost).await?;
    let job_usage = JobUsage { tokens_in, tokens_out, cost_usd: cost, llm_calls: 1, tool_calls: 0 };
    tx.add_job_usage(target.job_id, &job_usage).await?;
    if let Some(session_id) = target.session_id {
        tx.add_session_usage(session_id, tokens_in, tokens_out, cost).await?;
    }
    if let Some(credential) = &charge.provider {
        let spend = CredentialUsage { calls: 1, tokens_in, tokens_out, cost_usd: cost };
        tx.add_credential_usage(LLM_KIND, credential, target.job_id, spend).await?;
    }
    tx.emit(NewEvent {
        tokens_in: Some(tokens_in),
        tokens_out: Some(tokens_out),
        cost_usd: Some(cost),
        model: charge.model.clone(),
        ..event(
            EventType::LlmUsage,
            json!({"turn": charge.turn, "provider": charge.provider, "model": charge.model, "tokens_in": tokens_in,
                   "tokens_out": tokens_out, "cache_read_tokens": usage.cache_read_tokens, "cost_usd": cost,
                   "priced": charge.price.is_some(), "cost_estimated": charge.price.is_some(),
                   "usage_estimated": usage.estimated, "aborted": charge.aborted}),
        )
    });
    for alert in alerts(&settled) {
        tx.emit(event(EventType::CostAlert, alert));
    }
    let agent = target.agent_slug.to_owned();
    metrics::counter!("cortex_llm_tokens_total", "agent" => agent.clone())
        .increment(usage.tokens_in + usage.tokens_out);
    // USD is fractional, so its running total is a gauge that only ever increases.
    metrics::gauge!("cortex_llm_cost_usd_total", "agent" => agent).increment(cost);
    Ok(Charged { tokens_in, tokens_out, cost_usd: cost })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_case_uses_the_dearest_candidate() {
        let cheap = ModelPrice { input_per_mtok: 1.0, output_per_mtok: 1.0, cache_read_per_mtok: 1.0 };
        let dear = ModelPrice { input_per_mtok: 10.0, output_per_mtok: 20.0, cache_read_per_mtok: 1.0 };
        let (tokens, usd) = worst_case(800, 1000, &[Some(cheap), None, Some(dear)]);
        assert_eq!(tokens, 1000 + 1000);
        assert!((usd - (1000.0 * 10.0 + 1000.0 * 20.0) / 1e6).abs() < 1e-12);
        assert_eq!(worst_case(10, 10, &[None]).1, 0.0);
    }

    #[test]
    fn alerts_fire_once_on_crossing() {
        let line = BudgetLine {
            scope: BudgetScope::Agent,
            scope_id: Uuid::nil(),
            period: "day:2026-01-01".into(),
            token_limit: Some(100),
            usd_limit: Some(1.0),
        };
        let settled = |tokens: (i64, i64), usd: (f64, f64)| SettledLine {
            line: line.clone(),
            tokens_before: tokens.0,
            tokens_after: tokens.1,
            usd_before: usd.0,
            usd_after: usd.1,
        };
        assert_eq!(alerts(&[settled((70, 85), (0.1, 0.2))]).len(), 1);
        assert_eq!(alerts(&[settled((85, 90), (0.7, 0.9))]).len(), 1);
        assert!(alerts(&[settled((85, 90), (0.1, 0.2))]).is_empty());
    }
}
