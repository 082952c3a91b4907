//! Provider sign-in (issue 15): the HTTP half of the authorization-code flows with PKCE that providers
//! document for third-party applications. Building the authorization URL, exchanging the code and
//! refreshing tokens; storage, `state` and scheduling live in the runtime.
//!
//! Two flows:
//! - [`Flow::OpenRouter`]: OpenRouter's PKCE flow (<https://openrouter.ai/docs/guides/overview/auth/oauth>):
//!   `GET {base}/auth?callback_url&code_challenge&code_challenge_method=S256`, then
//!   `POST {base}/api/v1/auth/keys {code, code_verifier, code_challenge_method}` → `{key}`. No client id;
//!   the result is a long-lived, user-controlled API key (no expiry, no refresh token).
//! - [`Flow::OAuth2`]: plain RFC 6749 §4.1 + RFC 7636 with an operator-registered client id (form-encoded
//!   token endpoint, `refresh_token` grant when the provider issues refresh tokens).
//!
//! Errors never quote a code, verifier or token.

use std::time::Duration;

use serde::Deserialize;

use crate::error::LlmError;

/// Longest a token endpoint may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// How one provider signs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    /// OpenRouter's PKCE key exchange; `base` is `https://openrouter.ai` unless overridden.
    OpenRouter { base: String },
    /// Authorization code with PKCE against configurable endpoints.
    OAuth2 { authorize_url: String, token_url: String, client_id: String, scopes: Option<String> },
}

/// What a successful exchange or refresh yields.
#[derive(Clone, PartialEq, Eq)]
pub struct Tokens {
    /// The key or access token calls carry.
    pub secret: String,
    pub refresh_token: Option<String>,
    /// Seconds the secret stays valid, when the provider says.
    pub expires_in: Option<u64>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("secret", &"[redacted]")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "[redacted]"))
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

impl Flow {
    /// The URL the user opens to authorize.
    pub fn authorize_url(&self, callback_url: &str, state: &str, challenge: &str) -> Result<String, LlmError> {
        let (base, mut pairs): (String, Vec<(&str, &str)>) = match self {
            Flow::OpenRouter { base } => (
                format!("{}/auth", base.trim_end_matches('/')),
                vec![("callback_url", callback_url), ("code_challenge", challenge), ("code_challenge_method", "S256")],
            ),
            Flow::OAuth2 { authorize_url, client_id, scopes, .. } => {
                let mut pairs = vec![
                    ("response_type", "code"),
                    ("client_id", client_id.as_str()),
                    ("redirect_uri", callback_url),
                    ("state", state),
                    ("code_challenge", challenge),
                    ("code_challenge_method", "S256"),
                ];
                if let Some(scopes) = scopes {
                    pairs.push(("scope", scopes.as_str()));
                }
                (authorize_url.clone(), pairs)
            }
        };
        // OpenRouter echoes the callback URL untouched, so `state` travels inside it.
        let callback_with_state;
        if let Flow::OpenRouter { .. } = self {
            let mut callback = url::Url::parse(callback_url).map_err(|err| invalid(format!("callback URL: {err}")))?;
            callback.query_pairs_mut().append_pair("state", state);
            callback_with_state = callback.to_string();
            pairs[0].1 = callback_with_state.as_str();
        }
        let mut url = url::Url::parse(&base).map_err(|err| invalid(format!("authorization URL: {err}")))?;
        url.query_pairs_mut().extend_pairs(pairs);
        Ok(url.to_string())
    }

    /// Trades the authorization code for a key or tokens.
    pub async fn exchange(
        &self,
        http: &reqwest::Client,
        code: &str,
        verifier: &str,
        callback_url: &str,
    ) -> Result<Tokens, LlmError> {
        match self {
            Flow::OpenRouter { base } => {
                let url = format!("{}/api/v1/auth/keys", base.trim_end_matches('/'));
                let body =
                    serde_json::json!({"code": code, "code_verifier": verifier, "code_challenge_method": "S256"});
                let request = http.post(url).json(&body);
                let answer: KeyAnswer = send(request).await?;
                Ok(Tokens { secret: answer.key, refresh_token: None, expires_in: None })
            }
            Flow::OAuth2 { token_url, client_id, .. } => {
                let form = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "authorization_code")
                    .append_pair("code", code)
                    .append_pair("redirect_uri", callback_url)
                    .append_pair("client_id", client_id)
                    .append_pair("code_verifier", verifier)
                    .finish();
                token_request(http, token_url, form).await
            }
        }
    }

    /// Uses a refresh token (OAuth2 flows only; OpenRouter keys do not expire).
    pub async fn refresh(&self, http: &reqwest::Client, refresh_token: &str) -> Result<Tokens, LlmError> {
        match self {
            Flow::OpenRouter { .. } => Err(invalid("OpenRouter keys are not refreshed".into())),
            Flow::OAuth2 { token_url, client_id, .. } => {
                let form = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", refresh_token)
                    .append_pair("client_id", client_id)
                    .finish();
                let mut tokens = token_request(http, token_url, form).await?;
                // RFC 6749 §6: a response without a new refresh token keeps the old one valid.
                tokens.refresh_token.get_or_insert_with(|| refresh_token.to_owned());
                Ok(tokens)
            }
        }
    }
}

#[derive(Deserialize)]
struct KeyAnswer {
    key: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    refresh_token: Option<String>,
    expires_in: Option<u64>,
}

async fn token_request(http: &reqwest::Client, token_url: &str, form: String) -> Result<Tokens, LlmError> {
    let request = http
        .post(token_url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(reqwest::header::ACCEPT, "application/json")
        .body(form);
    let answer: TokenAnswer = send(request).await?;
    Ok(Tokens { secret: answer.access_token, refresh_token: answer.refresh_token, expires_in: answer.expires_in })
}

/// Sends and decodes; a refusal keeps only the provider's `error` code (RFC 6749 §5.2), never the body,
/// which may echo what was sent.
async fn send<T: serde::de::DeserializeOwned>(request: reqwest::RequestBuilder) -> Result<T, LlmError> {
    let response = match tokio::time::timeout(TIMEOUT, request.send()).await {
        Ok(Ok(response)) => response,
        Ok(Err(err)) => {
            return Err(LlmError::transient("sign_in_unreachable", format!("token endpoint: {}", err.without_url())));
        }
        Err(_) => return Err(LlmError::transient("timeout", "the token endpoint did not answer in time")),
    };
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|err| LlmError::transient("sign_in_unreachable", format!("token endpoint: {}", err.without_url())))?;
    if !status.is_success() {
        let code = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|value| value.get("error").and_then(|e| e.as_str().map(str::to_owned)))
            .filter(|code| code.len() <= 64 && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or_else(|| "refused".into());
        return Err(LlmError::Auth {
            status: status.as_u16(),
            message: format!("the provider refused the sign-in ({code})"),
        });
    }
    serde_json::from_slice(&body).map_err(|_| invalid("the token endpoint answered something unexpected".into()))
}

fn invalid(message: String) -> LlmError {
    LlmError::Rejected { status: 0, code: "sign_in_failed", message }
}
