//! Login providers (SPEC §11.1, Appendix B "Login providers"): which providers are active, and who a
//! completed provider sign-in is.
//!
//! A provider comes from the environment (`CORTEX_OAUTH_GITHUB_*`, `CORTEX_OAUTH_GOOGLE_*`,
//! `CORTEX_OIDC_*`; read-only, auto-signup from the environment) or from `/settings/login-providers`
//! (a `login_provider` row, client secret encrypted). The environment wins for its provider type.
//!
//! A provider's answer maps to a user in this order:
//! 1. the `user_identity` already linked to the provider's subject;
//! 2. the user whose email equals the provider's **verified** email (the identity is linked then);
//! 3. a new user with the provider's signup role (default `viewer`) when auto-signup is on;
//! 4. otherwise the sign-in is refused ("ask an admin to invite you").
//!
//! Disabled users and role `none` never get a session, whatever the path.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use cortex_auth::oauth::{GITHUB_API_URL, GITHUB_URL, Identity, Kind, ProviderSettings};
use cortex_core::role::Role;
use cortex_store::StoreError;
use cortex_store::login_providers::{LoginProviderRow, client_secret_ref};
use cortex_store::users::User;

use crate::error::{ApiError, ApiResult, Code};
use crate::state::AppState;

/// A provider configured by environment variables.
#[derive(Debug, Clone)]
pub struct EnvLoginProvider {
    pub label: Option<String>,
    pub settings: ProviderSettings,
    pub auto_signup: bool,
}

/// A provider ready to use: from the environment or a stored row, secret decrypted.
#[derive(Debug, Clone)]
pub struct ActiveProvider {
    pub label: String,
    pub settings: ProviderSettings,
    pub auto_signup: bool,
    pub signup_role: Role,
    pub enabled: bool,
    /// `env` or `api`.
    pub source: &'static str,
}

impl ActiveProvider {
    pub fn kind(&self) -> Kind {
        self.settings.kind
    }
}

/// Reads the Appendix B variables. A client id without its secret (or the reverse) is an error naming
/// the missing variable, so a half-configured provider does not silently stay off.
pub fn providers_from_env(env: &BTreeMap<String, String>) -> Result<Vec<EnvLoginProvider>, String> {
    let read = |name: &str| env.get(name).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty());
    let flag = |name: &str| -> Result<bool, String> {
        match read(name).as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("false" | "0" | "no" | "off") => Ok(false),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some(other) => Err(format!("{name} must be true or false, not `{other}`")),
        }
    };
    let url = |name: &str| -> Result<Option<String>, String> {
        match read(name) {
            None => Ok(None),
            Some(value) if is_http_url(&value) => Ok(Some(value.trim_end_matches('/').to_owned())),
            Some(value) => Err(format!("{name} must be an http:// or https:// URL with a host, not `{value}`")),
        }
    };
    let pair = |prefix: &str| -> Result<Option<(String, String)>, String> {
        let (id_var, secret_var) = (format!("{prefix}_CLIENT_ID"), format!("{prefix}_CLIENT_SECRET"));
        match (read(&id_var), read(&secret_var)) {
            (None, None) => Ok(None),
            (Some(id), Some(secret)) => Ok(Some((id, secret))),
            (Some(_), None) => Err(format!("{secret_var} is required with {id_var}")),
            (None, Some(_)) => Err(format!("{id_var} is required with {secret_var}")),
        }
    };
    let mut providers = Vec::new();
    if let Some((client_id, client_secret)) = pair("CORTEX_OAUTH_GITHUB")? {
        let web = url("CORTEX_OAUTH_GITHUB_URL")?.unwrap_or_else(|| GITHUB_URL.to_owned());
        let api = url("CORTEX_OAUTH_GITHUB_API_URL")?.unwrap_or_else(|| GITHUB_API_URL.to_owned());
        providers.push(EnvLoginProvider {
            label: None,
            settings: ProviderSettings {
                kind: Kind::Github,
                client_id,
                client_secret,
                issuer: None,
                authorize_url: Some(format!("{web}/login/oauth/authorize")),
                token_url: Some(format!("{web}/login/oauth/access_token")),
                userinfo_url: None,
                api_url: Some(api),
            },
            auto_signup: flag("CORTEX_OAUTH_GITHUB_AUTO_SIGNUP")?,
        });
    }
    if let Some((client_id, client_secret)) = pair("CORTEX_OAUTH_GOOGLE")? {
        providers.push(EnvLoginProvider {
            label: None,
            settings: ProviderSettings {
                kind: Kind::Google,
                client_id,
                client_secret,
                issuer: None,
                authorize_url: None,
                token_url: None,
                userinfo_url: None,
                api_url: None,
            },
            auto_signup: flag("CORTEX_OAUTH_GOOGLE_AUTO_SIGNUP")?,
        });
    }
    let issuer = url("CORTEX_OIDC_ISSUER")?;
    match (issuer, pair("CORTEX_OIDC")?) {
        (None, None) => {}
        (Some(issuer), Some((client_id, client_secret))) => providers.push(EnvLoginProvider {
            label: read("CORTEX_OIDC_NAME"),
            settings: ProviderSettings {
                kind: Kind::Oidc,
                client_id,
                client_secret,
                issuer: Some(issuer),
                authorize_url: None,
                token_url: None,
                userinfo_url: None,
                api_url: None,
            },
            auto_signup: flag("CORTEX_OIDC_AUTO_SIGNUP")?,
        }),
        (None, Some(_)) => return Err("CORTEX_OIDC_ISSUER is required with CORTEX_OIDC_CLIENT_ID".into()),
        (Some(_), None) => {
            return Err("CORTEX_OIDC_CLIENT_ID and _CLIENT_SECRET are required with CORTEX_OIDC_ISSUER".into());
        }
    }
    Ok(providers)
}

/// Whether `value` is an absolute http(s) URL with a host.
pub fn is_http_url(value: &str) -> bool {
    url::Url::parse(value).is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
}

fn from_env(provider: &EnvLoginProvider) -> ActiveProvider {
    ActiveProvider {
        label: provider.label.clone().unwrap_or_else(|| provider.settings.kind.default_label().to_owned()),
        settings: provider.settings.clone(),
        auto_signup: provider.auto_signup,
        signup_role: Role::Viewer,
        enabled: true,
        source: "env",
    }
}

/// A stored row made usable (its secret decrypted).
fn from_row(state: &AppState, row: &LoginProviderRow) -> ApiResult<ActiveProvider> {
    let kind = Kind::parse(&row.provider)
        .ok_or_else(|| ApiError::new(Code::Internal, format!("unknown login provider type `{}`", row.provider)))?;
    let client_secret = match &row.client_secret_enc {
        Some(stored) => state
            .cipher
            .decrypt(&client_secret_ref(row.id), stored)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| {
                ApiError::new(
                    Code::Internal,
                    format!("the client secret of login provider {kind:?} cannot be decrypted"),
                )
            })?,
        None => String::new(),
    };
    Ok(ActiveProvider {
        label: row.display_name.clone().unwrap_or_else(|| kind.default_label().to_owned()),
        settings: ProviderSettings {
            kind,
            client_id: row.client_id.clone(),
            client_secret,
            issuer: row.issuer_url.clone(),
            authorize_url: row.authorize_url.clone(),
            token_url: row.token_url.clone(),
            userinfo_url: row.userinfo_url.clone(),
            api_url: row.api_url.clone(),
        },
        auto_signup: row.auto_signup,
        signup_role: row.signup_role,
        enabled: row.enabled,
        source: "api",
    })
}

/// The environment's provider of this type, if any.
pub fn env_provider(state: &AppState, kind: Kind) -> Option<&EnvLoginProvider> {
    state.config.dashboard.login_providers.iter().find(|provider| provider.settings.kind == kind)
}

/// The provider of this type, enabled or not.
pub async fn provider(state: &AppState, kind: Kind) -> ApiResult<Option<ActiveProvider>> {
    if let Some(env) = env_provider(state, kind) {
        return Ok(Some(from_env(env)));
    }
    match state.store.login_provider(kind.as_str()).await? {
        Some(row) => Ok(Some(from_row(state, &row)?)),
        None => Ok(None),
    }
}

/// Every enabled provider, in the order GitHub, Google, OIDC (the login page's buttons).
pub async fn enabled_providers(state: &AppState) -> ApiResult<Vec<ActiveProvider>> {
    let mut enabled = Vec::new();
    for kind in Kind::ALL {
        if let Some(provider) = provider(state, kind).await?.filter(|provider| provider.enabled) {
            enabled.push(provider);
        }
    }
    Ok(enabled)
}

/// The client for talking to providers: no redirects (a provider's answer cannot send our credentials
/// elsewhere), bounded time.
pub(crate) fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        cortex_tls::client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .unwrap_or_default()
    })
}

/// The user a verified provider identity signs in as (see the module header for the order).
pub async fn user_for(state: &AppState, provider: &ActiveProvider, identity: &Identity, ip: &str) -> ApiResult<User> {
    let kind = provider.kind().as_str();
    let user = match state.store.identity_user(kind, &identity.subject).await? {
        Some(user) => user,
        None => link_or_create(state, provider, identity, ip).await?,
    };
    if user.disabled_at.is_some() || user.role == Role::None {
        return Err(ApiError::forbidden(format!(
            "the account of {} is disabled or may not sign in; ask an administrator",
            identity.email
        )));
    }
    Ok(user)
}

async fn link_or_create(state: &AppState, provider: &ActiveProvider, identity: &Identity, ip: &str) -> ApiResult<User> {
    let kind = provider.kind().as_str();
    let existing = state.store.find_login_user(&identity.email).await?.map(|(user, _)| user);
    let mut tx = state.store.begin().await?;
    let (user, created) = match existing {
        Some(user) => (user, false),
        None if provider.auto_signup => {
            let name: String = identity
                .name
                .as_deref()
                .unwrap_or(&identity.email)
                .chars()
                .filter(|c| !c.is_control())
                .take(100)
                .collect();
            (tx.insert_user(&name, Some(&identity.email), provider.signup_role).await?, true)
        }
        None => {
            return Err(ApiError::forbidden(format!(
                "no account uses {}; ask an administrator to invite you ({} sign-in does not create accounts)",
                identity.email, provider.label
            )));
        }
    };
    match tx.link_identity(user.id, kind, &identity.subject, Some(&identity.email), true).await {
        Ok(()) => {}
        // Another sign-in of the same subject linked it a moment ago.
        Err(StoreError::Conflict { .. }) => {
            drop(tx);
            return state
                .store
                .identity_user(kind, &identity.subject)
                .await?
                .ok_or_else(|| ApiError::new(Code::Conflict, "this sign-in raced another; try again"));
        }
        Err(err) => return Err(err.into()),
    }
    let action = if created { "user.create" } else { "user.link_identity" };
    tx.audit(cortex_store::audit::NewAudit {
        actor_type: "system",
        actor_id: None,
        action: action.into(),
        target_type: "user",
        target_id: Some(user.id.to_string()),
        details: serde_json::json!({"provider": kind, "subject": identity.subject, "email": identity.email,
                                    "role": user.role, "via": "login provider"}),
        ip: Some(ip.to_owned()),
        request_id: None,
    })
    .await?;
    tx.commit().await?;
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
    }

    #[test]
    fn appendix_b_variables_configure_the_providers() {
        let providers = providers_from_env(&env(&[
            ("CORTEX_OAUTH_GITHUB_CLIENT_ID", "gh"),
            ("CORTEX_OAUTH_GITHUB_CLIENT_SECRET", "gh-secret"),
            ("CORTEX_OAUTH_GITHUB_URL", "https://ghe.example.com/"),
            ("CORTEX_OAUTH_GITHUB_API_URL", "https://ghe.example.com/api/v3"),
            ("CORTEX_OAUTH_GOOGLE_CLIENT_ID", "g"),
            ("CORTEX_OAUTH_GOOGLE_CLIENT_SECRET", "g-secret"),
            ("CORTEX_OIDC_ISSUER", "https://sso.example.com/realms/main"),
            ("CORTEX_OIDC_CLIENT_ID", "o"),
            ("CORTEX_OIDC_CLIENT_SECRET", "o-secret"),
            ("CORTEX_OIDC_AUTO_SIGNUP", "true"),
        ]))
        .unwrap();
        let github = &providers[0].settings;
        assert_eq!(github.authorize_url.as_deref(), Some("https://ghe.example.com/login/oauth/authorize"));
        assert_eq!(github.token_url.as_deref(), Some("https://ghe.example.com/login/oauth/access_token"));
        assert_eq!(github.api_url.as_deref(), Some("https://ghe.example.com/api/v3"));
        assert_eq!(providers[1].settings.issuer(), Some("https://accounts.google.com"));
        assert!(!providers[1].auto_signup);
        assert_eq!(providers[2].settings.issuer(), Some("https://sso.example.com/realms/main"));
        assert!(providers[2].auto_signup);
        assert_eq!(from_env(&providers[2]).label, "Single sign-on");
    }

    #[test]
    fn half_configured_providers_name_the_missing_variable() {
        let missing = providers_from_env(&env(&[("CORTEX_OAUTH_GITHUB_CLIENT_ID", "gh")])).unwrap_err();
        assert!(missing.contains("CORTEX_OAUTH_GITHUB_CLIENT_SECRET"), "{missing}");
        let no_issuer = providers_from_env(&env(&[("CORTEX_OIDC_CLIENT_ID", "o"), ("CORTEX_OIDC_CLIENT_SECRET", "s")]))
            .unwrap_err();
        assert!(no_issuer.contains("CORTEX_OIDC_ISSUER"), "{no_issuer}");
        let bad = providers_from_env(&env(&[("CORTEX_OIDC_ISSUER", "sso.example.com")])).unwrap_err();
        assert!(bad.contains("http"), "{bad}");
        assert!(providers_from_env(&BTreeMap::new()).unwrap().is_empty());
    }
}
