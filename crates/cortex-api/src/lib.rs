//! The HTTP API of Cortex Plane (SPEC §2).
//!
//! Architecture invariants:
//! - This is the only crate that knows HTTP status codes; every error leaves through
//!   [`error::ApiError`] and its code table.
//! - Handlers enqueue work and read state; they never call a model inline (the job engine does).
//! - Every route is declared with `utoipa` and registered through [`guard::Routes`] with its minimum role,
//!   so `/openapi.json` lists exactly the routes that exist with the role each needs, and tests walk it to
//!   prove none is reachable without credentials or below its role.

pub mod auth;
pub mod error;
pub mod extract;
pub mod guard;
pub mod limits;
pub mod login;
pub mod mcp_sync;
pub mod metrics;
pub mod middleware;
mod openapi;
pub mod rate_limit;
mod routes;
pub mod server;
mod sse;
pub mod sse_hub;
pub mod state;
pub mod views;

pub use state::{ApiConfig, AppState, Readiness};

use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;

/// Builds the full application: routes, the (lazily built) OpenAPI document, authentication and request
/// plumbing.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.body_limit;
    let (api, document) = routes::health::routes()
        .merge(routes::agents::routes())
        .merge(routes::agent_health::routes())
        .merge(routes::sessions::routes())
        .merge(routes::jobs::routes())
        .merge(routes::keys::routes())
        .merge(routes::approvals::routes())
        .merge(routes::chat::routes())
        .merge(routes::channels::routes())
        .merge(routes::channel_access::routes())
        .merge(routes::steer::routes())
        .merge(routes::mcp::routes())
        .merge(routes::tools::routes())
        .merge(routes::memory::routes())
        .merge(routes::credentials::routes())
        .merge(routes::providers::routes())
        .merge(routes::docs::routes())
        .merge(routes::auth::routes())
        .merge(routes::login::routes())
        .merge(routes::users::routes())
        .build(&state);
    let document: routes::docs::Document = std::sync::Arc::new(routes::docs::LazyDocument::new(document));
    // The last layer added runs first: request context → JSON error bodies → ops reserve → oversized
    // bodies → body limit → authentication.
    api.merge(routes::ui::router(&state))
        .fallback(middleware::not_found)
        .layer(axum::Extension(document))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(axum::middleware::from_fn_with_state(body_limit, middleware::oversized_bodies))
        .layer(axum::middleware::from_fn(middleware::ops_reserve))
        .layer(axum::middleware::from_fn(middleware::json_errors))
        .layer(axum::middleware::from_fn(middleware::request_context))
        .with_state(state)
}
