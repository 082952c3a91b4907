//! `web_search`: queries the operator's search provider (SPEC §6.2).
//!
//! Two wire formats are supported: the Brave Search API (`GET {url}?q=…&count=…` with
//! `X-Subscription-Token`, results in `web.results[].{title,url,description}`) and a SearXNG JSON endpoint
//! (`GET {url}?q=…&format=json`, results in `results[].{title,url,content}`). The provider is operator
//! configuration, so it is reached directly rather than through the SSRF guard.
//!
//! Environment (see [`web_search_from_env`]):
//! - `CORTEX_SEARCH_API_URL` — the search endpoint. Unset with a key set → Brave's public endpoint.
//! - `CORTEX_SEARCH_API_KEY` — Brave subscription token (required for Brave); for SearXNG, optional and
//!   sent as `Authorization: Bearer …` for instances behind an authenticating proxy.
//! - `CORTEX_SEARCH_PROVIDER` — `brave` or `searxng`. Unset → Brave when the URL path contains
//!   `/res/v1/web/search`, SearXNG otherwise.

use std::fmt;
use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Duration;

use cortex_core::approval::RiskTier;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use super::parse_args;
use crate::http::error_chain;
use crate::{DataScope, Tool, ToolContext, ToolError, ToolOutput};

/// Time allowed for one search (SPEC §19).
pub const SEARCH_TIMEOUT: Duration = Duration::from_secs(15);
/// Selects the provider explicitly (`brave` | `searxng`).
pub const SEARCH_PROVIDER_ENV: &str = "CORTEX_SEARCH_PROVIDER";
/// The search endpoint URL.
pub const SEARCH_URL_ENV: &str = "CORTEX_SEARCH_API_URL";
/// The provider API key.
pub const SEARCH_KEY_ENV: &str = "CORTEX_SEARCH_API_KEY";
const BRAVE_URL: &str = "https://api.search.brave.com/res/v1/web/search";
const BRAVE_PATH: &str = "/res/v1/web/search";
const DEFAULT_COUNT: u64 = 5;
const MAX_COUNT: u64 = 20;

/// The wire format of the search endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchProvider {
    Brave,
    Searxng,
}

impl FromStr for SearchProvider {
    type Err = SearchConfigError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.to_ascii_lowercase().as_str() {
            "brave" => Ok(Self::Brave),
            "searxng" => Ok(Self::Searxng),
            _ => Err(SearchConfigError(format!(
                "{SEARCH_PROVIDER_ENV}: unknown provider `{name}`, expected brave or searxng"
            ))),
        }
    }
}

/// Where and how to search; built from the environment or from a `search` credential.
#[derive(Clone)]
pub struct SearchConfig {
    pub provider: SearchProvider,
    pub url: Url,
    pub api_key: Option<String>,
}

impl fmt::Debug for SearchConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SearchConfig")
            .field("provider", &self.provider)
            .field("url", &self.url.as_str())
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Invalid search configuration; the message names the variable at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SearchConfigError(pub String);

impl SearchConfig {
    /// Checks the combination: an http(s) URL, and a key when the provider is Brave.
    pub fn validate(&self) -> Result<(), SearchConfigError> {
        if !matches!(self.url.scheme(), "http" | "https") || self.url.host().is_none() {
            return Err(SearchConfigError(format!("{SEARCH_URL_ENV}: `{}` is not an http(s) URL", self.url)));
        }
        if self.provider == SearchProvider::Brave && self.api_key.is_none() {
            return Err(SearchConfigError(format!(
                "{SEARCH_KEY_ENV}: the Brave search API needs a subscription token"
            )));
        }
        Ok(())
    }
}

impl SearchConfig {
    /// The configuration of a `search` credential: `name` starting with `brave` or `searxng` picks the
    /// wire format (otherwise the URL decides, as for the environment); `base_url` is the endpoint
    /// (Brave's public one when absent).
    pub fn from_credential(
        name: &str,
        base_url: Option<&str>,
        api_key: Option<String>,
    ) -> Result<SearchConfig, SearchConfigError> {
        let named = if name.starts_with("searxng") {
            Some(SearchProvider::Searxng)
        } else if name.starts_with("brave") {
            Some(SearchProvider::Brave)
        } else {
            None
        };
        let url = match (base_url, named) {
            (Some(url), _) => url.to_owned(),
            (None, None | Some(SearchProvider::Brave)) => BRAVE_URL.to_owned(),
            (None, Some(SearchProvider::Searxng)) => {
                return Err(SearchConfigError("a SearXNG search credential needs its base_url".into()));
            }
        };
        let url = Url::parse(&url).map_err(|error| SearchConfigError(format!("base_url: {error}")))?;
        let provider = named.unwrap_or(if url.path().contains(BRAVE_PATH) {
            SearchProvider::Brave
        } else {
            SearchProvider::Searxng
        });
        let config = SearchConfig { provider, url, api_key };
        config.validate()?;
        Ok(config)
    }
}

/// The `web_search` tool configured by the environment, read through `env` (pass
/// `|name| std::env::var(name).ok()`). `Ok(None)` when search is not configured: the tool is then not
/// registered, and policies naming it are reported unresolvable.
pub fn web_search_from_env(env: impl Fn(&str) -> Option<String>) -> Result<Option<WebSearchTool>, SearchConfigError> {
    let read = |name: &str| env(name).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty());
    let (url, api_key, provider) = (read(SEARCH_URL_ENV), read(SEARCH_KEY_ENV), read(SEARCH_PROVIDER_ENV));
    if url.is_none() && api_key.is_none() {
        return Ok(None);
    }
    let provider = provider.as_deref().map(str::parse).transpose()?;
    let url = match (url, provider) {
        (Some(url), _) => url,
        (None, None | Some(SearchProvider::Brave)) => BRAVE_URL.to_owned(),
        (None, Some(SearchProvider::Searxng)) => {
            return Err(SearchConfigError(format!("{SEARCH_URL_ENV}: required for a SearXNG provider")));
        }
    };
    let url = Url::parse(&url).map_err(|error| SearchConfigError(format!("{SEARCH_URL_ENV}: {error}")))?;
    let provider = provider.unwrap_or(if url.path().contains(BRAVE_PATH) {
        SearchProvider::Brave
    } else {
        SearchProvider::Searxng
    });
    let tool = WebSearchTool::new(SearchConfig { provider, url, api_key })?;
    Ok(Some(tool))
}

/// One normalised search result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SearchResult {
    pub title: String,
    pub url: String,
    pub snippet: String,
}

/// The `web_search` tool.
pub struct WebSearchTool {
    config: SearchConfig,
    client: reqwest::Client,
    schema: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    query: String,
    count: Option<u64>,
}

impl WebSearchTool {
    /// The tool for a validated configuration.
    pub fn new(config: SearchConfig) -> Result<Self, SearchConfigError> {
        config.validate()?;
        let client = cortex_tls::client_builder()
            .timeout(SEARCH_TIMEOUT)
            .user_agent(concat!("cortex-plane/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| SearchConfigError(format!("cannot build the search HTTP client: {error}")))?;
        let schema = json!({
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "description": "What to search the web for."},
                "count": {"type": "integer", "minimum": 1, "maximum": MAX_COUNT, "description": "Number of results (default 5)."}
            },
            "required": ["query"],
            "additionalProperties": false
        });
        Ok(Self { config, client, schema })
    }

    /// The provider in use.
    pub fn provider(&self) -> SearchProvider {
        self.config.provider
    }

    async fn search(&self, query: &str, count: u64) -> Result<Vec<SearchResult>, ToolError> {
        let mut url = self.config.url.clone();
        url.query_pairs_mut().append_pair("q", query);
        let mut request = match self.config.provider {
            SearchProvider::Brave => {
                url.query_pairs_mut().append_pair("count", &count.to_string());
                self.client.get(url).header("accept", "application/json")
            }
            SearchProvider::Searxng => {
                url.query_pairs_mut().append_pair("format", "json");
                self.client.get(url)
            }
        };
        if let Some(key) = &self.config.api_key {
            request = match self.config.provider {
                SearchProvider::Brave => request.header("x-subscription-token", key),
                SearchProvider::Searxng => request.bearer_auth(key),
            };
        }
        let response = request.send().await.map_err(provider_error)?;
        let status = response.status();
        let body = response.text().await.map_err(provider_error)?;
        if !status.is_success() {
            let excerpt: String = self.redact(&body).chars().take(300).collect();
            return Err(ToolError::Failed(format!("the search provider answered HTTP {status}: {excerpt}")));
        }
        let invalid = |error: serde_json::Error| {
            ToolError::Failed(format!("the search provider returned an unexpected response: {error}"))
        };
        let results = match self.config.provider {
            SearchProvider::Brave => {
                let parsed: BraveResponse = serde_json::from_str(&body).map_err(invalid)?;
                parsed
                    .web
                    .map(|web| web.results)
                    .unwrap_or_default()
                    .into_iter()
                    .map(Hit::normalise)
                    .collect::<Vec<_>>()
            }
            SearchProvider::Searxng => {
                let parsed: SearxngResponse = serde_json::from_str(&body).map_err(invalid)?;
                parsed.results.into_iter().map(Hit::normalise).collect()
            }
        };
        Ok(results.into_iter().filter(|result| !result.url.is_empty()).take(count as usize).collect())
    }

    fn redact(&self, text: &str) -> String {
        match &self.config.api_key {
            Some(key) => text.replace(key.as_str(), "<redacted>"),
            None => text.to_owned(),
        }
    }
}

fn provider_error(error: reqwest::Error) -> ToolError {
    if error.is_timeout() {
        return ToolError::Timeout;
    }
    ToolError::Failed(format!("the search provider could not be reached: {}", error_chain(&error.without_url())))
}

#[derive(Deserialize)]
struct BraveResponse {
    web: Option<BraveWeb>,
}

#[derive(Deserialize)]
struct BraveWeb {
    #[serde(default)]
    results: Vec<Hit>,
}

#[derive(Deserialize)]
struct SearxngResponse {
    #[serde(default)]
    results: Vec<Hit>,
}

/// A result in either wire format: Brave calls the snippet `description`, SearXNG `content`.
#[derive(Deserialize)]
struct Hit {
    title: Option<String>,
    url: Option<String>,
    description: Option<String>,
    content: Option<String>,
}

impl Hit {
    fn normalise(self) -> SearchResult {
        SearchResult {
            title: self.title.unwrap_or_default(),
            url: self.url.unwrap_or_default(),
            snippet: self.description.or(self.content).unwrap_or_default(),
        }
    }
}

fn render(results: &[SearchResult]) -> String {
    if results.is_empty() {
        return "No results.".to_owned();
    }
    let mut text = String::new();
    for (idx, result) in results.iter().enumerate() {
        let _ = write!(text, "{}. {}\n   {}\n   {}\n\n", idx + 1, result.title, result.url, result.snippet);
    }
    text.trim_end().to_owned()
}

#[async_trait::async_trait]
impl Tool for WebSearchTool {
    fn tool_ref(&self) -> &str {
        "web_search"
    }

    fn description(&self) -> &str {
        "Searches the web and returns a list of results with title, URL and snippet."
    }

    fn input_schema(&self) -> &Value {
        &self.schema
    }

    fn default_risk(&self, _input: &Value) -> RiskTier {
        RiskTier::P3
    }

    fn is_idempotent(&self, _input: &Value) -> bool {
        true
    }

    /// The query goes to the operator's own search provider (configuration, not an agent's choice).
    fn sends_data_out(&self, _input: &Value, _scope: &DataScope) -> bool {
        false
    }

    async fn call(&self, input: Value, ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let args: Args = parse_args(input)?;
        let query = args.query.trim();
        if query.is_empty() {
            return Err(ToolError::InvalidArguments("query must not be empty".into()));
        }
        let count = args.count.unwrap_or(DEFAULT_COUNT);
        if !(1..=MAX_COUNT).contains(&count) {
            return Err(ToolError::InvalidArguments(format!("count must be between 1 and {MAX_COUNT}")));
        }
        let results = tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => return Err(ToolError::Cancelled),
            results = self.search(query, count) => results?,
        };
        Ok(ToolOutput::ok(render(&results), json!(results)))
    }
}
