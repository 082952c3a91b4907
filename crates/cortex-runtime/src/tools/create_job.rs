//! `create_job {prompt, agent?, run_at?, priority?}` (SPEC §6.2, issue 7): an agent schedules follow-up work
//! as a task job for itself or for an active agent its definition lists in `subagents`. Risk p2, so by
//! default a human approves it. The new job records which job created it.

use cortex_core::agent::AgentStatus;
use cortex_core::approval::RiskTier;
use cortex_core::job::JobKind;
use cortex_store::jobs::NewJob;
use cortex_store::{Store, StoreError};
use cortex_tools::{Tool, ToolContext, ToolError, ToolOutput};
use serde::Deserialize;
use serde_json::{Value, json};

/// Longest prompt a created job may carry (the chat text limit).
const MAX_PROMPT_CHARS: usize = 50_000;

pub(crate) struct CreateJobTool {
    store: Store,
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
    pub(crate) fn new(store: Store) -> Self {
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
        Self { store, schema }
    }
}

fn store_error(err: StoreError) -> ToolError {
    ToolError::Failed(format!("cannot create the job: {err}"))
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

    fn is_idempotent(&self, _input: &Value) -> bool {
        false
    }

    async fn call(&self, input: Value, ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let args: Args = serde_json::from_value(input).map_err(|err| ToolError::InvalidArguments(err.to_string()))?;
        let caller = self.store.get_agent_by_id(ctx.agent_id).await.map_err(store_error)?;
        let target = match args.agent.as_deref() {
            None | Some("self") => caller.clone(),
            Some(slug) if slug == caller.slug => caller.clone(),
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
        let run_at = match &args.run_at {
            Some(text) => Some(
                chrono::DateTime::parse_from_rfc3339(text)
                    .map_err(|err| ToolError::InvalidArguments(format!("run_at: {err}")))?
                    .with_timezone(&chrono::Utc),
            ),
            None => None,
        };
        let new = NewJob {
            agent_id: target.id,
            session_id: None,
            kind: JobKind::Task,
            priority: args.priority.unwrap_or(0).clamp(0, 100),
            payload: json!({"prompt": args.prompt, "created_by_job": ctx.job_id}),
            max_attempts: 3,
            timeout_seconds: target.resource_limits.timeout_seconds,
            run_at,
            parent_job_id: None,
            delegation_depth: 0,
            idempotency_key: None,
            created_by: Some(format!("agent:{}", ctx.agent_id)),
        };
        let mut tx = self.store.begin().await.map_err(store_error)?;
        let (job, _) = tx.insert_job(&new).await.map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(ToolOutput::ok(
            format!("Created job {} for agent `{}`.", job.id, target.slug),
            json!({"job_id": job.id, "agent": target.slug, "run_at": job.run_at}),
        ))
    }
}
