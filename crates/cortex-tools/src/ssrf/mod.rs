//! The SSRF guard's rules (SPEC §17.4): which URLs, host names and addresses agent-driven HTTP may reach.
//!
//! [`SsrfPolicy`] is pure: it judges a URL before a request is sent and the addresses a name resolved to.
//! The pinning itself — connecting only to the addresses that were judged — lives in [`resolve`], which
//! plugs the policy into reqwest's DNS resolution. Exceptions come only from `CORTEX_SSRF_ALLOW` and a tool
//! policy's `data_scope.allowed_hosts`.

mod ranges;
pub mod resolve;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use url::{Host, Url};

use crate::DataScope;

pub use ranges::Cidr;
pub use resolve::{Resolver, SystemResolver};

/// The environment variable holding the operator's exceptions (CSV of hosts and CIDRs).
pub const SSRF_ALLOW_ENV: &str = "CORTEX_SSRF_ALLOW";

/// One exception to the guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowRule {
    /// An exact host name (case-insensitive, trailing dot ignored): its name and resolved addresses are
    /// not checked.
    Host(String),
    /// Addresses in this network are allowed even if they are private, loopback, ….
    Cidr(Cidr),
}

impl FromStr for AllowRule {
    type Err = SsrfParseError;

    /// A host name (`api.internal.example`), an IP address (`127.0.0.1`, `::1`, `[::1]`) or a CIDR
    /// (`10.0.0.0/8`). Wildcards and URLs are refused so that an exception is always explicit.
    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let error = |reason: String| SsrfParseError { entry: entry.to_owned(), reason };
        let text = entry.trim();
        if text.contains("://") {
            return Err(error("expected a host name or CIDR, not a URL".into()));
        }
        if text.contains('*') {
            return Err(error("wildcards are not supported; list each host".into()));
        }
        let unbracketed = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
        if unbracketed.contains('/') || unbracketed.parse::<IpAddr>().is_ok() {
            return unbracketed.parse().map(AllowRule::Cidr).map_err(error);
        }
        let host = normalize_host(text);
        let valid = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        if valid { Ok(AllowRule::Host(host)) } else { Err(error("not a valid host name".into())) }
    }
}

/// An entry of `CORTEX_SSRF_ALLOW` or `allowed_hosts` that is neither a host name nor a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid SSRF exception `{entry}`: {reason} (expected a host name, an IP address or a CIDR such as 10.0.0.0/8)"
)]
pub struct SsrfParseError {
    pub entry: String,
    pub reason: String,
}

/// Why the guard refused a destination; the text names the rule ("127.0.0.1 is a loopback address").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Denied {
    pub reason: String,
}

impl Denied {
    fn new(reason: impl Into<String>) -> Self {
        Self { reason: reason.into() }
    }
}

/// The guard's rules plus the operator's exceptions. The default has no exceptions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SsrfPolicy {
    allow: Vec<AllowRule>,
}

impl SsrfPolicy {
    /// Parses the `CORTEX_SSRF_ALLOW` syntax: comma-separated rules, blanks ignored.
    pub fn parse(csv: &str) -> Result<Self, SsrfParseError> {
        let allow =
            csv.split(',').filter(|entry| !entry.trim().is_empty()).map(str::parse).collect::<Result<_, _>>()?;
        Ok(Self { allow })
    }

    /// The policy configured by `CORTEX_SSRF_ALLOW`, read through `env` (pass `|name| std::env::var(name).ok()`);
    /// unset means no exceptions. Errors name the variable.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, SsrfParseError> {
        let Some(csv) = env(SSRF_ALLOW_ENV) else { return Ok(Self::default()) };
        Self::parse(&csv)
            .map_err(|error| SsrfParseError { reason: format!("{} (in {SSRF_ALLOW_ENV})", error.reason), ..error })
    }

    /// This policy plus the exceptions of one tool policy's data scope. Entries that do not parse grant
    /// nothing and are skipped with a warning; [`DataScope::validate`] rejects them when a policy is saved.
    pub fn with_extra_hosts(&self, scope: &DataScope) -> Self {
        let mut allow = self.allow.clone();
        for entry in &scope.allowed_hosts {
            match entry.parse() {
                Ok(rule) => allow.push(rule),
                Err(error) => tracing::warn!(%error, "ignoring data_scope.allowed_hosts entry"),
            }
        }
        Self { allow }
    }

    /// The exceptions in force.
    pub fn allow_rules(&self) -> &[AllowRule] {
        &self.allow
    }

    /// Judges a URL before anything is sent: the scheme, the host name rules, and IP-literal hosts (which
    /// are never resolved, so [`resolve`] would not see them). Host names are judged again, with their
    /// resolved addresses, when the connection is made.
    pub fn check_url(&self, url: &Url) -> Result<(), Denied> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Denied::new(format!("the `{}` scheme is not allowed (only http and https)", url.scheme())));
        }
        match url.host() {
            None => Err(Denied::new("the URL has no host")),
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)),
            Some(Host::Domain(name)) => match name.parse::<IpAddr>() {
                Ok(ip) => self.check_ip(ip),
                Err(_) => self.check_name(name),
            },
        }
    }

    /// Judges a host name and every address it resolved to; one refused address refuses the name.
    pub fn check_resolved(&self, host: &str, addrs: &[IpAddr]) -> Result<(), Denied> {
        if self.host_is_allowed(host) {
            return Ok(());
        }
        self.check_name(host)?;
        if addrs.is_empty() {
            return Err(Denied::new(format!("{host} did not resolve to any address")));
        }
        for ip in addrs {
            self.check_ip(*ip)
                .map_err(|denied| Denied::new(format!("{host} resolves to a blocked address: {}", denied.reason)))?;
        }
        Ok(())
    }

    /// Judges one address.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Denied> {
        let allowed = self.allow.iter().any(|rule| match rule {
            AllowRule::Cidr(cidr) => cidr.contains(ip) || cidr.contains(ip.to_canonical()),
            AllowRule::Host(_) => false,
        });
        match ranges::blocked_reason(ip) {
            Some(reason) if !allowed => Err(Denied::new(reason)),
            _ => Ok(()),
        }
    }

    fn check_name(&self, host: &str) -> Result<(), Denied> {
        if self.host_is_allowed(host) {
            return Ok(());
        }
        let name = normalize_host(host);
        let reason = if name == "localhost" || name.ends_with(".localhost") {
            "is a loopback name (localhost)"
        } else if name == "metadata.google.internal" {
            "is the cloud metadata endpoint"
        } else if name == "internal" || name.ends_with(".internal") {
            "is an internal name (*.internal)"
        } else {
            return Ok(());
        };
        Err(Denied::new(format!("{host} {reason}")))
    }

    fn host_is_allowed(&self, host: &str) -> bool {
        let name = normalize_host(host);
        self.allow.iter().any(|rule| matches!(rule, AllowRule::Host(allowed) if *allowed == name))
    }
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host(host) => f.write_str(host),
            Self::Cidr(cidr) => cidr.fmt(f),
        }
    }
}

fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl DataScope {
    /// Rejects `allowed_hosts` entries that are neither host names nor CIDRs (call when a policy is saved).
    pub fn validate(&self) -> Result<(), SsrfParseError> {
        self.allowed_hosts.iter().try_for_each(|entry| entry.parse::<AllowRule>().map(drop))
    }

    /// Whether `url`'s host is on the egress allow-list: a listed host name (exactly), or an IP literal
    /// inside a listed address or CIDR. A name is never matched through what it resolves to, since DNS
    /// is not the operator's word.
    pub fn vouches_for(&self, url: &Url) -> bool {
        let ip = match url.host() {
            None => return false,
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(Host::Domain(name)) => name.parse::<IpAddr>().ok(),
        };
        let name = url.host_str().map(normalize_host).unwrap_or_default();
        self.allowed_hosts.iter().filter_map(|entry| entry.parse::<AllowRule>().ok()).any(|rule| match (rule, ip) {
            (AllowRule::Cidr(cidr), Some(ip)) => cidr.contains(ip) || cidr.contains(ip.to_canonical()),
            (AllowRule::Host(host), None) => host == name,
            _ => false,
        })
    }
}

#[cfg(test)]
mod tests;
