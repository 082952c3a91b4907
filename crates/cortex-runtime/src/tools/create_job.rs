//! `create_job {prompt, agent?, run_at?, priority?}` (SPEC §6.2, §5.9): an agent schedules follow-up work
//! as a task job for itself or for an active agent its definition lists in `subagents`. Risk p2, so by
//! default a human approves it.
//!
//! The child records its parent (`parent_job_id`) and `delegation_depth` (root 0, child 1, …). A call is
//! refused beyond the configured depth (3) or when the calling job already created its maximum number of
//! children (10). The ledger call id is the child's idempotency key, so running the same call again — a
//! turn resumed after a crash — returns the child it already created instead of a second one; that makes
//! the tool safe to re-run (idempotent in the sense of SPEC §4.9). A child created from a context holding
//! untrusted content starts tainted itself (`untrusted_input`), so delegating cannot launder an injection.

use cortex_core::agent::AgentStatus;
use cortex_core::approval::RiskTier;
use cortex_core::job::JobKind;
use cortex_store::jobs::{IdempotencyKey, Job, NewJob};
use cortex_store::{Store, StoreError};
use cortex_tools::{DataScope, Tool, ToolContext, ToolError, ToolOutput};
use serde::Deserialize;
use serde_json::{Value, json};

/// Longest prompt a created job may carry (the chat text limit).
const MAX_PROMPT_CHARS: usize = 50_000;

/// How far agents may delegate (issue 12; configurable with `CORTEX_DELEGATION_MAX_DEPTH` and
/// `CORTEX_DELEGATION_MAX_CHILDREN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DelegationLimits {
    /// Deepest `delegation_depth` a created job may have (a root job is 0).
    pub max_depth: i32,
    /// Most jobs one job may create.
    pub max_children: i64,
}

impl Default for DelegationLimits {
    fn default() -> Self {
        Self { max_depth: 3, max_children: 10 }
    }
}

pub(crate) struct CreateJobTool {
    store: Store,
    limits: DelegationLimits,
    schema: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    prompt: String,
    agent: Option<String>,
    run_at: Option<String>,
    priority: Option<i32>,
}

impl CreateJobTool {
    pub(crate) fn new(store: Store, limits: DelegationLimits) -> Self {
        let schema = json!({
            "type": "object",
            "properties": {
                "prompt": {"type": "string", "minLength": 1, "maxLength": MAX_PROMPT_CHARS, "description": "What the job should do."},
                "agent": {"type": "string", "description": "Slug of the agent to run it (default: yourself); must be one of your sub-agents."},
                "run_at": {"type": "string", "description": "When to start, RFC 3339 (default: now)."},
                "priority": {"type": "integer", "minimum": 0, "maximum": 100}
            },
            "required": ["prompt"],
            "additionalProperties": false
        });
        Self { store, limits, schema }
    }

    /// The agent that runs the new job: the caller itself or one of its active sub-agents.
    async fn target(
        &self,
        ctx: &ToolContext,
        requested: Option<&str>,
    ) -> Result<cortex_store::agents::Agent, ToolError> {
        let caller = self.store.get_agent_by_id(ctx.agent_id).await.map_err(store_error)?;
        let target = match requested {
            None | Some("self") => caller,
            Some(slug) if slug == caller.slug => caller,
            Some(slug) => {
                if !caller.subagents.iter().any(|allowed| allowed == slug) {
                    return Err(ToolError::InvalidArguments(format!(
                        "`{slug}` is not one of your sub-agents ({})",
                        caller.subagents.join(", ")
                    )));
                }
                match self.store.get_agent(slug).await {
                    Ok(agent) => agent,
                    Err(StoreError::NotFound { .. }) => {
                        return Err(ToolError::InvalidArguments(format!("no agent `{slug}`")));
                    }
                    Err(err) => return Err(store_error(err)),
                }
            }
        };
        if target.status != AgentStatus::Active {
            return Err(ToolError::InvalidArguments(format!("agent `{}` is not active", target.slug)));
        }
        Ok(target)
    }
}

fn store_error(err: StoreError) -> ToolError {
    ToolError::Failed(format!("cannot create the job: {err}"))
}

fn created(job: &Job, slug: &str) -> ToolOutput {
    ToolOutput::ok(
        format!("Created job {} for agent `{slug}`.", job.id),
        json!({"job_id": job.id, "agent": slug, "run_at": job.run_at, "delegation_depth": job.delegation_depth}),
    )
}

#[async_trait::async_trait]
impl Tool for CreateJobTool {
    fn tool_ref(&self) -> &str {
        "create_job"
    }

    fn description(&self) -> &str {
        "Schedules a follow-up task for yourself or for one of your sub-agents; returns the new job's id."
    }

    fn input_schema(&self) -> &Value {
        &self.schema
    }

    fn default_risk(&self, _input: &Value) -> RiskTier {
        RiskTier::P2
    }

    /// Keyed by the ledger call id: a re-run finds the child made the first time.
    fn is_idempotent(&self, _input: &Value) -> bool {
        true
    }

    /// The work stays in this deployment; a child of a job with untrusted content inherits that taint
    /// (its own outbound calls are gated), and at p2 a tainted call needs a human anyway.
    fn sends_data_out(&self, _input: &Value, _scope: &DataScope) -> bool {
        false
    }

    async fn call(&self, input: Value, ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let args: Args = serde_json::from_value(input).map_err(|err| ToolError::InvalidArguments(err.to_string()))?;
        let target = self.target(ctx, args.agent.as_deref()).await?;
        let run_at = match &args.run_at {
            Some(text) => Some(
                chrono::DateTime::parse_from_rfc3339(text)
                    .map_err(|err| ToolError::InvalidArguments(format!("run_at: {err}")))?
                    .with_timezone(&chrono::Utc),
            ),
            None => None,
        };
        let parent = self.store.get_job(ctx.job_id).await.map_err(store_error)?;
        let depth = parent.delegation_depth + 1;
        if depth > self.limits.max_depth {
            return Err(ToolError::LimitReached(format!(
                "this job is at delegation depth {}; jobs may delegate at most {} levels deep",
                parent.delegation_depth, self.limits.max_depth
            )));
        }
        let new = NewJob {
            agent_id: target.id,
            session_id: None,
            kind: JobKind::Task,
            priority: args.priority.unwrap_or(0).clamp(0, 100),
            payload: json!({"prompt": args.prompt, "untrusted_input": ctx.untrusted_context}),
            max_attempts: 3,
            timeout_seconds: target.resource_limits.timeout_seconds,
            run_at,
            parent_job_id: Some(parent.id),
            delegation_depth: depth,
            // The ledger call id names exactly one request, so the key alone identifies it.
            idempotency_key: Some(IdempotencyKey::for_request(
                format!("tool_call:{}", ctx.call_id),
                &json!("create_job"),
            )),
            created_by: Some(format!("agent:{}", ctx.agent_id)),
        };
        let mut tx = self.store.begin().await.map_err(store_error)?;
        let (job, fresh) = tx.insert_job(&new).await.map_err(store_error)?;
        if fresh && tx.count_child_jobs(parent.id).await.map_err(store_error)? > self.limits.max_children {
            // Dropping the transaction rolls the insert back.
            return Err(ToolError::LimitReached(format!(
                "this job already created {} jobs, the most one job may create",
                self.limits.max_children
            )));
        }
        tx.commit().await.map_err(store_error)?;
        Ok(created(&job, &target.slug))
    }
}
