//! Provider sign-in (issue 15): authorization code with PKCE for providers that document such a flow for
//! third-party applications, plus the code-paste variant for headless servers.
//!
//! Which providers: of the presets only **OpenRouter** documents one (its PKCE flow hands the app a
//! user-controlled API key; no client registration, no expiry). OpenAI, Anthropic, Groq, Mistral and
//! DeepSeek issue API keys from their consoles only; their subscription logins (ChatGPT, Claude) are not
//! offered to third parties (SPEC §0 keeps them a non-goal). Google's Gemini API documents OAuth only with
//! a client the operator registers in their own Google Cloud project; that, and any other standard
//! provider, is served by the generic flow, configured per provider:
//! `CORTEX_PROVIDER_SIGNIN_<NAME>_AUTHORIZE_URL`, `_TOKEN_URL`, `_CLIENT_ID` (all three) and `_SCOPES`.
//! OpenRouter's endpoints move with `CORTEX_PROVIDER_SIGNIN_OPENROUTER_URL` (default
//! `https://openrouter.ai`).
//!
//! A sign-in is a `provider_sign_in` row (random `state`, encrypted verifier, 10 minutes, single use).
//! Completing it, through the browser callback or by pasting the code, stores the key or token as an
//! `llm` credential (encrypted, with its refresh token and expiry). Tokens that expire are refreshed by
//! [`crate::providers::Providers::sync`] before the run that needs them, five minutes ahead; revoking is
//! deleting or disabling the credential.

use std::collections::BTreeMap;

use cortex_core::Timestamp;
use cortex_llm::LlmError;
use cortex_llm::signin::{Flow, Tokens};
use cortex_store::StoreError;
use cortex_store::credentials::{SignInState, SignedIn, refresh_ref, secret_hint, secret_ref, verifier_ref};
use uuid::Uuid;

use crate::RuntimeError;
use crate::providers::{LLM_KIND, Providers};

/// How long a started sign-in may be completed.
pub const SIGN_IN_TTL: chrono::Duration = chrono::Duration::minutes(10);
/// Tokens are refreshed when they expire within this.
pub const REFRESH_AHEAD: chrono::Duration = chrono::Duration::minutes(5);

const ENV_PREFIX: &str = "CORTEX_PROVIDER_SIGNIN_";
const OPENROUTER_URL_ENV: &str = "CORTEX_PROVIDER_SIGNIN_OPENROUTER_URL";
const OPENROUTER_DEFAULT_URL: &str = "https://openrouter.ai";

/// The sign-in flows of this deployment, by provider name.
#[derive(Debug, Clone, Default)]
pub(crate) struct SignInFlows(BTreeMap<String, Flow>);

impl SignInFlows {
    /// OpenRouter always, plus every fully configured generic flow; a half-configured one is an error
    /// naming the missing variable.
    pub(crate) fn from_env(env: &BTreeMap<String, String>) -> Result<SignInFlows, RuntimeError> {
        let read = |name: &str| env.get(name).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty());
        let mut flows = BTreeMap::new();
        let base = read(OPENROUTER_URL_ENV).unwrap_or_else(|| OPENROUTER_DEFAULT_URL.to_owned());
        check_url(OPENROUTER_URL_ENV, &base)?;
        flows.insert("openrouter".to_owned(), Flow::OpenRouter { base });
        for key in env.keys() {
            let Some(upper) = key.strip_prefix(ENV_PREFIX).and_then(|rest| rest.strip_suffix("_AUTHORIZE_URL")) else {
                continue;
            };
            let var = |suffix: &str| format!("{ENV_PREFIX}{upper}_{suffix}");
            let required = |suffix: &str| {
                read(&var(suffix)).ok_or_else(|| RuntimeError::InvalidEnv {
                    var: "CORTEX_PROVIDER_SIGNIN_*",
                    reason: format!("{} is required with {key}", var(suffix)),
                })
            };
            let authorize_url = required("AUTHORIZE_URL")?;
            let token_url = required("TOKEN_URL")?;
            for url in [&authorize_url, &token_url] {
                check_url("CORTEX_PROVIDER_SIGNIN_*", url)?;
            }
            let name = upper.to_ascii_lowercase().replace('_', "-");
            let flow = Flow::OAuth2 {
                authorize_url,
                token_url,
                client_id: required("CLIENT_ID")?,
                scopes: read(&var("SCOPES")),
            };
            flows.insert(name, flow);
        }
        Ok(SignInFlows(flows))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Flow> {
        self.0.get(name)
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
}

fn check_url(var: &'static str, value: &str) -> Result<(), RuntimeError> {
    let valid =
        url::Url::parse(value).is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some());
    if valid {
        Ok(())
    } else {
        Err(RuntimeError::InvalidEnv {
            var,
            reason: format!("`{value}` must be an http:// or https:// URL with a host"),
        })
    }
}

/// Why a sign-in cannot start or complete.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("provider `{name}` offers no sign-in here; available: {}", known.join(", "))]
    UnknownFlow { name: String, known: Vec<String> },
    #[error("{0}")]
    Invalid(String),
    #[error("no sign-in is waiting for this state (unknown, already completed, or started elsewhere)")]
    NotFound,
    #[error("the sign-in expired; start it again")]
    Expired,
    #[error("credential `{0}` comes from the environment; sign in under another name")]
    EnvCredential(String),
    #[error("{0}")]
    Provider(LlmError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A started sign-in: send the user to `authorize_url`.
#[derive(Debug, Clone)]
pub struct Started {
    pub authorize_url: String,
    pub state: String,
    pub expires_at: Timestamp,
}

/// What [`Providers::start_sign_in`] needs.
pub struct SignInRequest<'a> {
    pub provider: &'a str,
    /// Where the provider sends the browser back (`…?code=…&state=…`); for the code-paste variant any
    /// URL whose address bar the user can copy the code from.
    pub callback_url: &'a str,
    /// The credential to store the result as (default: the provider's name).
    pub credential_name: Option<&'a str>,
    /// Base URL of model calls (default: the preset's).
    pub base_url: Option<&'a str>,
}

impl Providers {
    pub(crate) fn sign_in_flows(&self) -> Vec<String> {
        self.flows.names()
    }

    pub(crate) async fn start_sign_in(&self, request: &SignInRequest<'_>) -> Result<Started, SignInError> {
        let flow = self
            .flows
            .get(request.provider)
            .ok_or_else(|| SignInError::UnknownFlow { name: request.provider.to_owned(), known: self.flows.names() })?;
        let callback = url::Url::parse(request.callback_url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
            .ok_or_else(|| SignInError::Invalid("callback_url must be an http:// or https:// URL".into()))?;
        let id = cortex_core::new_id();
        let verifier = cortex_core::pkce::verifier();
        let state = cortex_core::pkce::state();
        let authorize_url = flow
            .authorize_url(callback.as_str(), &state, &cortex_core::pkce::challenge(&verifier))
            .map_err(SignInError::Provider)?;
        let expires_at = self.store.clock().now() + SIGN_IN_TTL;
        let row = SignInState {
            id,
            state: state.clone(),
            provider: request.provider.to_owned(),
            credential_name: request.credential_name.unwrap_or(request.provider).to_owned(),
            verifier_enc: self.cipher.encrypt(&verifier_ref(id), verifier.as_bytes()),
            callback_url: callback.to_string(),
            base_url: request.base_url.map(str::to_owned),
            expires_at_ms: expires_at.timestamp_millis(),
        };
        let mut tx = self.store.begin().await?;
        tx.insert_sign_in(&row).await?;
        tx.commit().await?;
        Ok(Started { authorize_url, state, expires_at })
    }

    /// Completes a sign-in with the code the provider returned; stores the credential and returns its id.
    pub(crate) async fn complete_sign_in(&self, state: &str, code: &str) -> Result<Uuid, SignInError> {
        let mut tx = self.store.begin().await?;
        let taken = tx.take_sign_in(state).await?;
        tx.commit().await?;
        let pending = taken.ok_or(SignInError::NotFound)?;
        if pending.expires_at() < self.store.clock().now() {
            return Err(SignInError::Expired);
        }
        let flow = self
            .flows
            .get(&pending.provider)
            .ok_or_else(|| SignInError::UnknownFlow { name: pending.provider.clone(), known: self.flows.names() })?;
        let verifier = self
            .cipher
            .decrypt(&verifier_ref(pending.id), &pending.verifier_enc)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| SignInError::Invalid("the stored sign-in cannot be read".into()))?;
        let tokens = flow
            .exchange(&self.http, code.trim(), &verifier, &pending.callback_url)
            .await
            .map_err(SignInError::Provider)?;
        let existing = self.store.credential(LLM_KIND, &pending.credential_name).await?;
        if existing.as_ref().is_some_and(|row| row.source == "env") {
            return Err(SignInError::EnvCredential(pending.credential_name));
        }
        let id = existing.map_or_else(cortex_core::new_id, |row| row.id);
        let signed_in = SignedIn {
            id,
            name: pending.credential_name.clone(),
            provider: (pending.credential_name != pending.provider).then(|| pending.provider.clone()),
            base_url: pending.base_url.clone(),
            secret_enc: self.cipher.encrypt(&secret_ref(id), tokens.secret.as_bytes()),
            secret_hint: secret_hint(&tokens.secret),
            sign_in: pending.provider.clone(),
            refresh_enc: tokens
                .refresh_token
                .as_ref()
                .map(|token| self.cipher.encrypt(&refresh_ref(id), token.as_bytes())),
            expires_at: self.expiry(&tokens),
        };
        let mut tx = self.store.begin().await?;
        if !tx.store_signed_in(&signed_in).await? {
            return Err(SignInError::EnvCredential(pending.credential_name));
        }
        tx.commit().await?;
        Ok(id)
    }

    fn expiry(&self, tokens: &Tokens) -> Option<Timestamp> {
        let seconds = i64::try_from(tokens.expires_in?).ok()?;
        Some(self.store.clock().now() + chrono::Duration::seconds(seconds))
    }

    /// Refreshes every signed-in credential that expires within [`REFRESH_AHEAD`]; `true` when one was
    /// written. A failed refresh marks the credential `error` (the next call then fails clearly, or its
    /// fallback serves).
    pub(crate) async fn refresh_due(
        &self,
        rows: &[cortex_store::credentials::ProviderCredential],
    ) -> Result<bool, StoreError> {
        let now = self.store.clock().now();
        let due: Vec<_> = rows
            .iter()
            .filter(|row| row.status != "disabled" && row.refresh_enc.is_some())
            .filter(|row| row.expires_at.is_some_and(|at| at - now < REFRESH_AHEAD))
            .collect();
        if due.is_empty() {
            return Ok(false);
        }
        let _one_at_a_time = self.refreshing.lock().await;
        let mut wrote = false;
        for row in due {
            let (Some(flow), Some(refresh_enc), Some(previous)) =
                (row.sign_in.as_deref().and_then(|name| self.flows.get(name)), &row.refresh_enc, &row.secret_enc)
            else {
                continue;
            };
            let Some(refresh_token) = self
                .cipher
                .decrypt(&refresh_ref(row.id), refresh_enc)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
            else {
                continue;
            };
            match flow.refresh(&self.http, &refresh_token).await {
                Ok(tokens) => {
                    let secret_enc = self.cipher.encrypt(&secret_ref(row.id), tokens.secret.as_bytes());
                    let refresh_enc = tokens
                        .refresh_token
                        .as_ref()
                        .map(|token| self.cipher.encrypt(&refresh_ref(row.id), token.as_bytes()));
                    let mut tx = self.store.begin().await?;
                    let hint = secret_hint(&tokens.secret);
                    wrote |= tx
                        .refresh_signed_in(
                            row.id,
                            previous,
                            &secret_enc,
                            hint.as_deref(),
                            refresh_enc.as_deref(),
                            self.expiry(&tokens),
                        )
                        .await?;
                    tx.commit().await?;
                    tracing::info!(credential = %row.name, "refreshed a signed-in provider token");
                }
                Err(err) => {
                    tracing::warn!(credential = %row.name, code = err.code(), "refreshing a signed-in provider token failed");
                    let mut tx = self.store.begin().await?;
                    tx.mark_credential_error(LLM_KIND, &row.name, &format!("token refresh failed: {err}")).await?;
                    tx.commit().await?;
                    wrote = true;
                }
            }
        }
        Ok(wrote)
    }
}
