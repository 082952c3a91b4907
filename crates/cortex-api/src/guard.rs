//! Route guards: the minimum role of every route is declared once, where the route is registered
//! (SPEC §2.4 gives it in brackets).
//!
//! Route modules add routes only through [`Routes`]: `.viewer(routes!(…))`, `.operator(…)`,
//! `.approver(…)`, `.admin(…)` or `.public(…)`. The declaration does two things from the same value:
//! - it refuses callers below the role with 403 before any extractor of the handler runs (so a viewer
//!   posting a bad body learns nothing about validation), and
//! - it writes the role into the operation's OpenAPI entry: the bearer requirement carries the role name
//!   (OpenAPI 3.1 allows role names there), and 401, 403 (above viewer) and 429 are documented with the
//!   error envelope.
//!
//! Input-dependent escalations (`DELETE /agents/{id}?purge=true` needs admin) stay in the handler as
//! [`Principal::require`](crate::auth::Principal::require) and are named in the parameter's description.

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cortex_core::role::Role;
use futures::future::BoxFuture;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, PathItem, Paths};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{Ref, RefOr, Type};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use crate::auth::{Principal, is_public};
use crate::error::ApiError;
use crate::state::AppState;

/// Who may call a route.
#[derive(Debug, Clone, Copy)]
enum Access {
    /// No credentials (SPEC §2.3 lists these); must also be known to [`is_public`].
    Public,
    /// Authenticated with at least this role.
    AtLeast(Role),
}

/// Runs when a guard refuses a caller, before the 403 is sent; e.g. approvals write the attempt into
/// the request's audit trail (SPEC §7.3).
pub type RefusalHook = fn(AppState, Principal, Parts) -> BoxFuture<'static, ()>;

struct Entry {
    access: Access,
    routes: UtoipaMethodRouter<AppState>,
    on_refused: Option<RefusalHook>,
}

/// The routes of one or more modules with their declared access, turned into a router by [`Routes::build`].
#[derive(Default)]
pub struct Routes {
    entries: Vec<Entry>,
}

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes open without credentials (health, readiness, metrics, later webhooks and login).
    pub fn public(self, routes: UtoipaMethodRouter<AppState>) -> Self {
        self.push(Access::Public, routes, None)
    }

    /// Read-only routes every authenticated caller may use.
    pub fn viewer(self, routes: UtoipaMethodRouter<AppState>) -> Self {
        self.at_least(Role::Viewer, routes)
    }

    /// Routes that change agents, jobs, chats and policies.
    pub fn operator(self, routes: UtoipaMethodRouter<AppState>) -> Self {
        self.at_least(Role::Operator, routes)
    }

    /// Routes that decide approvals.
    pub fn approver(self, routes: UtoipaMethodRouter<AppState>) -> Self {
        self.at_least(Role::Approver, routes)
    }

    /// Routes that manage infrastructure, keys and users.
    pub fn admin(self, routes: UtoipaMethodRouter<AppState>) -> Self {
        self.at_least(Role::Admin, routes)
    }

    /// Routes needing at least `role`.
    pub fn at_least(self, role: Role, routes: UtoipaMethodRouter<AppState>) -> Self {
        self.push(Access::AtLeast(role), routes, None)
    }

    /// Routes needing at least `role` whose refusals `on_refused` also records.
    pub fn at_least_recording(self, role: Role, routes: UtoipaMethodRouter<AppState>, on_refused: RefusalHook) -> Self {
        self.push(Access::AtLeast(role), routes, Some(on_refused))
    }

    /// Adds the routes of another module.
    pub fn merge(mut self, other: Routes) -> Self {
        self.entries.extend(other.entries);
        self
    }

    fn push(mut self, access: Access, routes: UtoipaMethodRouter<AppState>, on_refused: Option<RefusalHook>) -> Self {
        self.entries.push(Entry { access, routes, on_refused });
        self
    }

    /// Registers every route with its guard and documents the access in `router`'s OpenAPI document.
    ///
    /// Panics when a route declared public is not in [`is_public`]'s list: authentication would refuse it,
    /// a programming error every test run catches at once.
    pub fn build(self, state: &AppState, mut router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
        for Entry { access, routes, on_refused } in self.entries {
            let (schemas, mut paths, method_router) = routes;
            document(&mut paths, access);
            let method_router = match access {
                Access::Public => {
                    for path in paths.paths.keys() {
                        assert!(is_public(path), "{path} is declared public but authentication does not know it");
                    }
                    method_router
                }
                Access::AtLeast(role) => {
                    let guard = Guard { state: state.clone(), role, on_refused, page: false };
                    method_router.route_layer(axum::middleware::from_fn_with_state(guard, enforce))
                }
            };
            router = router.routes((schemas, paths, method_router));
        }
        router
    }
}

/// Guards a dashboard page (an HTML route outside the API document) exactly like an API route: the same
/// principal, the same role check, declared once where the page is registered.
pub fn page(
    state: &AppState,
    role: Role,
    route: axum::routing::MethodRouter<AppState>,
) -> axum::routing::MethodRouter<AppState> {
    let guard = Guard { state: state.clone(), role, on_refused: None, page: true };
    route.route_layer(axum::middleware::from_fn_with_state(guard, enforce))
}

/// What the guard layer of one route knows.
#[derive(Clone)]
struct Guard {
    state: AppState,
    role: Role,
    on_refused: Option<RefusalHook>,
    /// A dashboard page: a refusal is an error page in words, not the API's JSON envelope.
    page: bool,
}

/// Lets the request through when the authenticated principal's role includes the route's role.
async fn enforce(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    // Authentication ran first and left the principal; its absence would be a wiring bug, answered as 401.
    let Some(principal) = request.extensions().get::<Principal>().cloned() else {
        return ApiError::unauthorized().into_response();
    };
    let Err(refusal) = principal.require(guard.role) else {
        return next.run(request).await;
    };
    tracing::info!(required = %guard.role, role = %principal.role, "refused: role too low");
    if let Some(hook) = guard.on_refused {
        let (parts, _) = request.into_parts();
        hook(guard.state, principal, parts).await;
    }
    if guard.page {
        return crate::routes::ui::PageError::from(refusal).into_response();
    }
    refusal.into_response()
}

/// Every operation of a path item, mutably.
pub(crate) fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// Writes `access` into the OpenAPI entries of `paths`.
fn document(paths: &mut Paths, access: Access) {
    for operation in paths.paths.values_mut().flat_map(operations_mut) {
        match access {
            Access::Public => operation.security = Some(vec![SecurityRequirement::default()]),
            Access::AtLeast(role) => {
                operation.security = Some(vec![SecurityRequirement::new("bearer", [role.as_str()])]);
                let note = format!("Minimum role: `{role}`.");
                operation.description = Some(match operation.description.take() {
                    Some(text) if !text.is_empty() => format!("{text}\n\n{note}"),
                    _ => note,
                });
                add_error(operation, "401", "No or invalid credentials (`unauthorized`).", false);
                if role > Role::Viewer {
                    add_error(operation, "403", &format!("The caller's role is below `{role}` (`forbidden`)."), false);
                }
                add_error(operation, "429", "Rate limit reached (`rate_limited`); see `Retry-After`.", true);
            }
        }
    }
}

/// Documents an error status with the envelope, unless the handler already describes it.
fn add_error(operation: &mut Operation, status: &str, description: &str, retry_after: bool) {
    if operation.responses.responses.contains_key(status) {
        return;
    }
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
    let mut response = ResponseBuilder::new().description(description).content("application/json", content);
    if retry_after {
        let seconds = utoipa::openapi::schema::ObjectBuilder::new().schema_type(Type::Integer).build();
        response = response.header(
            "Retry-After",
            HeaderBuilder::new().schema(Some(seconds)).description(Some("Seconds until a retry can succeed.")).build(),
        );
    }
    operation.responses.responses.insert(status.to_owned(), RefOr::T(response.build()));
}
