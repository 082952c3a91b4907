//! View models of the settings screens for providers and credentials (SPEC §11.2 "Settings"; issue 15):
//! display-ready strings only. Secret values never reach a view: a credential shows whether it is set
//! and its last four characters at most, like the API.

use askama::Template;

use crate::views::Chrome;

/// One credential as a table row.
#[derive(Debug, Clone)]
pub struct CredentialRow {
    pub id: String,
    pub name: String,
    /// `llm`, `embedding`, `search`, `tool_secret` or `speech`.
    pub kind: String,
    /// `env` (read-only) or `api`.
    pub source: String,
    /// "…abcd", "set" or "not set".
    pub value: String,
    pub status: String,
    pub last_used: String,
    /// Agent slugs, comma-separated, or "—".
    pub used_by: String,
    pub last_error: Option<String>,
    /// Environment credentials are changed by editing the environment and restarting.
    pub read_only: bool,
    pub disabled: bool,
}

/// `/ui/settings/credentials`: every credential; admins add, rotate, disable and delete.
#[derive(Template)]
#[template(path = "settings_credentials.html")]
pub struct CredentialsPage {
    pub chrome: Chrome,
    pub rows: Vec<CredentialRow>,
    /// The kinds the add form offers.
    pub kinds: Vec<String>,
}

/// One provider (preset or custom) as a table row.
#[derive(Debug, Clone)]
pub struct ProviderRow {
    pub name: String,
    pub label: String,
    pub preset: bool,
    pub api_style: String,
    pub base_url: String,
    pub has_credential: bool,
    /// The credentials serving it ("name (status, source)"), comma-separated, or "—".
    pub credentials: String,
    /// Catalogue model ids, comma-separated.
    pub catalogue: String,
    /// What the server reported at `/models`, or why not, or "—".
    pub reported: String,
    /// Whether a sign-in button is offered (the provider has a flow and the viewer is an admin).
    pub sign_in: bool,
}

/// `/ui/settings/providers`: the presets and custom providers, which have credentials, their models,
/// and provider sign-in.
#[derive(Template)]
#[template(path = "settings_providers.html")]
pub struct ProvidersPage {
    pub chrome: Chrome,
    pub rows: Vec<ProviderRow>,
    /// Where providers send the browser back after sign-in (`{origin}/auth/provider-callback`).
    pub callback_url: String,
}

/// One user account as a table row.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: String,
    pub display_name: String,
    /// The email, or "—" for people known only from a chat platform.
    pub email: String,
    pub role: String,
    pub disabled: bool,
    pub created: String,
    /// The row is the signed-in admin's own account (disabling it would sign them out).
    pub is_self: bool,
}

/// `/ui/settings/users` [admin]: users and their roles; create, change role, disable and enable through
/// `POST|PATCH /users`.
#[derive(Template)]
#[template(path = "settings_users.html")]
pub struct UsersPage {
    pub chrome: Chrome,
    pub rows: Vec<UserRow>,
    /// The roles a user may be given.
    pub roles: Vec<String>,
    pub pager: crate::views::Pager,
}
