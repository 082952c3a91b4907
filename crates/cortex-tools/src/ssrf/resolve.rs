//! Name resolution for the guarded client, with pinning: the addresses a name resolves to are judged by
//! the policy and are then the only addresses the connection may use, so a DNS answer that changes
//! between check and connect (rebinding) cannot redirect the request.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::SsrfPolicy;

/// Looks up the addresses of a host name. The default is the system resolver; tests substitute a fixed
/// table so that names can point at loopback without real DNS.
#[async_trait::async_trait]
pub trait Resolver: Send + Sync {
    /// All addresses of `host` (a DNS name, never an IP literal).
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>>;
}

/// The operating system's resolver (`getaddrinfo` via tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

#[async_trait::async_trait]
impl Resolver for SystemResolver {
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        Ok(tokio::net::lookup_host((host, 0)).await?.map(|addr| addr.ip()).collect())
    }
}

/// reqwest's resolver hook: resolve once, judge every address, hand back exactly the judged addresses.
pub(crate) struct PinningResolver {
    pub(crate) policy: Arc<SsrfPolicy>,
    pub(crate) resolver: Arc<dyn Resolver>,
}

impl Resolve for PinningResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        let resolver = Arc::clone(&self.resolver);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = resolver
                .lookup(&host)
                .await
                .map_err(|error| std::io::Error::new(error.kind(), format!("could not resolve {host}: {error}")))?;
            policy.check_resolved(&host, &addrs)?;
            let pinned: Addrs = Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(pinned)
        })
    }
}
