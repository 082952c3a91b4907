//! Built-in tools that need no database: `echo`, `http_request`, `web_search` (SPEC §6.2).

mod echo;
mod http_request;
mod web_search;

pub use echo::EchoTool;
pub use http_request::HttpRequestTool;
pub use web_search::{
    SEARCH_KEY_ENV, SEARCH_PROVIDER_ENV, SEARCH_URL_ENV, SearchConfig, SearchConfigError, SearchProvider,
    WebSearchTool, web_search_from_env,
};

use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::http::GuardedHttp;
use crate::{Tool, ToolError};

/// The built-in tools of this crate for registration: `echo`, `http_request` and, when search is
/// configured, `web_search`.
pub fn builtin_tools(http: Arc<GuardedHttp>, search: Option<WebSearchTool>) -> Vec<Arc<dyn Tool>> {
    let mut tools: Vec<Arc<dyn Tool>> = vec![Arc::new(EchoTool::new()), Arc::new(HttpRequestTool::new(http))];
    if let Some(search) = search {
        tools.push(Arc::new(search));
    }
    tools
}

/// Parses arguments into a tool's typed input; mismatches become [`ToolError::InvalidArguments`].
fn parse_args<T: DeserializeOwned>(input: serde_json::Value) -> Result<T, ToolError> {
    serde_json::from_value(input).map_err(|error| ToolError::InvalidArguments(error.to_string()))
}
