//! Chat-platform channels (SPEC §8): one adapter contract, the platform adapters, and the pure text
//! functions they share.
//!
//! - [`adapter`]: the [`adapter::ChannelAdapter`] contract and the [`adapter::InboundSink`] adapters
//!   deliver into. Adapters do no SQL: they speak their platform's wire protocol and persist only
//!   through the sink, whose `deliver` returns once the event is recorded.
//! - [`types`]: normalised inbound events and outbound messages.
//! - [`text`]: splitting at paragraph/line/sentence/word boundaries with balanced code fences, and
//!   per-platform escaping/rendering.
//! - [`sink`]: the store-backed sink (inbound dedupe log, cursors, liveness).
//! - [`telegram`]: the Bot API adapter (long polling or webhook).
//!
//! Dependencies point one way: this crate uses `cortex-core` and `cortex-store`; `cortex-api` and the
//! binary use it.

pub mod adapter;
pub mod sink;
pub mod telegram;
pub mod text;
pub mod types;
