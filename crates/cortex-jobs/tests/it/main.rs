//! Job engine behaviour on both engines, driven by a manual clock (no sleeps).

mod approvals;
mod breaker;
mod engine;
mod faults;
mod retention;
mod steps;
mod support;
