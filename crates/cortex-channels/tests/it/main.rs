//! Adapters against in-process fakes speaking each platform's real wire protocol, recording through the
//! store-backed sink on both engines; the router (with its access control) and outbox delivery over the
//! same store.

mod access;
mod approval_notify;
mod approvals;
mod attachments;
mod delivery;
mod discord;
mod progress;
mod router;
mod slack;
mod support;
mod telegram;
mod typing;
mod whatsapp;
