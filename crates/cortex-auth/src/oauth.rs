//! Sign-in through GitHub, Google and any OpenID Connect provider (SPEC §11.1, Appendix B "Login
//! providers"): the two halves of the authorization-code flow, as a client of the provider.
//!
//! - [`begin`] builds the URL the browser is sent to, with a fresh `state`, PKCE verifier (S256) and, for
//!   OIDC, a `nonce`. The caller stores them (hashed / encrypted) and binds them to the browser.
//! - [`finish`] exchanges the code (with the verifier) and returns the provider's [`Identity`]:
//!   - OIDC (`google`, `oidc`): discovery at `{issuer}/.well-known/openid-configuration` (its `issuer` must
//!     equal the configured one), the token endpoint, then the ID token verified by [`crate::jwt`]
//!     (signature against the JWKS, `iss`, `aud`, `exp`, `nonce`). Email claims missing from the ID token
//!     are read from the userinfo endpoint, whose `sub` must match the token's.
//!   - GitHub (an OAuth app, no ID token): the token endpoint, then `{api}/user` and `{api}/user/emails`;
//!     only the primary, verified email counts.
//!
//! Discovery and the JWKS are fetched for every sign-in (no cache): sign-ins are rare, and a rotated key
//! is picked up at once. The HTTP client must not follow redirects, so a provider's answer cannot send
//! our credentials elsewhere.

use serde::Deserialize;
use serde_json::Value;

use crate::jwt::{self, Jwks};

/// Google's issuer (Appendix B).
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";
/// GitHub's web base (authorize and token endpoints) and API base (Appendix B defaults).
pub const GITHUB_URL: &str = "https://github.com";
pub const GITHUB_API_URL: &str = "https://api.github.com";

/// Largest answer read from a provider (discovery, JWKS, tokens, user documents).
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// The provider types (SPEC: `github|google|oidc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Github,
    Google,
    Oidc,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Github, Kind::Google, Kind::Oidc];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Google => "google",
            Self::Oidc => "oidc",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// The button label when none is configured.
    pub fn default_label(self) -> &'static str {
        match self {
            Self::Github => "GitHub",
            Self::Google => "Google",
            Self::Oidc => "Single sign-on",
        }
    }
}

/// Everything needed to talk to one provider. Unset endpoints take the provider's defaults (GitHub's
/// public URLs) or come from OIDC discovery.
#[derive(Clone)]
pub struct ProviderSettings {
    pub kind: Kind,
    pub client_id: String,
    pub client_secret: String,
    /// OIDC issuer (`google` defaults to [`GOOGLE_ISSUER`]).
    pub issuer: Option<String>,
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    pub userinfo_url: Option<String>,
    /// GitHub's REST API base.
    pub api_url: Option<String>,
}

impl std::fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("kind", &self.kind)
            .field("client_id", &self.client_id)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl ProviderSettings {
    /// The OIDC issuer, for the OIDC kinds.
    pub fn issuer(&self) -> Option<&str> {
        match self.kind {
            Kind::Github => None,
            Kind::Google => Some(self.issuer.as_deref().unwrap_or(GOOGLE_ISSUER)),
            Kind::Oidc => self.issuer.as_deref(),
        }
    }
}

/// Why a sign-in through a provider failed. `Refused` is the user's or an attacker's problem (the
/// answer is not acceptable); `Provider` means the provider could not be used.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The provider's answer is not acceptable (bad token, unverified email, …).
    #[error("{0}")]
    Refused(String),
    /// The provider is unreachable, misconfigured or answered something unreadable.
    #[error("{0}")]
    Provider(String),
    /// The ID token failed verification.
    #[error(transparent)]
    Token(#[from] jwt::TokenError),
}

/// The start of a sign-in.
#[derive(Debug, Clone)]
pub struct Begin {
    pub authorize_url: String,
    /// Random, sent to the provider and bound to the browser; store only its hash.
    pub state: String,
    /// PKCE verifier (RFC 7636); store it encrypted.
    pub verifier: String,
    /// OIDC nonce the ID token must echo.
    pub nonce: Option<String>,
}

/// Who the provider says signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Stable id at the provider (`sub`, or GitHub's numeric user id).
    pub subject: String,
    /// Lowercased; verified by the provider ([`finish`] refuses unverified ones).
    pub email: String,
    pub name: Option<String>,
}

/// The parts of an OIDC discovery document used here.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
}

/// Builds the provider's authorization URL for a new sign-in returning to `redirect_uri`.
pub async fn begin(
    http: &reqwest::Client,
    settings: &ProviderSettings,
    redirect_uri: &str,
) -> Result<Begin, OAuthError> {
    let state = crate::token::csrf_token();
    let verifier = cortex_core::pkce::verifier();
    let challenge = cortex_core::pkce::challenge(&verifier);
    let (endpoint, scope, nonce) = match settings.issuer() {
        None => (github_web("authorize", &settings.authorize_url), "read:user user:email", None),
        Some(issuer) => {
            let endpoint = match &settings.authorize_url {
                Some(url) => url.clone(),
                None => discover(http, issuer).await?.authorization_endpoint,
            };
            (endpoint, "openid email profile", Some(crate::token::csrf_token()))
        }
    };
    let mut url = url::Url::parse(&endpoint)
        .map_err(|err| OAuthError::Provider(format!("authorization endpoint `{endpoint}` is not a URL: {err}")))?;
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &settings.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", scope)
            .append_pair("state", &state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(nonce) = &nonce {
            query.append_pair("nonce", nonce);
        }
    }
    Ok(Begin { authorize_url: url.into(), state, verifier, nonce })
}

/// What [`finish`] needs besides the provider.
#[derive(Debug, Clone, Copy)]
pub struct Callback<'a> {
    pub code: &'a str,
    pub verifier: &'a str,
    pub nonce: Option<&'a str>,
    pub redirect_uri: &'a str,
    /// Unix seconds now (the server's clock).
    pub now: i64,
}

/// Completes a sign-in: exchanges the code and returns the verified identity.
pub async fn finish(
    http: &reqwest::Client,
    settings: &ProviderSettings,
    callback: Callback<'_>,
) -> Result<Identity, OAuthError> {
    match settings.issuer() {
        None => finish_github(http, settings, callback).await,
        Some(issuer) => finish_oidc(http, settings, issuer, callback).await,
    }
}

/// `{base}/login/oauth/{authorize|access_token}` unless an explicit URL is configured.
fn github_web(which: &str, explicit: &Option<String>) -> String {
    explicit.clone().unwrap_or_else(|| format!("{GITHUB_URL}/login/oauth/{which}"))
}

async fn read_json(response: reqwest::Response, what: &str) -> Result<Value, OAuthError> {
    let status = response.status();
    let mut body = Vec::new();
    let mut response = response;
    while let Some(chunk) =
        response.chunk().await.map_err(|err| OAuthError::Provider(format!("reading {what} failed: {err}")))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(OAuthError::Provider(format!("{what} is larger than {MAX_RESPONSE_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|_| OAuthError::Provider(format!("{what} answered {status} with a body that is not JSON")))?;
    if !status.is_success() {
        let reason = value
            .get("error_description")
            .or_else(|| value.get("error"))
            .or_else(|| value.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        return Err(OAuthError::Refused(format!("{what} answered {status}: {}", truncate(reason))));
    }
    Ok(value)
}

fn truncate(text: &str) -> String {
    text.chars().take(200).collect()
}

async fn get_json(http: &reqwest::Client, url: &str, bearer: Option<&str>, what: &str) -> Result<Value, OAuthError> {
    let mut request = http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .header(reqwest::header::USER_AGENT, "cortex-plane");
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|err| OAuthError::Provider(format!("{what} unreachable: {err}")))?;
    read_json(response, what).await
}

/// Fetches and checks the discovery document of `issuer`.
pub async fn discover(http: &reqwest::Client, issuer: &str) -> Result<Discovery, OAuthError> {
    let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    let value = get_json(http, &url, None, "the provider's discovery document").await?;
    let discovery: Discovery = serde_json::from_value(value)
        .map_err(|err| OAuthError::Provider(format!("the discovery document of {issuer} is incomplete: {err}")))?;
    if !jwt::same_issuer(&discovery.issuer, issuer) {
        return Err(OAuthError::Provider(format!(
            "the discovery document of {issuer} names another issuer ({})",
            discovery.issuer
        )));
    }
    Ok(discovery)
}

/// POSTs the code grant; `basic` sends the client credentials in the Authorization header (RFC 6749
/// §2.3.1), otherwise in the form.
async fn exchange_code(
    http: &reqwest::Client,
    token_url: &str,
    settings: &ProviderSettings,
    callback: Callback<'_>,
    basic: bool,
) -> Result<Value, OAuthError> {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", callback.code),
        ("redirect_uri", callback.redirect_uri),
        ("code_verifier", callback.verifier),
    ];
    if !basic {
        form.push(("client_id", &settings.client_id));
        form.push(("client_secret", &settings.client_secret));
    }
    let body: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    let mut request = http
        .post(token_url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(reqwest::header::ACCEPT, "application/json")
        .header(reqwest::header::USER_AGENT, "cortex-plane")
        .body(body);
    if basic {
        let encode = |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
        request = request.basic_auth(encode(&settings.client_id), Some(encode(&settings.client_secret)));
    }
    let response = request
        .send()
        .await
        .map_err(|err| OAuthError::Provider(format!("the token endpoint is unreachable: {err}")))?;
    let value = read_json(response, "the token endpoint").await?;
    // GitHub answers errors with 200 and an `error` member.
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        let reason = value.get("error_description").and_then(Value::as_str).unwrap_or(error);
        return Err(OAuthError::Refused(format!("the provider refused the code: {}", truncate(reason))));
    }
    Ok(value)
}

fn string_field<'a>(value: &'a Value, name: &str) -> Option<&'a str> {
    value.get(name).and_then(Value::as_str).filter(|text| !text.is_empty())
}

/// `true`, or the string `"true"` some providers send.
fn is_true(value: Option<&Value>) -> bool {
    matches!(value, Some(Value::Bool(true))) || matches!(value, Some(Value::String(text)) if text == "true")
}

async fn finish_oidc(
    http: &reqwest::Client,
    settings: &ProviderSettings,
    issuer: &str,
    callback: Callback<'_>,
) -> Result<Identity, OAuthError> {
    let nonce = callback.nonce.ok_or_else(|| OAuthError::Refused("this sign-in has no nonce".into()))?;
    let discovery = discover(http, issuer).await?;
    let token_url = settings.token_url.clone().unwrap_or_else(|| discovery.token_endpoint.clone());
    let methods = &discovery.token_endpoint_auth_methods_supported;
    let basic = methods.is_empty() || methods.iter().any(|method| method == "client_secret_basic");
    let tokens = exchange_code(http, &token_url, settings, callback, basic).await?;
    let id_token = string_field(&tokens, "id_token")
        .ok_or_else(|| OAuthError::Provider("the token endpoint returned no id_token".into()))?;
    let jwks: Jwks = serde_json::from_value(get_json(http, &discovery.jwks_uri, None, "the provider's JWKS").await?)
        .map_err(|err| OAuthError::Provider(format!("the provider's JWKS is unreadable: {err}")))?;
    let claims = Value::Object(jwt::verify(
        id_token,
        &jwks,
        jwt::Expected { issuer, client_id: &settings.client_id, nonce, now: callback.now },
    )?);
    let subject = string_field(&claims, "sub").unwrap_or_default().to_owned();
    let mut profile = claims;
    if string_field(&profile, "email").is_none() {
        let userinfo_url = settings.userinfo_url.clone().or(discovery.userinfo_endpoint).ok_or_else(|| {
            OAuthError::Refused("the ID token carries no email and the provider has no userinfo endpoint".into())
        })?;
        let access_token = string_field(&tokens, "access_token")
            .ok_or_else(|| OAuthError::Provider("the token endpoint returned no access_token".into()))?;
        let info = get_json(http, &userinfo_url, Some(access_token), "the userinfo endpoint").await?;
        if string_field(&info, "sub") != Some(subject.as_str()) {
            return Err(OAuthError::Refused("the userinfo answer is about another subject".into()));
        }
        profile = info;
    }
    let email = string_field(&profile, "email")
        .ok_or_else(|| OAuthError::Refused("the provider shared no email address".into()))?
        .to_lowercase();
    if !is_true(profile.get("email_verified")) {
        return Err(OAuthError::Refused(format!("the provider has not verified {email}; verify it there first")));
    }
    let name = string_field(&profile, "name").map(str::to_owned);
    Ok(Identity { subject, email, name })
}

async fn finish_github(
    http: &reqwest::Client,
    settings: &ProviderSettings,
    callback: Callback<'_>,
) -> Result<Identity, OAuthError> {
    let token_url = github_web("access_token", &settings.token_url);
    let tokens = exchange_code(http, &token_url, settings, callback, false).await?;
    let access_token = string_field(&tokens, "access_token")
        .ok_or_else(|| OAuthError::Provider("GitHub returned no access_token".into()))?;
    let api = settings.api_url.as_deref().unwrap_or(GITHUB_API_URL).trim_end_matches('/');
    let user = get_json(http, &format!("{api}/user"), Some(access_token), "GitHub's /user").await?;
    let subject = match user.get("id") {
        Some(Value::Number(id)) => id.to_string(),
        _ => return Err(OAuthError::Provider("GitHub's /user has no id".into())),
    };
    let emails = get_json(http, &format!("{api}/user/emails"), Some(access_token), "GitHub's /user/emails").await?;
    let primary = emails
        .as_array()
        .into_iter()
        .flatten()
        .find(|entry| is_true(entry.get("primary")))
        .ok_or_else(|| OAuthError::Refused("your GitHub account has no primary email".into()))?;
    let email = string_field(primary, "email")
        .ok_or_else(|| OAuthError::Refused("your GitHub account has no primary email".into()))?
        .to_lowercase();
    if !is_true(primary.get("verified")) {
        return Err(OAuthError::Refused(format!(
            "GitHub has not verified {email}, your primary email; verify it there first"
        )));
    }
    let name = string_field(&user, "name").or_else(|| string_field(&user, "login")).map(str::to_owned);
    Ok(Identity { subject, email, name })
}
