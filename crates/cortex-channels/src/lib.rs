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
//! - [`router`]: recorded inbound message → user → agent → access → session → chat job.
//! - [`approvals`]: the approval notice with its buttons, and acting on presses (SPEC §7.7).
//! - [`access`]: pairing codes, the per-user rate limit and the refusal sentences of the router.
//! - [`delivery`]: the outbox sender of one channel (split, send in order, retry, `delivered` with ids).
//! - [`progress`]: long replies shown while they stream (draft edits, or paragraph chunks on WhatsApp).
//! - [`supervisor`]: runs every enabled channel (receive under a lease, route, deliver), restarts
//!   failed ones with backoff and reloads changed ones.
//! - [`typing`]: the typing indicator renewed while a chat's job is in progress.
//! - [`telegram`]: the Bot API adapter (long polling or webhook).
//! - [`discord`]: the Discord adapter (gateway WebSocket in, REST out).
//! - [`slack`]: the Slack adapter (Socket Mode or the Events API webhook in, Web API out).
//! - [`whatsapp`]: the WhatsApp Cloud API adapter (webhook in, Graph API out).
//! - [`signature`]: HMAC-SHA256 webhook signature checks (Slack, WhatsApp).
//!
//! Dependencies point one way: this crate uses `cortex-core`, `cortex-store` and `cortex-jobs`;
//! `cortex-api` and the binary use it.

pub mod access;
pub mod adapter;
pub mod approvals;
pub mod delivery;
pub mod discord;
pub mod progress;
pub mod router;
pub mod signature;
pub mod sink;
pub mod slack;
pub mod supervisor;
pub mod telegram;
pub mod text;
pub mod types;
pub mod typing;
mod websocket;
pub mod whatsapp;
