//! Model provider clients for Cortex Plane (SPEC §5.2, §5.3, §5.8): our own thin clients for the two wire
//! styles that cover every supported back-end, with streaming, tool use, timeouts, error classification,
//! failover with per-(provider, model) circuit breakers, and the model catalogue with prices.
//!
//! # Layout
//! - [`types`]: the provider-neutral vocabulary (`Message`, `ChatRequest`, `Completion`, `StreamEvent`) and
//!   the [`LlmProvider`] trait the runtime calls.
//! - [`error`]: [`LlmError`] and its job error class and code.
//! - `classify`: HTTP statuses, error bodies and `Retry-After` → [`LlmError`] (shared by both styles).
//! - `sse`: the byte-level Server-Sent Events parser (shared by both styles).
//! - `client`: the reqwest half — timeouts, transport errors, SSE pumping, metrics, tracing.
//! - `accumulate`: turns decoded pieces into a `Completion` while forwarding `StreamEvent`s.
//! - `openai`, `anthropic`: request shape and response/stream decoding of each wire style.
//! - [`catalogue`]: known models, limits and prices; cost computation.
//! - [`presets`]: the named back-ends (base URL, wire and auth style, catalogue entries).
//! - [`signin`]: provider sign-in (authorization code with PKCE): URLs, code exchange, token refresh.
//! - [`failover`]: the candidate loop with retries and breakers.
//!
//! Architecture invariant: only `client` (model calls) and `signin` (token endpoints) touch reqwest,
//! and no secret (API key) ever reaches a log line,
//! a metric label, an error message or a `Debug` output.

mod accumulate;
mod anthropic;
pub mod catalogue;
mod classify;
mod client;
pub mod error;
pub mod failover;
mod openai;
pub mod presets;
pub mod signin;
mod sse;
pub mod types;

use std::sync::Arc;

pub use catalogue::{ModelInfo, ModelPrice, PriceOverrides, cost_usd, lookup};
pub use classify::parse_retry_after;
pub use error::LlmError;
pub use failover::{FailoverClient, FailoverObserver, NoopObserver, RetryPolicy, Served};
pub use openai::versioned_base;
pub use types::{
    ApiStyle, ChatRequest, Completion, LlmProvider, Message, ProviderConfig, StopReason, StreamEvent, ToolCall,
    ToolSpec, Usage,
};

/// Asks a provider which models it serves (`GET {base}/models` in the OpenAI style, `GET {base}/v1/models`
/// in the Anthropic style), for listings; the key never appears in an error.
pub async fn list_models(config: &ProviderConfig, http: &reqwest::Client) -> Result<Vec<String>, LlmError> {
    match config.api_style {
        ApiStyle::OpenAi => client::list_models(&openai::OpenAi, config, http).await,
        ApiStyle::Anthropic => client::list_models(&anthropic::Anthropic, config, http).await,
    }
}

/// Builds the client for one configured provider. The reqwest client is shared by all providers so they
/// share connection pools; it needs a rustls crypto provider installed (ring, STACK §2.3).
pub fn build_provider(config: ProviderConfig, http: reqwest::Client) -> Arc<dyn LlmProvider> {
    match config.api_style {
        ApiStyle::OpenAi => Arc::new(client::HttpProvider::new(openai::OpenAi, config, http)),
        ApiStyle::Anthropic => Arc::new(client::HttpProvider::new(anthropic::Anthropic, config, http)),
    }
}
