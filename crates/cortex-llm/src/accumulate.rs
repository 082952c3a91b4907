//! Builds a [`Completion`] from the pieces a wire decoder finds, forwarding each piece to the caller as a
//! [`StreamEvent`] on the way. Both API styles feed it, streaming or not, so aggregation rules (tool-call
//! fragments keyed by index, usage estimation, defaults) live in one place.

use std::collections::BTreeMap;

use crate::types::{ChatRequest, Completion, StopReason, StreamEvent, ToolCall, Usage, chars_to_tokens, count_chars};

/// Accumulates one response.
pub(crate) struct CompletionBuilder<'a> {
    on_event: &'a mut (dyn FnMut(StreamEvent) + Send),
    text: String,
    /// Tool calls by the provider's key for them (OpenAI `index`, Anthropic content block index), so calls
    /// come out in the order the model produced them.
    tool_calls: BTreeMap<u64, ToolCall>,
    tokens_in: Option<u64>,
    tokens_out: Option<u64>,
    cache_read_tokens: u64,
    stop_reason: Option<StopReason>,
    model: Option<String>,
}

impl<'a> CompletionBuilder<'a> {
    pub(crate) fn new(on_event: &'a mut (dyn FnMut(StreamEvent) + Send)) -> Self {
        Self {
            on_event,
            text: String::new(),
            tool_calls: BTreeMap::new(),
            tokens_in: None,
            tokens_out: None,
            cache_read_tokens: 0,
            stop_reason: None,
            model: None,
        }
    }

    pub(crate) fn text(&mut self, fragment: &str) {
        if fragment.is_empty() {
            return;
        }
        self.text.push_str(fragment);
        (self.on_event)(StreamEvent::TextDelta(fragment.to_owned()));
    }

    /// Opens the tool call `key` unless it exists. A missing or empty id gets a stable synthetic one, since
    /// some OpenAI-compatible servers send none and tool results must still quote something. A name that
    /// arrives after the call was opened without one fills it in.
    pub(crate) fn tool_call_start(&mut self, key: u64, id: Option<&str>, name: &str) {
        if let Some(call) = self.tool_calls.get_mut(&key) {
            if call.name.is_empty() {
                name.clone_into(&mut call.name);
            }
            return;
        }
        let id = id.filter(|id| !id.is_empty()).map_or_else(|| format!("call_{key}"), str::to_owned);
        let call = ToolCall { id: id.clone(), name: name.to_owned(), arguments: String::new() };
        self.tool_calls.insert(key, call);
        (self.on_event)(StreamEvent::ToolCallStarted { id, name: name.to_owned() });
    }

    /// Appends an argument fragment to tool call `key`, opening it first if the start was never seen.
    pub(crate) fn tool_call_arguments(&mut self, key: u64, fragment: &str) {
        if fragment.is_empty() {
            return;
        }
        self.tool_call_start(key, None, "");
        if let Some(call) = self.tool_calls.get_mut(&key) {
            call.arguments.push_str(fragment);
            let id = call.id.clone();
            (self.on_event)(StreamEvent::ToolCallArgumentsDelta { id, fragment: fragment.to_owned() });
        }
    }

    /// The key of the most recently opened tool call, for servers that omit the index on continuations.
    pub(crate) fn last_tool_call_key(&self) -> Option<u64> {
        self.tool_calls.last_key_value().map(|(key, _)| *key)
    }

    /// The key of the call with this id, if one is open.
    pub(crate) fn tool_call_key_by_id(&self, id: &str) -> Option<u64> {
        self.tool_calls.iter().find(|(_, call)| call.id == id).map(|(key, _)| *key)
    }

    /// Records input usage; later reports replace earlier ones (streams repeat cumulative counts).
    pub(crate) fn input_tokens(&mut self, tokens: u64, cache_read_tokens: u64) {
        self.tokens_in = Some(tokens);
        self.cache_read_tokens = cache_read_tokens;
    }

    pub(crate) fn output_tokens(&mut self, tokens: u64) {
        self.tokens_out = Some(tokens);
    }

    pub(crate) fn stop_reason(&mut self, reason: StopReason) {
        self.stop_reason = Some(reason);
    }

    pub(crate) fn has_stop_reason(&self) -> bool {
        self.stop_reason.is_some()
    }

    pub(crate) fn model(&mut self, model: &str) {
        if !model.is_empty() {
            self.model = Some(model.to_owned());
        }
    }

    /// Completes the response; missing usage is estimated at characters/4 and flagged.
    pub(crate) fn finish(self, request: &ChatRequest) -> Completion {
        let mut tool_calls: Vec<ToolCall> = self.tool_calls.into_values().collect();
        for call in &mut tool_calls {
            // A tool without parameters may legitimately produce no argument text at all.
            if call.arguments.trim().is_empty() {
                call.arguments = "{}".to_owned();
            }
        }
        let estimated = self.tokens_in.is_none() || self.tokens_out.is_none();
        let tokens_in = self.tokens_in.unwrap_or_else(|| request.estimated_input_tokens());
        let tokens_out = self.tokens_out.unwrap_or_else(|| {
            let chars = count_chars(&self.text)
                + tool_calls.iter().map(|call| count_chars(&call.name) + count_chars(&call.arguments)).sum::<u64>();
            chars_to_tokens(chars)
        });
        let stop_reason =
            self.stop_reason.unwrap_or(if tool_calls.is_empty() { StopReason::EndTurn } else { StopReason::ToolUse });
        Completion {
            text: self.text,
            tool_calls,
            usage: Usage { tokens_in, tokens_out, cache_read_tokens: self.cache_read_tokens, estimated },
            stop_reason,
            model: self.model.unwrap_or_else(|| request.model.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ChatRequest {
        ChatRequest {
            model: "requested".into(),
            system: None,
            messages: vec![crate::types::Message::User { text: "12345678".into() }],
            tools: vec![],
            max_tokens: 16,
            temperature: None,
            stream: true,
        }
    }

    #[test]
    fn fragments_concatenate_per_key_in_key_order() {
        let mut events = Vec::new();
        let mut sink = |event| events.push(event);
        let mut builder = CompletionBuilder::new(&mut sink);
        builder.tool_call_start(1, Some("b"), "second");
        builder.tool_call_start(0, Some("a"), "first");
        builder.tool_call_arguments(1, "{\"y\":");
        builder.tool_call_arguments(0, "{}");
        builder.tool_call_arguments(1, "2}");
        builder.text("hi");
        let completion = builder.finish(&request());
        let calls: Vec<_> = completion.tool_calls.iter().map(|c| (c.id.as_str(), c.arguments.as_str())).collect();
        assert_eq!(calls, vec![("a", "{}"), ("b", "{\"y\":2}")]);
        assert_eq!(completion.stop_reason, StopReason::ToolUse);
        assert_eq!(completion.model, "requested");
        assert_eq!(events.len(), 6);
        assert_eq!(events[2], StreamEvent::ToolCallArgumentsDelta { id: "b".into(), fragment: "{\"y\":".into() });
    }

    #[test]
    fn missing_usage_is_estimated_and_flagged() {
        let mut sink = |_| {};
        let mut builder = CompletionBuilder::new(&mut sink);
        builder.text("abcdefghi");
        let completion = builder.finish(&request());
        assert_eq!(completion.usage, Usage { tokens_in: 2, tokens_out: 3, cache_read_tokens: 0, estimated: true });
        assert_eq!(completion.stop_reason, StopReason::EndTurn);
    }

    #[test]
    fn reported_usage_is_exact_and_ids_are_synthesised() {
        let mut sink = |_| {};
        let mut builder = CompletionBuilder::new(&mut sink);
        builder.tool_call_start(3, None, "");
        builder.tool_call_start(3, Some("ignored"), "lookup");
        builder.input_tokens(100, 40);
        builder.output_tokens(7);
        let completion = builder.finish(&request());
        assert_eq!(completion.tool_calls[0].id, "call_3");
        assert_eq!(completion.tool_calls[0].name, "lookup");
        assert_eq!(completion.tool_calls[0].arguments, "{}");
        assert_eq!(completion.usage, Usage { tokens_in: 100, tokens_out: 7, cache_read_tokens: 40, estimated: false });
    }
}
