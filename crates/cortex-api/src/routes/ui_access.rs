//! The dashboard's chat-access screen of an agent (SPEC §8.8, §11.2): grants, pairing codes and access
//! requests, with the operator actions as calls of the JSON API (`routes/channel_access.rs`), so its
//! role guards, validation and CSRF check apply unchanged.

use axum::Extension;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use cortex_core::role::Role;
use cortex_ui::views::{AccessRequestRow, AgentAccessPage, GrantRow, PairingCodeRow};

use super::ui::{PageResult, chrome, opt_when, render, when};
use crate::auth::{Principal, SessionContext};
use crate::guard;
use crate::state::AppState;

/// The route of this screen (merged into the dashboard router, which adds the security headers).
pub(crate) fn router(state: &AppState) -> Router<AppState> {
    Router::new().route("/ui/agents/{id}/access", guard::page(state, Role::Viewer, get(agent_access)))
}

fn ms_when(ms: i64) -> String {
    when(chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default())
}

async fn agent_access(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
    Path(id): Path<String>,
) -> PageResult {
    let agent = state.store.get_agent(&id).await?;
    let now = state.store.clock().now();
    let show_codes = principal.role.includes(Role::Operator);
    let grants = state.store.grants(agent.id).await?;
    let codes = state.store.pairing_codes(agent.id).await?;
    let requests = state.store.access_requests(agent.id, None, 200).await?;
    render(&AgentAccessPage {
        chrome: chrome(&principal, session.as_deref(), "Chat access", "agents"),
        id: agent.id.to_string(),
        access_mode: agent.access_mode.to_string(),
        name: agent.name,
        grants: grants
            .into_iter()
            .map(|grant| GrantRow {
                status: if grant.status == "active" && grant.is_expired(now) {
                    "expired".into()
                } else {
                    grant.status.clone()
                },
                expires: opt_when(grant.expires()),
                rate_limit: grant.rate_limit.map_or_else(
                    || "default (20 / 60 s)".into(),
                    |limit| format!("{} / {} s", limit.0.max_messages, limit.0.window_seconds),
                ),
                user_id: grant.user_id.to_string(),
                name: grant.display_name,
                access: grant.access,
                origin: grant.origin,
            })
            .collect(),
        codes: codes
            .into_iter()
            .map(|code| PairingCodeRow {
                state: code.state(now).to_owned(),
                id: code.id.to_string(),
                code: if show_codes { code.code } else { String::new() },
                access: code.access,
                expires: ms_when(code.expires_at),
            })
            .collect(),
        requests: requests
            .into_iter()
            .map(|request| AccessRequestRow {
                id: request.id.to_string(),
                name: request.display_name,
                chat: request.chat_id.unwrap_or_default(),
                preview: request.message_preview.unwrap_or_default(),
                status: request.status,
                reason: request.reason.unwrap_or_default(),
                created: ms_when(request.created_at),
            })
            .collect(),
    })
}
