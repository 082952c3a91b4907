//! The API's own description: `/openapi.json` (OpenAPI 3.1, generated from the handlers) and `/docs`,
//! a browsable page rendered from it on the server (no external assets).
//!
//! Neither is made until one of them is first asked for: then the document is built from the route
//! groups ([`ApiDescription`]), serialised and rendered once, and dropped — only the two texts stay
//! (≈ 270 KB instead of the ≈ 7 MB the `utoipa` value holds; issue 17, docs/PERFORMANCE.md).

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use axum::Extension;
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::response::{Html, IntoResponse, Response};
use utoipa::openapi::OpenApi;
use utoipa::openapi::path::Operation;

use crate::error::ApiError;
use crate::guard::{ApiDescription, Routes, routes};

/// The API's description, attached to requests after the routers are assembled.
pub type Document = Arc<LazyDocument>;

/// The document's two texts, made on first use from the route groups.
pub struct LazyDocument {
    description: ApiDescription,
    texts: OnceLock<Texts>,
}

/// `/openapi.json` and `/docs`, ready to send.
struct Texts {
    /// `None` when the document did not serialise (logged once; answered 500 as `axum::Json` would).
    json: Option<Bytes>,
    html: Bytes,
}

impl LazyDocument {
    pub fn new(description: ApiDescription) -> Self {
        Self { description, texts: OnceLock::new() }
    }

    /// Builds, serialises and renders the document the first time; the `utoipa` value is dropped after.
    fn texts(&self) -> &Texts {
        self.texts.get_or_init(|| {
            let document = self.description.build(crate::openapi::base_document());
            let json = serde_json::to_vec(&document)
                .inspect_err(|err| tracing::error!(%err, "the OpenAPI document does not serialise"))
                .ok()
                .map(Bytes::from);
            Texts { json, html: Bytes::from(render(&document)) }
        })
    }
}

pub fn routes() -> Routes {
    Routes::new().viewer(routes!(openapi_json)).viewer(routes!(docs_page))
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/openapi.json", tag = "docs", responses((status = 200, content_type = "application/json")))]
async fn openapi_json(Extension(document): Extension<Document>) -> Response {
    match &document.texts().json {
        Some(json) => ([(CONTENT_TYPE, "application/json")], json.clone()).into_response(),
        None => ApiError::internal().into_response(),
    }
}

/// Human-readable API reference rendered from the OpenAPI document.
#[utoipa::path(get, path = "/docs", tag = "docs", responses((status = 200, content_type = "text/html")))]
async fn docs_page(Extension(document): Extension<Document>) -> Html<Bytes> {
    Html(document.texts().html.clone())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn render(document: &OpenApi) -> String {
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Cortex Plane API</title><style>\
         body{font:15px/1.5 system-ui,sans-serif;max-width:980px;margin:2rem auto;padding:0 1rem;color:#222}\
         h2{margin-top:2rem;border-bottom:1px solid #ddd}code{background:#f4f4f4;padding:1px 4px;border-radius:3px}\
         .op{margin:.6rem 0 1.2rem}.m{display:inline-block;width:4.5rem;font-weight:600;text-transform:uppercase}\
         .d{color:#555;margin-left:4.5rem}</style></head><body>",
    );
    let _ = write!(
        html,
        "<h1>{}</h1><p>{}</p><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a>. \
         Authenticate with <code>Authorization: Bearer &lt;api key&gt;</code>.</p>",
        escape(&document.info.title),
        escape(document.info.description.as_deref().unwrap_or_default())
    );
    let mut by_tag: std::collections::BTreeMap<String, Vec<(String, &'static str, &Operation)>> = Default::default();
    for (path, item) in &document.paths.paths {
        let operations = [
            ("get", &item.get),
            ("post", &item.post),
            ("put", &item.put),
            ("patch", &item.patch),
            ("delete", &item.delete),
        ];
        for (method, operation) in operations {
            if let Some(operation) = operation {
                let tag =
                    operation.tags.as_ref().and_then(|tags| tags.first()).cloned().unwrap_or_else(|| "other".into());
                by_tag.entry(tag).or_default().push((path.clone(), method, operation));
            }
        }
    }
    for (tag, operations) in by_tag {
        let _ = write!(html, "<h2>{}</h2>", escape(&tag));
        for (path, method, operation) in operations {
            let summary = operation.summary.as_deref().or(operation.description.as_deref()).unwrap_or_default();
            let _ = write!(html, "<div class=\"op\"><span class=\"m\">{method}</span><code>{}</code>", escape(&path));
            let _ = write!(html, "<div class=\"d\">{}", escape(summary));
            if let Some(parameters) = &operation.parameters
                && !parameters.is_empty()
            {
                let names: Vec<String> = parameters
                    .iter()
                    .filter_map(|p| match p {
                        utoipa::openapi::RefOr::T(parameter) => {
                            Some(format!("<code>{}</code>", escape(&parameter.name)))
                        }
                        utoipa::openapi::RefOr::Ref(_) => None,
                    })
                    .collect();
                let _ = write!(html, "<br>Parameters: {}", names.join(", "));
            }
            let statuses: Vec<String> = operation.responses.responses.keys().cloned().collect();
            let _ = write!(html, "<br>Responses: {}</div></div>", escape(&statuses.join(", ")));
        }
    }
    html.push_str("</body></html>");
    html
}
