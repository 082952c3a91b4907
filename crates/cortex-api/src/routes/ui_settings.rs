//! The dashboard's settings screens for providers, credentials and users (SPEC §11.2 "Settings"; issues
//! 14, 15).
//! Same rules as [`super::ui`]: pages read through the same functions as the JSON API
//! (`credentials::views`, `providers::provider_views`) and every change is a call of the JSON API from
//! htmx, so its admin guard, validation and CSRF check apply unchanged.
//!
//! `/ui/settings/credentials` needs the admin role, like `GET /credentials`; `/ui/settings/providers` is
//! for every signed-in user (like `GET /providers`), its sign-in buttons only for admins.
//! `/ui/settings/users` needs the admin role, like `GET /users`; it changes users through `/users`.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Extension, Router};
use cortex_core::role::Role;
use cortex_ui::settings::{CredentialRow, CredentialsPage, ProviderRow, ProvidersPage, UserRow, UsersPage};

use super::credentials::{CredentialKind, views};
use super::providers::provider_views;
use super::ui::{CursorQuery, PAGE_SIZE, PageResult, chrome, opt_when, pager, parse_cursor, render, when};
use crate::auth::{Principal, SessionContext};
use crate::guard;
use crate::state::AppState;

/// The routes of these screens (merged into the dashboard router, which adds the security headers).
pub(crate) fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/ui/settings", get(|| async { super::ui::see_other("/ui/settings/providers") }))
        .route("/ui/settings/credentials", guard::page(state, Role::Admin, get(credentials)))
        .route("/ui/settings/providers", guard::page(state, Role::Viewer, get(providers)))
        .route("/ui/settings/users", guard::page(state, Role::Admin, get(users)))
}

fn list_or_dash(items: impl IntoIterator<Item = String>) -> String {
    let joined = items.into_iter().collect::<Vec<_>>().join(", ");
    if joined.is_empty() { "—".into() } else { joined }
}

async fn credentials(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
) -> PageResult {
    let rows = views(&state)
        .await?
        .into_iter()
        .map(|view| CredentialRow {
            id: view.id.to_string(),
            value: match (&view.value.last4, view.value.is_set) {
                (Some(last4), _) => format!("…{last4}"),
                (None, true) => "set".into(),
                (None, false) => "not set".into(),
            },
            disabled: view.status == "disabled",
            last_used: opt_when(view.last_used_at),
            used_by: list_or_dash(view.used_by),
            last_error: view.last_error,
            read_only: view.read_only,
            name: view.name,
            kind: view.kind,
            source: view.source,
            status: view.status,
        })
        .collect();
    render(&CredentialsPage {
        chrome: chrome(&principal, session.as_deref(), "Credentials", "settings"),
        rows,
        kinds: CredentialKind::ALL.iter().map(ToString::to_string).collect(),
    })
}

async fn providers(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
    headers: HeaderMap,
) -> PageResult {
    let is_admin = principal.role.includes(Role::Admin);
    let rows = provider_views(&state, false)
        .await?
        .into_iter()
        .map(|view| ProviderRow {
            credentials: list_or_dash(
                view.credentials.iter().map(|c| format!("{} ({}, {})", c.name, c.status, c.source)),
            ),
            catalogue: list_or_dash(view.catalogue.iter().map(|model| model.id.clone())),
            reported: match (&view.reported_models, &view.reported_error) {
                (Some(models), _) => list_or_dash(models.iter().cloned()),
                (None, Some(reason)) => format!("not reported: {reason}"),
                (None, None) => "—".into(),
            },
            sign_in: view.sign_in && is_admin,
            has_credential: view.has_credential,
            name: view.name,
            label: view.label,
            preset: view.preset,
            api_style: view.api_style,
            base_url: view.base_url,
        })
        .collect();
    render(&ProvidersPage {
        chrome: chrome(&principal, session.as_deref(), "Providers", "settings"),
        rows,
        callback_url: callback_url(&state, &headers),
    })
}

/// `{CORTEX_PUBLIC_URL or this server's own origin}/auth/provider-callback`.
fn callback_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(public) = &state.config.dashboard.public_url {
        return format!("{}/auth/provider-callback", public.as_str().trim_end_matches('/'));
    }
    let host = headers.get(axum::http::header::HOST).and_then(|value| value.to_str().ok()).unwrap_or("localhost");
    format!("http://{host}/auth/provider-callback")
}

/// The roles an admin may give (`none` is for chat-platform people and is not offered).
const ROLES: [Role; 4] = [Role::Viewer, Role::Operator, Role::Approver, Role::Admin];

async fn users(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
    Query(query): Query<CursorQuery>,
) -> PageResult {
    let cursor = parse_cursor(query.cursor.as_deref())?;
    let page = state.store.list_users(cursor, PAGE_SIZE).await?;
    let rows = page
        .items
        .iter()
        .map(|user| UserRow {
            id: user.id.to_string(),
            display_name: user.display_name.clone(),
            email: user.email.clone().unwrap_or_else(|| "—".into()),
            role: user.role.to_string(),
            disabled: user.disabled_at.is_some(),
            created: when(user.created_at),
            is_self: principal.user_id == Some(user.id),
        })
        .collect();
    render(&UsersPage {
        chrome: chrome(&principal, session.as_deref(), "Users", "settings"),
        rows,
        roles: ROLES.iter().map(ToString::to_string).collect(),
        pager: pager("/ui/settings/users", &[], page.next_cursor, cursor.is_some()),
    })
}
