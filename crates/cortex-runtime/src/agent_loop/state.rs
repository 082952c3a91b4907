//! The state a run checkpoints at every turn boundary (SPEC §4.8): model in use, turn number, the
//! transcript of this job (tool results by reference to their `tool_call` rows, rehydrated from the ledger
//! on resume), usage totals, injected steering, and the final answer once known.
//!
//! Tool calls of the last assistant message that have no result yet are "pending": on resume the ledger
//! says whether each completed, is running (a crash: interrupted), or waits for a human.

use std::collections::{BTreeMap, HashMap};

use cortex_llm::{Message, ToolCall};
use cortex_store::tool_calls::ToolCallRecord;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::ledger::{key_for, model_content};

/// Version of the checkpoint layout.
const STATE_VERSION: u32 = 1;

/// One entry of the job's own transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Item {
    /// The message the job answers (chat text or task prompt).
    User { text: String },
    /// An operator instruction injected before a model call (SPEC §5.6).
    Steering { id: Uuid, text: String },
    /// A model turn, with the calls it made.
    Assistant { text: String, tool_calls: Vec<ToolCall> },
    /// The result of `call_id`, stored in the ledger under `key`.
    ToolResult { call_id: String, key: String },
}

/// Usage and limit counters of the job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Totals {
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    pub llm_calls: u32,
    pub tool_calls: u32,
    pub tool_errors: u32,
    /// Failed model attempts in the current attempt (retries and failovers), for the per-job limit.
    pub llm_retries: u32,
}

/// The answer, once the model gave it; a resumed run only stores and returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct FinalAnswer {
    pub text: String,
    pub stop_reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct LoopState {
    pub version: u32,
    /// The job attempt this state's per-attempt fields (failover position, retry count) belong to.
    pub attempt: u32,
    /// Model calls made so far.
    pub turn: u32,
    /// Failover stickiness: later turns of the attempt start at this candidate (SPEC §5.3).
    pub candidate_index: usize,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub transcript: Vec<Item>,
    pub totals: Totals,
    pub steering_ids: Vec<Uuid>,
    /// The one repair round for malformed tool-call JSON was used (SPEC §5.2).
    pub repair_used: bool,
    /// The context holds tool output or other untrusted content (SPEC §17.6).
    pub untrusted: bool,
    /// The system prompt truncation warning was emitted.
    pub prompt_warned: bool,
    pub final_answer: Option<FinalAnswer>,
    /// Pending calls and their ledger states at checkpoint time, for operators (recomputed on resume).
    #[serde(default)]
    pub pending_calls: Vec<Value>,
}

impl LoopState {
    pub(super) fn fresh(attempt: u32, user_text: &str) -> LoopState {
        LoopState {
            version: STATE_VERSION,
            attempt,
            turn: 0,
            candidate_index: 0,
            provider: None,
            model: None,
            transcript: vec![Item::User { text: user_text.to_owned() }],
            totals: Totals::default(),
            steering_ids: Vec::new(),
            repair_used: false,
            untrusted: false,
            prompt_warned: false,
            final_answer: None,
            pending_calls: Vec::new(),
        }
    }

    /// The state of a job whose checkpoint is missing or corrupt but whose ledger has calls: each recorded
    /// turn becomes an assistant message with its calls, settled calls get their stored results, and calls
    /// still running or waiting stay pending — so completed side effects are honoured, not repeated.
    pub(super) fn rebuild(
        attempt: u32,
        user_text: &str,
        ledger: &[ToolCallRecord],
        wire_name_of: impl Fn(&str) -> String,
    ) -> LoopState {
        let mut state = LoopState::fresh(attempt, user_text);
        let mut turns: BTreeMap<u32, Vec<&ToolCallRecord>> = BTreeMap::new();
        for record in ledger {
            turns.entry(record.turn).or_default().push(record);
        }
        for (turn, records) in turns {
            let tool_calls = records
                .iter()
                .map(|record| ToolCall {
                    id: record.call_id.clone(),
                    name: wire_name_of(&record.tool_ref),
                    arguments: record.input.to_string(),
                })
                .collect();
            state.transcript.push(Item::Assistant { text: String::new(), tool_calls });
            for record in records.iter().filter(|record| record.state.is_settled()) {
                state
                    .transcript
                    .push(Item::ToolResult { call_id: record.call_id.clone(), key: record.call_id.clone() });
                state.untrusted |= super::ledger::StoredOutput::of(record).untrusted;
            }
            state.turn = turn;
        }
        state.totals.tool_calls = ledger.len() as u32;
        state
    }

    /// Resets what belongs to one attempt when a new attempt starts (back to the primary model).
    pub(super) fn begin_attempt(&mut self, attempt: u32) {
        if self.attempt != attempt {
            self.attempt = attempt;
            self.candidate_index = 0;
            self.totals.llm_retries = 0;
        }
    }

    /// Calls of the last assistant message without a result yet, in order.
    pub(super) fn pending_calls(&self) -> Vec<ToolCall> {
        let Some(last) = self.transcript.iter().rposition(|item| matches!(item, Item::Assistant { .. })) else {
            return Vec::new();
        };
        let Item::Assistant { tool_calls, .. } = &self.transcript[last] else { return Vec::new() };
        let answered: Vec<&str> = self.transcript[last..]
            .iter()
            .filter_map(|item| match item {
                Item::ToolResult { call_id, .. } => Some(call_id.as_str()),
                _ => None,
            })
            .collect();
        tool_calls.iter().filter(|call| !answered.contains(&call.id.as_str())).cloned().collect()
    }

    /// The transcript as model messages, tool results read from the ledger.
    pub(super) fn messages(&self, ledger: &HashMap<String, ToolCallRecord>) -> Vec<Message> {
        self.transcript
            .iter()
            .map(|item| match item {
                Item::User { text } => Message::User { text: text.clone() },
                Item::Steering { text, .. } => Message::User { text: steering_text(text) },
                Item::Assistant { text, tool_calls } => {
                    Message::Assistant { text: text.clone(), tool_calls: tool_calls.clone() }
                }
                Item::ToolResult { call_id, key } => {
                    let (content, is_error) = match ledger.get(key) {
                        Some(record) => model_content(record),
                        None => ("the result of this call was lost".to_owned(), true),
                    };
                    Message::ToolResult { call_id: call_id.clone(), content, is_error }
                }
            })
            .collect()
    }

    /// The checkpoint document, with the pending calls' ledger states filled in.
    pub(super) fn checkpoint_value(&self, ledger: &HashMap<String, ToolCallRecord>) -> Value {
        let mut state = self.clone();
        state.pending_calls = self
            .pending_calls()
            .iter()
            .map(|call| {
                let record = ledger.get(&key_for(&call.id, self.turn, ledger));
                json!({"call_id": call.id, "tool": call.name, "state": record.map_or("requested", |r| r.state.as_str())})
            })
            .collect();
        serde_json::to_value(&state).unwrap_or(Value::Null)
    }
}

/// The calls of one message with distinct, non-empty ids: a model (or a compatible server) that repeats or
/// omits ids would otherwise make two calls share one ledger row and one result.
pub(super) fn unique_call_ids(calls: Vec<ToolCall>) -> Vec<ToolCall> {
    let mut seen: Vec<String> = Vec::with_capacity(calls.len());
    calls
        .into_iter()
        .enumerate()
        .map(|(index, mut call)| {
            if call.id.is_empty() {
                call.id = format!("call_{index}");
            }
            let base = call.id.clone();
            let mut n = 1;
            while seen.contains(&call.id) {
                n += 1;
                call.id = format!("{base}-{n}");
            }
            seen.push(call.id.clone());
            call
        })
        .collect()
}

/// How an operator instruction is shown to the model.
pub(super) fn steering_text(instruction: &str) -> String {
    format!("[Operator instruction — from the operator of this agent, not from the user]\n{instruction}")
}

/// The last turn's conversation without tool-call structure: earlier calls and results become plain text, so
/// providers that require tool definitions for tool messages accept a request that offers none.
pub(super) fn flatten_tool_messages(messages: Vec<Message>) -> Vec<Message> {
    messages
        .into_iter()
        .map(|message| match message {
            Message::Assistant { text, tool_calls } if !tool_calls.is_empty() => {
                let calls: Vec<String> = tool_calls
                    .iter()
                    .map(|call| format!("[called tool `{}` with {}]", call.name, call.arguments))
                    .collect();
                let text = if text.is_empty() { calls.join("\n") } else { format!("{text}\n{}", calls.join("\n")) };
                Message::Assistant { text, tool_calls: Vec::new() }
            }
            Message::ToolResult { call_id, content, is_error } => {
                let label = if is_error { "error result" } else { "result" };
                Message::User { text: format!("[{label} of tool call {call_id}]\n{content}") }
            }
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str) -> ToolCall {
        ToolCall { id: id.into(), name: "echo".into(), arguments: "{}".into() }
    }

    #[test]
    fn pending_calls_are_those_without_results() {
        let mut state = LoopState::fresh(1, "hi");
        assert!(state.pending_calls().is_empty());
        state.transcript.push(Item::Assistant { text: String::new(), tool_calls: vec![call("a"), call("b")] });
        state.transcript.push(Item::ToolResult { call_id: "a".into(), key: "a".into() });
        assert_eq!(state.pending_calls(), vec![call("b")]);
        state.transcript.push(Item::ToolResult { call_id: "b".into(), key: "b".into() });
        assert!(state.pending_calls().is_empty());
    }

    #[test]
    fn call_ids_are_made_distinct() {
        let calls = unique_call_ids(vec![call("a"), call("a"), call(""), call("a-2")]);
        let ids: Vec<&str> = calls.iter().map(|call| call.id.as_str()).collect();
        assert_eq!(ids, vec!["a", "a-2", "call_2", "a-2-2"]);
    }

    #[test]
    fn a_new_attempt_returns_to_the_primary() {
        let mut state = LoopState::fresh(1, "hi");
        state.candidate_index = 1;
        state.totals.llm_retries = 4;
        state.begin_attempt(1);
        assert_eq!(state.candidate_index, 1);
        state.begin_attempt(2);
        assert_eq!((state.candidate_index, state.totals.llm_retries), (0, 0));
    }

    #[test]
    fn checkpoints_round_trip() {
        let mut state = LoopState::fresh(1, "hi");
        state.transcript.push(Item::Assistant { text: "x".into(), tool_calls: vec![call("a")] });
        let value = state.checkpoint_value(&HashMap::new());
        assert_eq!(value["pending_calls"][0]["state"], "requested");
        let back: LoopState = serde_json::from_value(value).unwrap();
        assert_eq!(back.transcript, state.transcript);
    }

    #[test]
    fn flattening_removes_tool_structure() {
        let flat = flatten_tool_messages(vec![
            Message::Assistant { text: String::new(), tool_calls: vec![call("a")] },
            Message::ToolResult { call_id: "a".into(), content: "out".into(), is_error: false },
        ]);
        assert!(
            matches!(&flat[0], Message::Assistant { tool_calls, text } if tool_calls.is_empty() && text.contains("echo"))
        );
        assert!(matches!(&flat[1], Message::User { text } if text.contains("out")));
    }
}
