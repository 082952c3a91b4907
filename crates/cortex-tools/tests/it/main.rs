//! Integration tests of cortex-tools against in-process fake servers on 127.0.0.1.
//!
//! No test sends traffic anywhere but loopback: public and private destinations in SSRF cases are refused
//! before a connection is made, and test host names resolve through a fixed table ([`support::FakeResolver`]).

mod http_request;
mod registry;
mod ssrf;
mod support;
mod web_search;
mod webhook;
