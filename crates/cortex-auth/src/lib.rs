//! Dashboard login for Cortex Plane (SPEC §11.1, Appendix B "Local users", "Dashboard sessions").
//!
//! The pieces a login needs that are neither SQL nor HTTP serving:
//! - [`password`]: Argon2id hashes of local passwords, and a policy for new ones;
//! - [`token`]: 256-bit session ids (only their SHA-256 is stored) and 256-bit CSRF tokens;
//! - [`session`]: the 7-day sliding lifetime of a web session;
//! - [`throttle`]: 10 failed logins per 15 minutes per IP address and per account;
//! - [`origin`]: whether an unsafe browser request came from the server's own origin;
//! - [`cookie`]: the one constructor of the `cortex_session` cookie and its parser;
//! - [`oauth`]: sign-in through GitHub, Google and any OpenID Connect provider (the client side of the
//!   authorization-code flow with PKCE);
//! - [`jwt`]: verification of OIDC ID tokens against the provider's JWKS.
//!
//! Architecture invariant: this crate knows no HTTP status codes of our API and no SQL (it is an HTTP
//! *client* of identity providers). `cortex-store` persists what
//! it produces; `cortex-api` turns its decisions into responses.

pub mod cookie;
pub mod jwt;
pub mod oauth;
pub mod origin;
pub mod password;
pub mod session;
pub mod throttle;
pub mod token;

/// Why an authentication step failed, in words a user may read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// A new password does not meet the policy.
    #[error("{0}")]
    WeakPassword(String),
    /// Hashing failed (parameters rejected by the library; not caused by input).
    #[error("password hashing failed: {0}")]
    Hashing(String),
}
