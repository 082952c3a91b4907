//! The API's own description: `/openapi.json` (OpenAPI 3.1, generated from the handlers) and `/docs`,
//! a browsable page rendered from it on the server (no external assets).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Extension;
use axum::response::Html;
use utoipa::openapi::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa_axum::routes;

use crate::guard::Routes;

/// The finished document, attached to requests after the routers are assembled.
pub type Document = Arc<OpenApi>;

pub fn routes() -> Routes {
    Routes::new().viewer(routes!(openapi_json)).viewer(routes!(docs_page))
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/openapi.json", tag = "docs", responses((status = 200, content_type = "application/json")))]
async fn openapi_json(Extension(document): Extension<Document>) -> axum::Json<OpenApi> {
    axum::Json(document.as_ref().clone())
}

/// Human-readable API reference rendered from the OpenAPI document.
#[utoipa::path(get, path = "/docs", tag = "docs", responses((status = 200, content_type = "text/html")))]
async fn docs_page(Extension(document): Extension<Document>) -> Html<String> {
    Html(render(&document))
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
