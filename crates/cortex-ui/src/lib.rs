//! Dashboard views of Cortex Plane (SPEC §11): one typed askama template per page, compiled into the
//! binary, and the vendored static assets (htmx 2.x, our stylesheet and script; JSON request bodies come from a small
//! htmx extension in `cortex.js`).
//!
//! Architecture invariants:
//! - No HTTP here: `cortex-api` reads the store, fills a view model from [`views`], renders it and owns
//!   status codes, cookies and headers. Views hold display-ready strings, so templates stay logic-free.
//! - No inline script or style in any template: the Content-Security-Policy forbids them. Behaviour lives in
//!   `static/cortex.js`; htmx is configured through a `<meta name="htmx-config">` tag.
//! - Nothing is loaded from a CDN and nothing needs Node at run time.

pub mod agent;
pub mod assets;
pub mod settings;
pub mod views;

pub use askama::Template;
