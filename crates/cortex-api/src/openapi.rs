//! The base OpenAPI document: info, security scheme and shared schemas. Paths are added by the routers.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cortex Plane API",
        description = "Control plane for autonomous AI agents. Authenticate with `Authorization: Bearer <api key>`.",
        version = "1.0.0"
    ),
    security(("bearer" = [])),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail)),
    modifiers(&BearerScheme)
)]
struct BaseDocument;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("API key").build()),
        );
    }
}

pub fn base_document() -> utoipa::openapi::OpenApi {
    BaseDocument::openapi()
}
