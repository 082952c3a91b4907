//! Dashboard parts of provider sign-in (SPEC §11.2 "Login", "Settings → Login providers"): the buttons of
//! the sign-in page, and the admin page `/ui/settings/login-providers` whose forms call
//! `PUT /settings/login-providers` and `DELETE /settings/login-providers/{provider}` with htmx, so the
//! API's admin guard, validation and CSRF check apply unchanged.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::routing::get;
use axum::{Extension, Router};
use cortex_auth::oauth::Kind;
use cortex_core::role::Role;
use cortex_ui::views::{LoginButton, LoginProviderRow, LoginProvidersPage};

use crate::auth::{Principal, SessionContext};
use crate::guard;
use crate::login;
use crate::routes::ui::{PageError, PageResult, chrome, render};
use crate::state::AppState;

pub(crate) fn router(state: &AppState) -> Router<AppState> {
    Router::new().route("/ui/settings/login-providers", guard::page(state, Role::Admin, get(settings_page)))
}

/// One button per enabled provider, returning to `next` after signing in. A provider that cannot be read
/// (e.g. its secret no longer decrypts) costs its button, never the password form.
pub(crate) async fn buttons(state: &AppState, next: &str) -> Result<Vec<LoginButton>, PageError> {
    let next: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
    let providers = login::enabled_providers(state).await.unwrap_or_else(|err| {
        tracing::error!(message = %err.message, "login providers cannot be read; the sign-in page shows none");
        Vec::new()
    });
    Ok(providers
        .into_iter()
        .map(|provider| LoginButton {
            href: format!("/auth/login/{}?next={next}", provider.kind().as_str()),
            label: provider.label,
        })
        .collect())
}

/// `CORTEX_PUBLIC_URL`, or this server's origin as the browser reached it.
fn origin(state: &AppState, headers: &HeaderMap) -> String {
    match &state.config.dashboard.public_url {
        Some(public) => public.as_str().trim_end_matches('/').to_owned(),
        None => {
            let host = headers.get(header::HOST).and_then(|value| value.to_str().ok()).unwrap_or("localhost");
            format!("http://{host}")
        }
    }
}

async fn settings_page(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
    headers: HeaderMap,
) -> PageResult {
    let configured = crate::routes::login::configured(&state).await?;
    let addable = Kind::ALL
        .into_iter()
        .filter(|kind| configured.iter().all(|view| view.provider != kind.as_str()))
        .map(|kind| kind.as_str().to_owned())
        .collect();
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    let providers = configured
        .iter()
        .map(|view| LoginProviderRow {
            provider: view.provider.clone(),
            label: view.display_name.clone(),
            client_id: view.client_id.clone(),
            client_secret_set: view.client_secret_set,
            issuer_url: text(&view.issuer_url),
            authorize_url: text(&view.authorize_url),
            token_url: text(&view.token_url),
            userinfo_url: text(&view.userinfo_url),
            api_url: text(&view.api_url),
            auto_signup: view.auto_signup,
            signup_role: view.signup_role.to_string(),
            enabled: view.enabled,
            from_env: view.source == "env",
            env_variables: Kind::parse(&view.provider)
                .map(crate::routes::login::env_variables)
                .unwrap_or_default()
                .to_owned(),
        })
        .collect();
    render(&LoginProvidersPage {
        chrome: chrome(&principal, session.as_ref().map(|Extension(context)| context), "Login providers", "settings"),
        providers,
        addable,
        origin: origin(&state, &headers),
    })
}
