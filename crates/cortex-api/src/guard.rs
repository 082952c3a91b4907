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
//!
//! The OpenAPI document is not built with the router (it was 7 MB of the idle heap, issue 17): [`routes!`]
//! takes only each handler's path and methods at start-up and keeps a function that describes the group,
//! and [`Routes::build`] returns those functions with their access as an [`ApiDescription`], which builds
//! the same document on demand (`/openapi.json`, `/docs`).

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
use utoipa::openapi::{OpenApi, Ref, RefOr, Type};
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

/// Registers handlers annotated with `#[utoipa::path]` (plain names in scope, like `utoipa_axum::routes!`):
/// their method router now, their OpenAPI description only when the document is built.
macro_rules! routes {
    ($($handler:ident),+ $(,)?) => {
        utoipa_axum::paste! {{
            use utoipa_axum::PathItemExt as _;
            let mut paths: Vec<String> = Vec::new();
            let mut router = axum::routing::MethodRouter::<$crate::state::AppState>::new();
            $(
                for method in <[<__path_ $handler>] as utoipa::Path>::methods() {
                    router = router.on(method.to_method_filter(), $handler);
                }
                let path = <[<__path_ $handler>] as utoipa::Path>::path();
                if !paths.contains(&path) {
                    paths.push(path);
                }
            )+
            $crate::guard::Handlers { paths, router, describe: || utoipa_axum::routes!($($handler),+) }
        }}
    };
}
pub(crate) use routes;

/// One [`routes!`] group: what axum serves, and how the group is described in the OpenAPI document.
pub struct Handlers {
    /// The distinct paths of the group's handlers; each is served by the whole `router` (as
    /// `utoipa_axum` does).
    pub(crate) paths: Vec<String>,
    pub(crate) router: axum::routing::MethodRouter<AppState>,
    /// Called only when the document is built.
    pub(crate) describe: Describe,
}

/// Makes one route group as `utoipa_axum::routes!` does: its schemas, its documented paths and a method
/// router (built, then dropped, when the document is made).
pub type Describe = fn() -> UtoipaMethodRouter<AppState>;

struct Entry {
    access: Access,
    routes: Handlers,
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
    pub fn public(self, routes: Handlers) -> Self {
        self.push(Access::Public, routes, None)
    }

    /// Read-only routes every authenticated caller may use.
    pub fn viewer(self, routes: Handlers) -> Self {
        self.at_least(Role::Viewer, routes)
    }

    /// Routes that change agents, jobs, chats and policies.
    pub fn operator(self, routes: Handlers) -> Self {
        self.at_least(Role::Operator, routes)
    }

    /// Routes that decide approvals.
    pub fn approver(self, routes: Handlers) -> Self {
        self.at_least(Role::Approver, routes)
    }

    /// Routes that manage infrastructure, keys and users.
    pub fn admin(self, routes: Handlers) -> Self {
        self.at_least(Role::Admin, routes)
    }

    /// Routes needing at least `role`.
    pub fn at_least(self, role: Role, routes: Handlers) -> Self {
        self.push(Access::AtLeast(role), routes, None)
    }

    /// Routes needing at least `role` whose refusals `on_refused` also records.
    pub fn at_least_recording(self, role: Role, routes: Handlers, on_refused: RefusalHook) -> Self {
        self.push(Access::AtLeast(role), routes, Some(on_refused))
    }

    /// Adds the routes of another module.
    pub fn merge(mut self, other: Routes) -> Self {
        self.entries.extend(other.entries);
        self
    }

    fn push(mut self, access: Access, routes: Handlers, on_refused: Option<RefusalHook>) -> Self {
        self.entries.push(Entry { access, routes, on_refused });
        self
    }

    /// Registers every route with its guard; the access is written into the OpenAPI document when
    /// [`ApiDescription::build`] makes it.
    ///
    /// Panics when a route declared public is not in [`is_public`]'s list: authentication would refuse it,
    /// a programming error every test run catches at once.
    pub fn build(self, state: &AppState) -> (axum::Router<AppState>, ApiDescription) {
        let mut router = axum::Router::new();
        let mut groups = Vec::with_capacity(self.entries.len());
        for Entry { access, routes: Handlers { paths, router: method_router, describe }, on_refused } in self.entries {
            let method_router = match access {
                Access::Public => {
                    for path in &paths {
                        assert!(is_public(path), "{path} is declared public but authentication does not know it");
                    }
                    method_router
                }
                Access::AtLeast(role) => {
                    let guard = Guard { state: state.clone(), role, on_refused, page: false };
                    method_router.route_layer(axum::middleware::from_fn_with_state(guard, enforce))
                }
            };
            for path in &paths {
                router = router.route(path, method_router.clone());
            }
            groups.push((access, describe));
        }
        (router, ApiDescription { groups })
    }
}

/// What the OpenAPI document is made from: every route group with its access, in registration order.
pub struct ApiDescription {
    groups: Vec<(Access, Describe)>,
}

impl ApiDescription {
    /// Builds the document: `base` plus every group's operations and schemas, each operation carrying its
    /// access (bearer role, 401/403/429) — the document the router served before it was made lazy.
    pub fn build(&self, base: OpenApi) -> OpenApi {
        let mut document = OpenApiRouter::<AppState>::with_openapi(base);
        for (access, describe) in &self.groups {
            let (schemas, mut paths, method_router) = describe();
            document_access(&mut paths, *access);
            document = document.routes((schemas, paths, method_router));
        }
        document.into_openapi()
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
fn document_access(paths: &mut Paths, access: Access) {
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
