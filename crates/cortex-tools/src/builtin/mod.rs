//! Built-in tools that need no database: `echo`, `http_request`, `web_search` (SPEC §6.2). The runtime
//! registers them, with its store-backed built-ins, in its one catalogue.

mod echo;
mod http_request;
mod web_search;

pub use echo::EchoTool;
pub use http_request::HttpRequestTool;
pub use web_search::{
    SEARCH_KEY_ENV, SEARCH_PROVIDER_ENV, SEARCH_URL_ENV, SearchConfig, SearchConfigError, SearchProvider,
    WebSearchTool, web_search_from_env,
};

use serde::de::DeserializeOwned;

use crate::ToolError;

/// Parses arguments into a tool's typed input; mismatches become [`ToolError::InvalidArguments`].
fn parse_args<T: DeserializeOwned>(input: serde_json::Value) -> Result<T, ToolError> {
    serde_json::from_value(input).map_err(|error| ToolError::InvalidArguments(error.to_string()))
}
