//! `memory_store` and `memory_query` (SPEC §6.2) in their simple form: agent-scoped records in
//! `memory_record`, exact-duplicate detection, keyword search ranked by matched words then importance.
//! Both honour the policy's `data_scope` (`types`, `tags`). Results reach the model wrapped as untrusted
//! data like every tool output, since recalled memory may hold text an attacker planted earlier.

use cortex_core::approval::RiskTier;
use cortex_store::Store;
use cortex_store::memory::NewMemory;
use cortex_tools::{DataScope, Tool, ToolContext, ToolError, ToolOutput};
use serde::Deserialize;
use serde_json::{Value, json};

const TYPES: &[&str] = &["fact", "preference", "event", "system_rule", "lesson", "relationship"];
/// How many keyword candidates are ranked per query.
const CANDIDATES: usize = 200;

fn store_error(err: cortex_store::StoreError) -> ToolError {
    ToolError::Failed(format!("memory is unavailable: {err}"))
}

fn parse_args<T: serde::de::DeserializeOwned>(input: Value) -> Result<T, ToolError> {
    serde_json::from_value(input).map_err(|err| ToolError::InvalidArguments(err.to_string()))
}

/// Whether a record of `memory_type` with `tags` is inside the scope.
fn in_scope(scope: &DataScope, memory_type: &str, tags: &[String]) -> bool {
    (scope.types.is_empty() || scope.types.iter().any(|allowed| allowed == memory_type))
        && (scope.tags.is_empty() || tags.iter().any(|tag| scope.tags.contains(tag)))
}

/// `memory_store {content, type?, tags?, importance?}`.
pub(crate) struct MemoryStoreTool {
    store: Store,
    schema: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreArgs {
    content: String,
    #[serde(rename = "type")]
    memory_type: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    importance: Option<i64>,
}

impl MemoryStoreTool {
    pub(crate) fn new(store: Store) -> Self {
        let schema = json!({
            "type": "object",
            "properties": {
                "content": {"type": "string", "minLength": 10, "maxLength": 8000, "description": "The fact, preference or lesson to remember."},
                "type": {"type": "string", "enum": TYPES, "description": "Kind of memory (default fact)."},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 10},
                "importance": {"type": "integer", "minimum": 1, "maximum": 5, "description": "1 (trivia) … 5 (critical); default 3."}
            },
            "required": ["content"],
            "additionalProperties": false
        });
        Self { store, schema }
    }
}

#[async_trait::async_trait]
impl Tool for MemoryStoreTool {
    fn tool_ref(&self) -> &str {
        "memory_store"
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
        let memory_type = args.memory_type.unwrap_or_else(|| "fact".to_owned());
        if !in_scope(&ctx.data_scope, &memory_type, &args.tags) {
            return Err(ToolError::InvalidArguments(
                "this agent's data scope does not allow storing a memory of this type or with these tags".into(),
            ));
        }
        let new = NewMemory {
            agent_id: ctx.agent_id,
            memory_type,
            content: args.content,
            tags: args.tags,
            importance: args.importance.unwrap_or(3),
            confidence: 1.0,
            source: "tool".into(),
            source_ref: Some(format!("job:{}", ctx.job_id)),
        };
        let mut tx = self.store.begin().await.map_err(store_error)?;
        let (record, created) = tx.insert_memory(&new).await.map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        let text = if created { "Stored." } else { "Already remembered (identical memory exists)." };
        Ok(ToolOutput::ok(text, json!({"id": record.id, "created": created})))
    }
}

/// `memory_query {query, limit?, types?, tags?}`.
pub(crate) struct MemoryQueryTool {
    store: Store,
    schema: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryArgs {
    query: String,
    limit: Option<usize>,
    #[serde(default)]
    types: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
}

impl MemoryQueryTool {
    pub(crate) fn new(store: Store) -> Self {
        let schema = json!({
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "description": "Words to look for."},
                "limit": {"type": "integer", "minimum": 1, "maximum": 50, "description": "Results (default 10)."},
                "types": {"type": "array", "items": {"type": "string", "enum": TYPES}},
                "tags": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["query"],
            "additionalProperties": false
        });
        Self { store, schema }
    }
}

#[async_trait::async_trait]
impl Tool for MemoryQueryTool {
    fn tool_ref(&self) -> &str {
        "memory_query"
    }

    fn description(&self) -> &str {
        "Searches this agent's memories by keywords; returns the best matches."
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
        let words: Vec<String> = args
            .query
            .split(|c: char| !c.is_alphanumeric())
            .filter(|word| word.chars().count() >= 2)
            .map(str::to_lowercase)
            .take(8)
            .collect();
        let candidates = self.store.memory_candidates(ctx.agent_id, &words, CANDIDATES).await.map_err(store_error)?;
        let mut ranked: Vec<(usize, cortex_store::memory::MemoryRecord)> = candidates
            .into_iter()
            .filter(|record| in_scope(&ctx.data_scope, &record.memory_type, &record.tags))
            .filter(|record| args.types.is_empty() || args.types.contains(&record.memory_type))
            .filter(|record| args.tags.is_empty() || record.tags.iter().any(|tag| args.tags.contains(tag)))
            .map(|record| {
                let content = record.content.to_lowercase();
                (words.iter().filter(|word| content.contains(word.as_str())).count(), record)
            })
            .collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.importance.cmp(&a.1.importance)).then(b.1.id.cmp(&a.1.id)));
        ranked.truncate(limit);
        let ids: Vec<_> = ranked.iter().map(|(_, record)| record.id).collect();
        if !ids.is_empty() {
            let mut tx = self.store.begin().await.map_err(store_error)?;
            tx.touch_memories(&ids).await.map_err(store_error)?;
            tx.commit().await.map_err(store_error)?;
        }
        if ranked.is_empty() {
            return Ok(ToolOutput::ok("No matching memories.", json!({"items": []})));
        }
        let lines: Vec<String> = ranked
            .iter()
            .enumerate()
            .map(|(index, (_, record))| format!("{}. [{}] {}", index + 1, record.memory_type, record.content))
            .collect();
        let items: Vec<Value> = ranked
            .iter()
            .map(|(score, record)| {
                json!({"id": record.id, "type": record.memory_type, "content": record.content, "tags": record.tags,
                       "importance": record.importance, "matched_words": score})
            })
            .collect();
        Ok(ToolOutput::ok(lines.join("\n"), json!({"items": items})))
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
