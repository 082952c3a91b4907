//! Memory service conformance on both engines: supersession, recall statistics, per-agent isolation and
//! an index that notices writes made by another process, and the filing of extracted facts.

mod extract;
mod isolation;
mod markdown;
mod service;
