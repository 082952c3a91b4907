//! Client subcommands: talk to a running server over its HTTP API (SPEC §2.1).
//!
//! Exit codes: 0 success, 1 the server refused or the job failed, 2 usage errors, 3 a job waits for an
//! approval, 4 the server is unreachable.

pub mod agent;
pub mod approvals;
pub mod chat;
pub mod credentials;
pub mod jobs;
mod output;

use anyhow::anyhow;
use clap::Args;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Connection settings shared by every client subcommand.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server base URL.
    #[arg(long, env = "CORTEX_URL", default_value = "http://127.0.0.1:4000", global = true)]
    pub url: String,
    /// Print the raw JSON returned by the server.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A failure of a client command, carrying its exit code.
#[derive(Debug)]
pub struct ClientError {
    pub exit_code: u8,
    pub message: String,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ClientError {}

fn fail(exit_code: u8, message: impl Into<String>) -> anyhow::Error {
    anyhow!(ClientError { exit_code, message: message.into() })
}

/// Thin JSON client for the API.
pub struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
    pub json: bool,
}

impl Api {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let key = std::env::var("CORTEX_API_KEY")
            .ok()
            .filter(|key| !key.is_empty())
            .ok_or_else(|| fail(2, "set CORTEX_API_KEY to an API key of the server"))?;
        let base = args.url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(fail(2, format!("--url/CORTEX_URL must be an http(s) URL, got `{base}`")));
        }
        let http =
            cortex_tls::client_builder().build().map_err(|err| fail(1, format!("cannot build HTTP client: {err}")))?;
        Ok(Self { http, base, key, json: args.json })
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key)
    }

    /// Sends a request and decodes the JSON answer; HTTP errors become exit code 1 with the server's
    /// message, connection failures exit code 4.
    pub async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let response = request.send().await.map_err(|err| self.unreachable(err))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|err| self.unreachable(err))?;
        if !status.is_success() {
            return Err(fail(1, describe_error(status, &body)));
        }
        let body = if body.is_empty() { &b"null"[..] } else { &body[..] };
        serde_json::from_slice(body).map_err(|err| fail(1, format!("unexpected response from the server: {err}")))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(Method::GET, path)).await
    }

    /// Every item of the list at `path`, following `next_cursor` page by page; answers
    /// `{"items": [...], "next_cursor": null}` like one page holding everything.
    pub async fn get_all(&self, path: &str) -> anyhow::Result<Value> {
        let path = format!("{path}{}limit=200", if path.contains('?') { '&' } else { '?' });
        let mut items = Vec::new();
        let mut next = path.clone();
        loop {
            let mut page: Value = self.get(&next).await?;
            if let Some(page_items) = page["items"].as_array_mut() {
                items.append(page_items);
            }
            match page["next_cursor"].as_str() {
                Some(cursor) => next = format!("{path}&cursor={cursor}"),
                None => return Ok(serde_json::json!({"items": items, "next_cursor": null})),
            }
        }
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> anyhow::Result<T> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub fn unreachable(&self, err: reqwest::Error) -> anyhow::Error {
        if err.is_connect() || err.is_timeout() {
            fail(4, format!("cannot reach the server at {} ({err}); is `cortex serve` running?", self.base))
        } else {
            fail(4, format!("connection to {} failed: {err}", self.base))
        }
    }

    /// Prints `value` as JSON when `--json`, else with `human`.
    pub fn print(&self, value: &Value, human: impl FnOnce(&Value) -> String) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
        } else {
            println!("{}", human(value));
        }
    }
}

fn describe_error(status: StatusCode, body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => {
            let code = value["error"]["code"].as_str().unwrap_or("error");
            let message = value["error"]["message"].as_str().unwrap_or("");
            format!("{} {code}: {}", status.as_u16(), output::escape(message, true))
        }
        Err(_) => format!("{status}"),
    }
}
