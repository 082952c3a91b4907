//! Adapters against in-process fakes speaking each platform's real wire protocol, recording through the
//! store-backed sink on both engines.

mod support;
mod telegram;
