//! `memory_store` and `memory_query` (SPEC §6.2) over the agent's memory (`cortex-memory`): the same
//! records, validation, embeddings and hybrid scoring as the API. Both honour the policy's `data_scope`
//! (`types`, `tags`). Results reach the model wrapped as untrusted data like every tool output, since
//! recalled memory may hold text an attacker planted earlier; returning them counts as a recall.

use std::sync::Arc;

use cortex_core::approval::RiskTier;
use cortex_core::memory::{MemorySource, MemoryType};
use cortex_memory::{Memory, MemoryError, Remember, SearchMode, SearchQuery};
use cortex_tools::{DataScope, Tool, ToolContext, ToolError, ToolOutput};
use serde::Deserialize;
use serde_json::{Value, json};

fn memory_error(err: MemoryError) -> ToolError {
    match err {
        MemoryError::Invalid { .. } | MemoryError::Injection(_) => ToolError::InvalidArguments(err.to_string()),
        other => ToolError::Failed(format!("memory is unavailable: {other}")),
    }
}

fn parse_args<T: serde::de::DeserializeOwned>(input: Value) -> Result<T, ToolError> {
    serde_json::from_value(input).map_err(|err| ToolError::InvalidArguments(err.to_string()))
}

/// The refs of the memory tools: not offered to an agent whose `memory.enabled` is off.
pub(crate) const MEMORY_TOOLS: [&str; 2] = ["memory_store", "memory_query"];

/// Whether a record of `memory_type` with `tags` is inside the scope.
fn in_scope(scope: &DataScope, memory_type: &str, tags: &[String]) -> bool {
    (scope.types.is_empty() || scope.types.iter().any(|allowed| allowed == memory_type))
        && (scope.tags.is_empty() || tags.iter().any(|tag| scope.tags.contains(tag)))
}

/// `memory_store {content, type?, tags?, importance?}`.
pub(crate) struct MemoryStoreTool {
    memory: Arc<Memory>,
    schema: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreArgs {
    content: String,
    #[serde(rename = "type")]
    memory_type: Option<MemoryType>,
    #[serde(default)]
    tags: Vec<String>,
    importance: Option<i64>,
}

impl MemoryStoreTool {
    pub(crate) fn new(memory: Arc<Memory>) -> Self {
        let schema = json!({
            "type": "object",
            "properties": {
                "content": {"type": "string", "minLength": 10, "maxLength": 8000, "description": "The fact, preference or lesson to remember."},
                "type": {"type": "string", "enum": MemoryType::NAMES, "description": "Kind of memory (default fact)."},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 10},
                "importance": {"type": "integer", "minimum": 1, "maximum": 5, "description": "1 (trivia) … 5 (critical); default 3."}
            },
            "required": ["content"],
            "additionalProperties": false
        });
        Self { memory, schema }
    }
}

#[async_trait::async_trait]
impl Tool for MemoryStoreTool {
    fn tool_ref(&self) -> &str {
        MEMORY_TOOLS[0]
    }

    fn description(&self) -> &str {
        "Stores a durable memory for this agent (a fact, preference, event, rule, lesson or relationship)."
    }

    fn input_schema(&self) -> &Value {
        &self.schema
    }

    fn default_risk(&self, _input: &Value) -> RiskTier {
        RiskTier::P3
    }

    /// Storing the same content twice yields the same single record, so a re-run is harmless.
    fn is_idempotent(&self, _input: &Value) -> bool {
        true
    }

    /// The agent's own memory stays inside the deployment.
    fn sends_data_out(&self, _input: &Value, _scope: &DataScope) -> bool {
        false
    }

    async fn call(&self, input: Value, ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let args: StoreArgs = parse_args(input)?;
        let memory_type = args.memory_type.unwrap_or(MemoryType::Fact);
        if !in_scope(&ctx.data_scope, memory_type.as_str(), &args.tags) {
            return Err(ToolError::InvalidArguments(
                "this agent's data scope does not allow storing a memory of this type or with these tags".into(),
            ));
        }
        let new = Remember {
            memory_type,
            tags: args.tags,
            importance: args.importance.unwrap_or(3),
            job_id: Some(ctx.job_id),
            ..Remember::new(ctx.agent_id, args.content, MemorySource::Tool)
        };
        let (record, created) = self.memory.remember(new).await.map_err(memory_error)?;
        let text = if created { "Stored." } else { "Already remembered (identical memory exists)." };
        Ok(ToolOutput::ok(text, json!({"id": record.id, "created": created})))
    }
}

/// `memory_query {query, limit?, types?, tags?}`.
pub(crate) struct MemoryQueryTool {
    memory: Arc<Memory>,
    schema: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryArgs {
    query: String,
    limit: Option<usize>,
    #[serde(default)]
    types: Vec<MemoryType>,
    #[serde(default)]
    tags: Vec<String>,
}

impl MemoryQueryTool {
    pub(crate) fn new(memory: Arc<Memory>) -> Self {
        let schema = json!({
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "description": "What to recall (words or a question)."},
                "limit": {"type": "integer", "minimum": 1, "maximum": 50, "description": "Results (default 10)."},
                "types": {"type": "array", "items": {"type": "string", "enum": MemoryType::NAMES}},
                "tags": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["query"],
            "additionalProperties": false
        });
        Self { memory, schema }
    }
}

#[async_trait::async_trait]
impl Tool for MemoryQueryTool {
    fn tool_ref(&self) -> &str {
        MEMORY_TOOLS[1]
    }

    fn description(&self) -> &str {
        "Searches this agent's memories (meaning and keywords, newer and often-used first); returns the best matches."
    }

    fn input_schema(&self) -> &Value {
        &self.schema
    }

    fn default_risk(&self, _input: &Value) -> RiskTier {
        RiskTier::P3
    }

    fn is_idempotent(&self, _input: &Value) -> bool {
        true
    }

    fn sends_data_out(&self, _input: &Value, _scope: &DataScope) -> bool {
        false
    }

    async fn call(&self, input: Value, ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let args: QueryArgs = parse_args(input)?;
        let limit = args.limit.unwrap_or(10).clamp(1, 50);
        let query = SearchQuery { text: args.query, limit, types: args.types, tags: args.tags };
        let results = self.memory.search(ctx.agent_id, &query).await.map_err(memory_error)?;
        let items: Vec<_> = results
            .items
            .into_iter()
            .filter(|item| in_scope(&ctx.data_scope, &item.record.memory_type, &item.record.tags))
            .collect();
        if items.is_empty() {
            return Ok(ToolOutput::ok("No matching memories.", json!({"items": []})));
        }
        self.memory.recalled(ctx.agent_id, items.iter().map(|item| item.record.id).collect());
        let lines: Vec<String> = items
            .iter()
            .enumerate()
            .map(|(index, item)| format!("{}. [{}] {}", index + 1, item.record.memory_type, item.record.content))
            .collect();
        let mode = match results.mode {
            SearchMode::Hybrid => "hybrid",
            SearchMode::Keyword => "keyword",
        };
        let items: Vec<Value> = items
            .iter()
            .map(|item| {
                json!({"id": item.record.id, "type": item.record.memory_type, "content": item.record.content,
                       "tags": item.record.tags, "importance": item.record.importance, "score": item.score})
            })
            .collect();
        Ok(ToolOutput::ok(lines.join("\n"), json!({"items": items, "mode": mode})))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_limits_types_and_tags() {
        let open = DataScope::default();
        assert!(in_scope(&open, "fact", &[]));
        let scoped = DataScope { types: vec!["fact".into()], tags: vec!["work".into()], ..DataScope::default() };
        assert!(in_scope(&scoped, "fact", &["work".into()]));
        assert!(!in_scope(&scoped, "lesson", &["work".into()]));
        assert!(!in_scope(&scoped, "fact", &["home".into()]));
    }
}
