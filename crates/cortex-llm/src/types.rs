//! Provider-neutral request and response vocabulary, and the [`LlmProvider`] trait every client implements.
//!
//! The agent runtime speaks only these types; the wire modules translate them to and from each API style.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::LlmError;

/// One entry of a conversation as the runtime keeps it, independent of any provider's message layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    /// A user turn.
    User {
        /// Text from the user (or an operator instruction injected as user text).
        text: String,
    },
    /// A previous model turn, replayed so the model sees its own tool calls.
    Assistant {
        /// What the model said before or instead of calling tools.
        text: String,
        /// Tool calls the model made in that turn, answered by later `ToolResult`s.
        tool_calls: Vec<ToolCall>,
    },
    /// The outcome of one tool call, answered by `call_id`.
    ToolResult {
        /// The [`ToolCall::id`] this result answers.
        call_id: String,
        /// Tool output as text (already sanitised by the tool layer).
        content: String,
        /// The tool failed; the model is told so it can recover.
        is_error: bool,
    },
}

/// A tool invocation requested by the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Provider-assigned id that the matching [`Message::ToolResult`] must quote.
    pub id: String,
    /// Wire name of the tool (mapping to tool refs is the caller's job).
    pub name: String,
    /// Raw JSON text exactly as the model produced it, kept verbatim so a parse error can be shown to the model.
    pub arguments: String,
}

impl ToolCall {
    /// Parses the raw arguments; the error text is meant for the repair prompt sent back to the model.
    pub fn parse_arguments(&self) -> Result<serde_json::Value, String> {
        serde_json::from_str(&self.arguments).map_err(|err| err.to_string())
    }
}

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Wire name (`^[a-zA-Z0-9_-]{1,64}$`, mapped from the tool ref by the caller).
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// Everything needed for one model call. Serialisable so the session buffer can log it (SPEC §5.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Model id as the provider knows it; the failover client overwrites it per candidate.
    pub model: String,
    /// System prompt; sent where each style expects it.
    pub system: Option<String>,
    /// The conversation so far, oldest first.
    pub messages: Vec<Message>,
    /// Tools offered for this call; empty on the final turn (SPEC §5.1).
    pub tools: Vec<ToolSpec>,
    /// Output cap for this call.
    pub max_tokens: u32,
    /// Passed through only when the agent sets it.
    pub temperature: Option<f32>,
    /// Stream deltas as they are generated (the runtime always does; tests and tooling may not).
    pub stream: bool,
}

impl ChatRequest {
    /// Rough input size (characters / 4, rounded up) for providers that report no usage.
    pub fn estimated_input_tokens(&self) -> u64 {
        let mut chars = self.system.as_deref().map_or(0, count_chars);
        for message in &self.messages {
            chars += match message {
                Message::User { text } => count_chars(text),
                Message::Assistant { text, tool_calls } => {
                    count_chars(text)
                        + tool_calls
                            .iter()
                            .map(|call| count_chars(&call.name) + count_chars(&call.arguments))
                            .sum::<u64>()
                }
                Message::ToolResult { content, .. } => count_chars(content),
            };
        }
        for tool in &self.tools {
            chars +=
                count_chars(&tool.name) + count_chars(&tool.description) + count_chars(&tool.parameters.to_string());
        }
        chars_to_tokens(chars)
    }
}

/// Token counts of one call. `tokens_in` includes cached input; `cache_read_tokens` is the cached share of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// All input tokens, cached ones included.
    pub tokens_in: u64,
    /// Generated tokens.
    pub tokens_out: u64,
    /// The part of `tokens_in` served from the provider's prompt cache (cheaper).
    pub cache_read_tokens: u64,
    /// True when the provider sent no usage and the numbers are a characters/4 estimate.
    pub estimated: bool,
}

/// Why the model stopped generating.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// The model finished its answer.
    EndTurn,
    /// The model wants tools run before it continues.
    ToolUse,
    /// Output hit `max_tokens`; the text is truncated.
    MaxTokens,
    /// Anything else, with the provider's own word (`content_filter`, `refusal`, `stop_sequence`, …).
    Other(String),
}

/// The aggregated result of one model call. Serialisable for the session buffer and replays (SPEC §5.5, §5.10).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// The full answer text (all text deltas joined).
    pub text: String,
    /// Tool calls in the order the model made them.
    pub tool_calls: Vec<ToolCall>,
    /// Token counts for budgets and cost.
    pub usage: Usage,
    /// Why generation ended.
    pub stop_reason: StopReason,
    /// Model id the provider reported serving (falls back to the requested id).
    pub model: String,
}

/// An incremental piece of a response, forwarded to the caller while the call runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// A piece of answer text.
    TextDelta(String),
    /// The model began a tool call; arguments follow as deltas.
    ToolCallStarted {
        /// Id that later argument deltas and the tool result refer to.
        id: String,
        /// Wire name of the tool.
        name: String,
    },
    /// A fragment of a tool call's JSON arguments (concatenate per id).
    ToolCallArgumentsDelta {
        /// Id of the call from `ToolCallStarted`.
        id: String,
        /// Raw JSON text; not valid JSON on its own.
        fragment: String,
    },
    /// Everything forwarded since the last call started is void: a retry or failover begins a fresh message.
    /// Only the failover client emits it, and only when deltas of a failed attempt were already forwarded.
    Reset,
}

/// A model back-end. One instance per configured provider; safe to share across tasks.
#[async_trait::async_trait]
pub trait LlmProvider: Send + Sync {
    /// Provider name as configured (e.g. "openai", "anthropic", "groq-local").
    fn name(&self) -> &str;
    /// One model call. Streams when `request.stream`; calls `on_event` for every delta as it arrives
    /// (non-streaming mode calls it once with the full text, then once per tool call start and arguments).
    /// Returns the aggregated completion.
    async fn complete(
        &self,
        request: &ChatRequest,
        on_event: &mut (dyn FnMut(StreamEvent) + Send),
    ) -> Result<Completion, LlmError>;
}

/// The two wire protocols that cover every supported back-end (SPEC §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiStyle {
    /// OpenAI Chat Completions and compatible servers (vLLM, Ollama, LiteLLM, Groq, …).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl ApiStyle {
    /// The canonical lowercase name used in configuration and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
        }
    }
}

impl std::str::FromStr for ApiStyle {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.eq_ignore_ascii_case("openai") {
            Ok(Self::OpenAi)
        } else if value.eq_ignore_ascii_case("anthropic") {
            Ok(Self::Anthropic)
        } else {
            Err(format!("unknown api_style `{value}`, expected one of: openai, anthropic"))
        }
    }
}

impl std::fmt::Display for ApiStyle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to reach one provider. `Debug` never prints the key.
#[derive(Clone)]
pub struct ProviderConfig {
    /// Provider name that candidates (`ModelRef::provider`) refer to.
    pub name: String,
    /// Which wire protocol the back-end speaks.
    pub api_style: ApiStyle,
    /// OpenAI style: with or without `/v1`; Anthropic style: without `/v1` (tolerated).
    pub base_url: String,
    /// Absent for local servers that need no authentication.
    pub api_key: Option<String>,
    /// Longest silence allowed while waiting for response bytes of a streaming call.
    pub idle_timeout: Duration,
    /// Longest a whole call may take, streaming or not.
    pub total_timeout: Duration,
}

impl ProviderConfig {
    /// Default idle stream timeout (SPEC §19).
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
    /// Default whole-call timeout (SPEC §19).
    pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(600);

    /// A configuration with the default timeouts and no key.
    pub fn new(name: impl Into<String>, api_style: ApiStyle, base_url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            api_style,
            base_url: base_url.into(),
            api_key: None,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            total_timeout: Self::DEFAULT_TOTAL_TIMEOUT,
        }
    }

    /// Sets the key; builder style so call sites stay one expression.
    pub fn with_api_key(mut self, api_key: impl Into<String>) -> Self {
        self.api_key = Some(api_key.into());
        self
    }
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("api_style", &self.api_style)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("idle_timeout", &self.idle_timeout)
            .field("total_timeout", &self.total_timeout)
            .finish()
    }
}

/// Characters of `text` (not bytes, so non-Latin text is not overestimated fourfold).
pub(crate) fn count_chars(text: &str) -> u64 {
    text.chars().count() as u64
}

/// The chars/4 rule used whenever a provider reports no usage.
pub(crate) fn chars_to_tokens(chars: u64) -> u64 {
    chars.div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_arguments_reports_the_parse_error() {
        let good = ToolCall { id: "1".into(), name: "t".into(), arguments: r#"{"a":1}"#.into() };
        assert_eq!(good.parse_arguments().unwrap(), serde_json::json!({"a": 1}));
        let bad = ToolCall { id: "1".into(), name: "t".into(), arguments: r#"{"a":"#.into() };
        let err = bad.parse_arguments().unwrap_err();
        assert!(err.contains("EOF"), "{err}");
    }

    #[test]
    fn debug_redacts_the_key() {
        let config = ProviderConfig::new("openai", ApiStyle::OpenAi, "http://x").with_api_key("sk-secret");
        let shown = format!("{config:?}");
        assert!(!shown.contains("sk-secret"));
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn api_style_parses_case_insensitively() {
        assert_eq!("OpenAI".parse::<ApiStyle>().unwrap(), ApiStyle::OpenAi);
        assert_eq!("anthropic".parse::<ApiStyle>().unwrap(), ApiStyle::Anthropic);
        assert!("gemini".parse::<ApiStyle>().is_err());
        assert_eq!(serde_json::to_string(&ApiStyle::OpenAi).unwrap(), r#""openai""#);
    }

    #[test]
    fn input_estimate_counts_every_part() {
        let request = ChatRequest {
            model: "m".into(),
            system: Some("abcd".into()),
            messages: vec![
                Message::User { text: "ééé".into() },
                Message::ToolResult { call_id: "c".into(), content: "x".into(), is_error: false },
            ],
            tools: vec![],
            max_tokens: 10,
            temperature: None,
            stream: false,
        };
        // 4 + 3 + 1 = 8 characters → 2 tokens.
        assert_eq!(request.estimated_input_tokens(), 2);
    }
}
