//! `llm.delta` events (SPEC §4.11): streamed text is coalesced — flushed every 100 ms or 512 characters —
//! before it is stored, so a fast stream costs a handful of writes instead of one per token.
//!
//! The model call forwards [`StreamEvent`]s into a channel; [`forward`] drains it until the call ends (the
//! sender is dropped), writing one event per flush. Text still pending when the call ends is returned
//! instead of written, so the caller stores it in the transaction that records the call (one write less
//! per call, and the last delta lands right before `llm.message`). A [`StreamEvent::Reset`] (the failover client started
//! over) drops unflushed text and stores a `{"reset": true}` delta telling viewers to discard what they
//! showed. Text passes through the process's secret redactor as a stream ([`StreamRedactor`]): the tail
//! that could still be the start of a secret waits for the next piece, so no secret is stored split
//! across two deltas. Deltas are a live view only — `llm.message` carries the full text — so a failed write is logged,
//! not fatal.

use std::time::Duration;

use cortex_core::event::{Actor, EventType};
use cortex_core::redact::StreamRedactor;
use cortex_llm::StreamEvent;
use cortex_store::Store;
use cortex_store::events::NewEvent;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use uuid::Uuid;

/// Longest time streamed text waits before it is stored.
const FLUSH_AFTER: Duration = Duration::from_millis(100);
/// Characters that trigger a flush at once.
const FLUSH_CHARS: usize = 512;

/// Where deltas of one model call go.
pub(super) struct DeltaSink {
    pub store: Store,
    pub agent_id: Uuid,
    pub job_id: Uuid,
    pub session_id: Option<Uuid>,
    pub turn: u32,
    /// Removes secrets before anything is stored.
    pub redactor: StreamRedactor,
}

impl DeltaSink {
    async fn write(&self, payload: Value) {
        let event = NewEvent {
            session_id: self.session_id,
            actor: Actor::Agent,
            ..NewEvent::new(self.agent_id, Some(self.job_id), EventType::LlmDelta, payload)
        };
        let result = async {
            let mut tx = self.store.begin().await?;
            tx.emit(event);
            tx.commit().await
        }
        .await;
        if let Err(err) = result {
            tracing::warn!(error = %err, "could not store a streamed delta");
        }
    }
}

/// Text waiting to be flushed.
struct Pending {
    text: String,
    chars: usize,
    since: Option<Instant>,
}

impl Pending {
    fn take(&mut self) -> Option<String> {
        self.since = None;
        self.chars = 0;
        (!self.text.is_empty()).then(|| std::mem::take(&mut self.text))
    }
}

/// Drains `events` into coalesced `llm.delta` events until the sender is dropped; returns the text not yet
/// written.
pub(super) async fn forward(mut sink: DeltaSink, mut events: UnboundedReceiver<StreamEvent>) -> Option<String> {
    let mut pending = Pending { text: String::new(), chars: 0, since: None };
    loop {
        let deadline = pending.since.map(|since| since + FLUSH_AFTER);
        let event = tokio::select! {
            event = events.recv() => event,
            () = sleep_until(deadline) => {
                if let Some(text) = pending.take() {
                    sink.write(json!({"turn": sink.turn, "text": text})).await;
                }
                continue;
            }
        };
        match event {
            Some(StreamEvent::TextDelta(text)) => {
                let text = sink.redactor.push(&text);
                pending.chars += text.chars().count();
                pending.text.push_str(&text);
                pending.since.get_or_insert_with(Instant::now);
                if pending.chars >= FLUSH_CHARS
                    && let Some(text) = pending.take()
                {
                    sink.write(json!({"turn": sink.turn, "text": text})).await;
                }
            }
            Some(StreamEvent::Reset) => {
                pending.take();
                sink.redactor.reset();
                sink.write(json!({"turn": sink.turn, "reset": true})).await;
            }
            Some(_) => {}
            None => {
                let rest = sink.redactor.finish();
                pending.text.push_str(&rest);
                return pending.take();
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
